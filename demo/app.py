"""A browser demo of Adversarial-MidiBERT: upload a MIDI file, see its class and its melody.

Run it on your machine (``pip install ".[demo]"`` first)::

    python demo/app.py --model outputs/composer --model outputs/melody     # folders or Hub ids, in any order

and open the address it prints. Each ``--model`` goes to the box its head serves, read from its ``config.json``: a
sequence-classification model (composer, emotion...) classifies the piece, a token-classification model (melody
extraction) labels every note. As a Hugging Face Space (this file is the Space's ``app.py``), the models come from the
``ADV_MIDIBERT_DEMO_MODELS`` variable (Hub ids separated by spaces). See docs/demo.md.

The page's work is done by plain functions, tested without a browser (tests/test_demo.py): :func:`predict` runs the
package's own pipelines (:func:`adversarial_midibert.pipelines.midi_pipeline`); the melody MIDI is the token pipeline's
``midi`` (one track per predicted class), written by :func:`adversarial_midibert.prediction.write_midi` as
``adv-midibert predict`` writes it, and :func:`adversarial_midibert.visualization.plot_piano_roll` draws the piano
roll from the same score. Every problem
with the file or a model (not MIDI, empty, too large or too many notes, a folder that does not load, a model of the
wrong kind, a model the page was not started with) is a
:class:`DemoError` whose one-line message names the file or the model; the page shows it, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adversarial_midibert  # noqa: F401  (registers the models, the tokenizer and the pipelines)
from adversarial_midibert.constants import MIDI_SUFFIXES
from adversarial_midibert.pipelines import (
    MIDI_CLASSIFICATION,
    MIDI_TOKEN_CLASSIFICATION,
    midi_pipeline,
    pipeline_task_of,
)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported (in build_demo and main)

MODELS_ENV = "ADV_MIDIBERT_DEMO_MODELS"
# A MIDI file of a whole piano piece is tens of kilobytes; 4 MiB is a long orchestral score, and it keeps a shared CPU
# (a free Space) answering.
MAX_MIDI_BYTES = 4 * 2**20
# Notes read per file: a long orchestral score has tens of thousands; a file under MAX_MIDI_BYTES can hold 700,000.
MAX_NOTES = 100_000
# Click folders kept in the workspace (Gradio copies a click's files to its cache when the click returns).
KEEP_CLICKS = 8
# What each box of the page takes, by pipeline task: (the box's name, what a model of that kind does).
ROLES = {
    MIDI_CLASSIFICATION: ("Piece classifier", "classifies the whole piece (composer, emotion...)"),
    MIDI_TOKEN_CLASSIFICATION: ("Melody model", "labels every note (melody, bridge, accompaniment)"),
}


class DemoError(ValueError):
    """A problem the page shows as it is: one line naming the file or the model and what is wrong."""


@dataclass
class DemoResult:
    """What the page shows for one file.

    Attributes:
        labels: class -> probability, every class of the piece classifier (empty without one).
        piano_roll: PNG of the notes coloured by predicted class (None without a melody model).
        melody_midi: the MIDI file to download: the notes of the input, one track per predicted class.
        summary: a few lines of Markdown: the file, its notes, the prediction, notes the models could not read.
    """

    labels: dict[str, float]
    piano_roll: Path | None
    melody_midi: Path | None
    summary: str


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def model_task(name: str) -> str:
    """The pipeline task of a model folder or Hub id, from the architecture its ``config.json`` names."""
    from transformers import AutoConfig

    source = os.path.expanduser(name)
    looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    if looks_local and not Path(source).exists():
        raise DemoError(f"model {name}: folder not found")
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as error:  # whatever failed, the page says which model and why
        raise DemoError(f"model {name}: cannot be loaded ({_one_line(error)})") from None
    architectures = getattr(config, "architectures", None) or []
    return pipeline_task_of(architectures[0]) if architectures else "a model without a classification head"


@functools.lru_cache(maxsize=4)
def load_pipeline(name: str, task: str, device: str = "cpu"):
    """The package's MIDI pipeline for a model that must serve ``task``; loaded once per (model, task, device)."""
    found = model_task(name)
    if found != task:
        role = ROLES.get(found)
        hint = f"it {role[1]}: put it in the {role[0]} box" if role else "fine-tune it on a task first"
        raise DemoError(f"model {name} cannot be the {ROLES[task][0].lower()}: {hint}")
    try:
        return midi_pipeline(task, model=os.path.expanduser(name), device=device)
    except Exception as error:
        raise DemoError(f"model {name}: cannot be loaded ({_one_line(error)})") from None


def check_midi_file(path: str | os.PathLike | None) -> Path:
    """The uploaded file, if it is worth reading: given, not larger than :data:`MAX_MIDI_BYTES`, and, when it reads
    as MIDI, of at most :data:`MAX_NOTES` notes. Whether it is there, empty or MIDI at all is for the package's reader
    to say (its message names the file)."""
    import symusic

    if path is None or not str(path).strip():
        raise DemoError("no MIDI file: upload one first")
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size > MAX_MIDI_BYTES:
        raise DemoError(f"{path.name}: {size / 2**20:.1f} MiB is too large for this demo "
                        f"(at most {MAX_MIDI_BYTES / 2**20:.0f} MiB)")
    try:
        notes = sum(track.note_num() for track in symusic.Score(str(path)).tracks)
    except (RuntimeError, ValueError, OSError):  # not readable: the pipeline's reader says why, naming the file
        return path
    if notes > MAX_NOTES:
        raise DemoError(f"{path.name}: {notes} notes, more than this demo reads ({MAX_NOTES})")
    return path


def check_served(names: list[str], served: dict[str, str] | None) -> None:
    """Refuse a model the page was not started with (``served``: the boxes' models; None: any, for scripts). The
    message is the same whether or not such a folder exists on the server."""
    if served is None:
        return
    allowed = {name.strip() for name in served.values()}
    for name in names:
        if name and name not in allowed:
            raise DemoError(f"model {name} is not one this demo serves (it serves: {', '.join(sorted(allowed))})")


def _call(pipe, path: Path) -> dict[str, Any]:
    """One file through a pipeline; any failure as a DemoError naming the file (not its upload path)."""
    try:
        return pipe(str(path))
    except Exception as error:  # whatever failed, the page says it in one line
        message = _one_line(error).replace(str(path), path.name)
        kind = "" if isinstance(error, (ValueError, OSError)) else f" ({type(error).__name__})"
        raise DemoError((message if path.name in message else f"{path.name}: {message}") + kind) from None


def predict(midi_path: str | os.PathLike | None, classifier: str | None = None, melody: str | None = None,
            output_dir: str | os.PathLike | None = None, device: str = "cpu",
            served: dict[str, str] | None = None) -> DemoResult:
    """Run the demo's models on one MIDI file: what the page shows.

    Args:
        midi_path: the uploaded file.
        classifier: a sequence-classification model (folder or Hub id), or None / "".
        melody: a token-classification model (folder or Hub id), or None / "".
        output_dir: where the melody MIDI and the piano roll go (default: a new temporary folder, made only when
            they are written).
        device: where the models run.
        served: the only models accepted (the page's, ``{"classifier": ..., "melody": ...}``); None: any.

    Raises:
        DemoError: the file or a model cannot be used; the message names it and says why.
    """
    from adversarial_midibert.prediction import output_suffix_of, write_midi
    from adversarial_midibert.visualization import plot_piano_roll

    classifier, melody = (classifier or "").strip(), (melody or "").strip()
    check_served([classifier, melody], served)
    path = check_midi_file(midi_path)
    if not classifier and not melody:
        raise DemoError("no model: give a piece classifier, a melody model, or both")
    pipes = {task: load_pipeline(name, task, device)
             for task, name in ((MIDI_CLASSIFICATION, classifier), (MIDI_TOKEN_CLASSIFICATION, melody)) if name}
    labels, piano_roll, melody_midi, lines = {}, None, None, []
    if MIDI_CLASSIFICATION in pipes:
        out = _call(pipes[MIDI_CLASSIFICATION], path)
        labels = {item["label"]: item["score"] for item in out["scores"]}
        lines += [_file_line(path, out), f"Piece classifier `{classifier}`: **{out['label']}** ({out['score']:.0%})."]
        lines += _left_out(out)
    if MIDI_TOKEN_CLASSIFICATION in pipes:
        pipe = pipes[MIDI_TOKEN_CLASSIFICATION]
        out = _call(pipe, path)
        output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="adv-midibert-demo-"))
        melody_midi = write_midi(out["midi"], output_dir / f"{path.stem}.{output_suffix_of(pipe)}.mid")
        piano_roll = plot_piano_roll(out["midi"], output_dir / f"{path.stem}.pianoroll.png",
                                     title=f"{path.name}: notes coloured by predicted class")
        counts = ", ".join(f"{count} {name}" for name, count in out["counts"].items())
        lines += [_file_line(path, out), f"Melody model `{melody}`: {counts} notes."] + _left_out(out)
    return DemoResult(labels, piano_roll, melody_midi, "\n\n".join(dict.fromkeys(lines)))


def _file_line(path: Path, out: dict[str, Any]) -> str:
    return f"**{path.name}**: {out['num_notes']} notes, {out['num_segments']} segment(s)."


def _left_out(out: dict[str, Any]) -> list[str]:
    dropped = out["notes_left_out"]
    if not dropped:
        return []
    reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in dropped.items())
    return [f"Notes the model cannot read, left out: {reasons}."]


def route_models(names: list[str]) -> dict[str, str]:
    """Give each model the box its head serves: ``{"classifier": ..., "melody": ...}`` (missing keys: none given);
    each is loaded (once: :func:`load_pipeline` keeps it), so that a bad model stops the start, not the first click.

    Raises:
        DemoError: a model does not load, has no classification head, or two models serve the same box.
    """
    boxes = {MIDI_CLASSIFICATION: "classifier", MIDI_TOKEN_CLASSIFICATION: "melody"}
    routed: dict[str, str] = {}
    for name in (n.strip() for n in names):
        task = model_task(name)
        if task not in boxes:
            raise DemoError(f"model {name} has no classification head ({task}): give a fine-tuned model")
        if boxes[task] in routed:
            raise DemoError(f"models {routed[boxes[task]]} and {name} both {ROLES[task][1]}; the demo shows one of "
                            "each")
        load_pipeline(name, task)
        routed[boxes[task]] = name
    return routed


def click_folder(workspace: str | os.PathLike) -> Path:
    """A new folder for one click's files in ``workspace``; the oldest ones beyond :data:`KEEP_CLICKS` are removed
    (their files were copied to Gradio's cache when their click returned)."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="click-", dir=workspace))
    earlier = sorted((p for p in workspace.iterdir() if p.is_dir() and p != folder), key=lambda p: p.stat().st_mtime)
    for old in earlier[: max(0, len(earlier) - (KEEP_CLICKS - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def run_page(midi_file, classifier, melody, served: dict[str, str] | None = None,
             workspace: str | os.PathLike | None = None):
    """The Predict button: :func:`predict` of the models the page ``served`` (None: any), writing into a
    :func:`click_folder` of ``workspace`` (removed when the click fails), with its errors shown on the page
    (``gr.Error``), never a traceback."""
    import gradio as gr

    folder = click_folder(workspace if workspace is not None else Path(tempfile.gettempdir()) / "adv-midibert-demo")
    try:
        result = predict(midi_file, classifier, melody, output_dir=folder, served=served)
    except DemoError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise gr.Error(str(error), duration=None, print_exception=False) from None
    except Exception as error:  # an unforeseen failure still gets one readable line
        shutil.rmtree(folder, ignore_errors=True)
        raise gr.Error(f"{Path(str(midi_file)).name}: {_one_line(error)} ({type(error).__name__})", duration=None,
                       print_exception=False) from None
    return (result.labels or None, str(result.piano_roll) if result.piano_roll else None,
            str(result.melody_midi) if result.melody_midi else None, result.summary)


def build_demo(classifier: str = "", melody: str = ""):
    """The page (a ``gradio.Blocks``): the upload and the two model boxes on the left, the results on the right.

    The boxes show the models the server was started with and cannot be edited; the Predict button runs only those
    (a visitor never makes the server load a path or a Hub id). Each click writes into a folder of one workspace per
    page (:func:`click_folder`); Gradio's own copies are deleted after an hour (``delete_cache``)."""
    import gradio as gr

    served = {"classifier": classifier, "melody": melody}
    workspace = Path(tempfile.mkdtemp(prefix="adv-midibert-demo-"))
    with gr.Blocks(title="Adversarial-MidiBERT demo", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# Adversarial-MidiBERT\nUpload a MIDI file: the piece classifier names its class (composer, "
                    "emotion...), the melody model finds the melody among its notes.")
        with gr.Row():
            with gr.Column():
                midi_file = gr.File(label="MIDI file", file_types=list(MIDI_SUFFIXES), elem_id="midi-file")
                classifier_box = gr.Textbox(value=classifier, label=ROLES[MIDI_CLASSIFICATION][0],
                                            info=f"a model that {ROLES[MIDI_CLASSIFICATION][1]}", elem_id="classifier",
                                            interactive=False)
                melody_box = gr.Textbox(value=melody, label=ROLES[MIDI_TOKEN_CLASSIFICATION][0],
                                        info=f"a model that {ROLES[MIDI_TOKEN_CLASSIFICATION][1]}", elem_id="melody",
                                        interactive=False)
                button = gr.Button("Predict", variant="primary", elem_id="predict")
            with gr.Column():
                classes = gr.Label(label="Predicted class", num_top_classes=5, elem_id="classes")
                summary = gr.Markdown(elem_id="summary")
        piano_roll = gr.Image(label="Piano roll: the notes coloured by predicted class (melody in red)",
                              type="filepath", format="png", elem_id="piano-roll")
        download = gr.File(label="Melody MIDI (the notes of the file, one track per predicted class)",
                           elem_id="melody-midi")
        button.click(functools.partial(run_page, served=served, workspace=workspace),
                     [midi_file, classifier_box, melody_box], [classes, piano_roll, download, summary])
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python demo/app.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=None, metavar="FOLDER_OR_HUB_ID",
                        help="a fine-tuned model, given up to twice (a piece classifier and a melody model, in any "
                        f"order; default: ${MODELS_ENV}, separated by spaces)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    names = args.model if args.model is not None else os.environ.get(MODELS_ENV, "").split()
    try:
        routed = route_models(names)
    except DemoError as error:
        parser.error(str(error))
    build_demo(**routed).launch(server_name=args.host, server_port=args.port, max_file_size=MAX_MIDI_BYTES * 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
