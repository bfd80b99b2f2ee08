"""Run a MIDI pipeline over many files: every input gives a result or a listed error, nothing is dropped.

:func:`predict_files` is what ``adv-midibert predict`` runs. Inputs are MIDI files or folders (searched
recursively); each file is predicted on its own, so an unreadable one is listed in ``errors`` and the others go on,
and the notes left out and warnings of a file stay in its record. Token-task outputs (class-track MIDI, piano roll)
go under ``output_dir`` at the input's path relative to the inputs' common folder, each written aside and renamed;
an output never replaces an input, nor a file this tool did not write (each output carries a marker:
:func:`written_by_this_tool`), and this tool's outputs found in an input folder are skipped and listed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .constants import MIDI_SUFFIXES, OUTPUT_MARKER
from .data.builder import list_midi_files
from .output_folders import check_output_file as check_writable  # predict --json; one home for the check
from .pipelines import MidiFeatureExtractionPipeline, MidiTokenClassificationPipeline

__all__ = ["PredictionRun", "check_writable", "collect_midi_files", "output_stems", "output_suffix_of", "predict_files",
           "prediction_pipeline", "write_midi"]


@dataclass
class PredictionRun:
    """The outcome of :func:`predict_files`.

    Attributes:
        results: one JSON-ready record per predicted file, in input order.
        errors: ``{"file", "error"}`` for every input that gave no result (missing paths first, then files that
            failed, in input order).
        skipped: ``{"file", "reason"}`` for the files of input folders left out on purpose (this tool's outputs).
    """

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def num_inputs(self) -> int:
        return len(self.results) + len(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"num_inputs": self.num_inputs, "num_failed": len(self.errors), "results": self.results,
                "errors": self.errors, "skipped": self.skipped}


def collect_midi_files(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand folders into their MIDI files (recursive, sorted); return ``(files, errors)``.

    A path that does not exist, or a folder without MIDI files, is an error entry; a file given by name is kept
    whatever its suffix (reading it will say whether it is MIDI).
    """
    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_midi_files(path)
            if not found:
                errors.append({"file": str(path), "error": f"{path}: folder holds no MIDI file "
                                                           f"({', '.join(MIDI_SUFFIXES)})"})
            files.extend(found)
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            errors.append({"file": str(path), "error": f"{path}: MIDI file not found"})
    return files, errors


def output_stems(files: Sequence[Path]) -> list[Path]:
    """A distinct relative output stem per input: its path under the inputs' common folder, without suffix.

    ``a/song.mid`` and ``b/song.mid`` give ``a/song`` and ``b/song``; the same file given twice gives ``song`` and
    ``song-2``.
    """
    if not files:
        return []
    resolved = [Path(os.path.abspath(f)) for f in files]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    stems, seen = [], set()
    for path in resolved:
        stem = path.relative_to(root).with_suffix("")
        candidate, n = stem, 1
        while candidate.as_posix().lower() in seen:
            n += 1
            candidate = stem.with_name(f"{stem.name}-{n}")
        seen.add(candidate.as_posix().lower())
        stems.append(candidate)
    return stems


def write_midi(score, path: str | os.PathLike) -> Path:
    """Write a ``symusic.Score`` as a MIDI file aside and rename it when complete; return the path. The file carries
    the marker :data:`OUTPUT_MARKER` (a MIDI marker event at time 0): what says it is ours."""
    import symusic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    marked = score.copy()
    marked.markers.append(symusic.TextMeta(0, OUTPUT_MARKER))
    marked.dump_midi(str(tmp))
    tmp.replace(path)
    return path


def written_by_this_tool(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an output of this tool: a MIDI file with :data:`OUTPUT_MARKER` among its markers, or a PNG
    whose ``Software`` text says so (:func:`~adversarial_midibert.visualization.plot_piano_roll`)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as image:
                return image.info.get("Software") == OUTPUT_MARKER
        import symusic

        return any(marker.text == OUTPUT_MARKER for marker in symusic.Score(str(path)).markers)
    except (OSError, RuntimeError, ValueError):  # unreadable: not ours
        return False


def output_suffix_of(pipe) -> str:
    """The name between a token task's output stem and ``.mid``: the model's ``finetuning_task`` (``song.melody.mid``),
    else ``classes``."""
    return getattr(pipe.model.config, "finetuning_task", None) or "classes"


def prediction_pipeline(model: str, revision: str | None = None, device: str | None = None,
                        trust_remote_code: bool = False):
    """The package's pipeline for a fine-tuned model (token or piece classification, from its architecture), and
    whether it labels notes: ``(pipe, is_token)``.

    Raises:
        ValueError: the model's config cannot be read (missing, unknown ``model_type``...), in one line naming it.
    """
    from transformers import AutoConfig

    from .pipelines import MIDI_CLASSIFICATION, MIDI_TOKEN_CLASSIFICATION, midi_pipeline

    try:
        config = AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ValueError(f"model {model}: cannot be loaded ({first})") from None
    is_token = any(a.endswith("TokenClassification") for a in (config.architectures or []))
    task = MIDI_TOKEN_CLASSIFICATION if is_token else MIDI_CLASSIFICATION
    return midi_pipeline(task, model, revision=revision, device=device, trust_remote_code=trust_remote_code), is_token


def predict_files(
    pipe,
    inputs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike | None = None,
    plot: bool = True,
    top_k: int | None = None,
    segment_batch_size: int = 8,
    output_suffix: str | None = None,
    progress: bool = True,
) -> PredictionRun:
    """Predict every MIDI file of ``inputs`` with a MIDI pipeline; never stop on one file.

    Args:
        pipe: a :class:`~adversarial_midibert.pipelines.MidiClassificationPipeline`,
            :class:`~adversarial_midibert.pipelines.MidiTokenClassificationPipeline` or
            :class:`~adversarial_midibert.pipelines.MidiFeatureExtractionPipeline` (each record then holds the
            piece's ``embedding``, a float32 numpy array).
        inputs: MIDI files and folders.
        output_dir: token tasks: where the class-track MIDI (``<stem>.<suffix>.mid``) and the piano roll
            (``<stem>.pianoroll.png``) go; required for token tasks.
        plot: token tasks: also draw the piano roll.
        top_k: sequence tasks: how many classes each record lists (None or -1: all).
        segment_batch_size: segments per forward pass.
        output_suffix: token tasks: the name between the stem and ``.mid`` (default: the model's
            ``finetuning_task``, e.g. ``melody``, else ``classes``).
        progress: show a progress bar.

    Returns:
        a :class:`PredictionRun` with a record per predicted file and an error per failed input.
    """
    from tqdm.auto import tqdm

    from .visualization import plot_piano_roll

    token_task = isinstance(pipe, MidiTokenClassificationPipeline)
    feature_task = isinstance(pipe, MidiFeatureExtractionPipeline)
    if token_task and output_dir is None:
        raise ValueError("a token-classification model writes MIDI files: give an output_dir")
    suffix = output_suffix or output_suffix_of(pipe)
    files, errors = collect_midi_files(inputs)
    run = PredictionRun(errors=errors)
    if token_task:  # this tool's outputs in an input folder (a re-run into it) are not inputs
        named = {Path(os.path.abspath(item)) for item in inputs if not Path(item).is_dir()}
        own = {f for f in files if f.name.lower().endswith(f".{suffix}.mid") and Path(os.path.abspath(f)) not in named
               and written_by_this_tool(f)}
        run.skipped = [{"file": str(f), "reason": f"an output of this tool (*.{suffix}.mid), not predicted"}
                       for f in files if f in own]
        files = [f for f in files if f not in own]
    protected = {os.path.realpath(f) for f in files}  # never written over
    task_keys = ("embedding",) if feature_task else ("counts",) if token_task else ("label", "score", "scores")
    call_kwargs: dict[str, Any] = {"segment_batch_size": segment_batch_size}
    if not token_task and not feature_task and top_k is not None:
        call_kwargs["top_k"] = top_k
    bar = tqdm(files, desc="embedding" if feature_task else "predicting", unit="file", disable=not progress)
    for file, stem in zip(bar, output_stems(files)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                output = pipe(str(file), **call_kwargs)
                record = {k: output[k] for k in ("file", "num_segments", "num_notes", "notes_left_out", *task_keys)}
                if token_task:
                    base = Path(output_dir) / stem
                    midi = base.with_name(f"{base.name}.{suffix}.mid")
                    png = base.with_name(f"{base.name}.pianoroll.png")
                    for path in (midi, png) if plot else (midi,):
                        if os.path.realpath(path) in protected:
                            raise ValueError(f"{file}: its output {path} is an input of this run; refusing to "
                                             "overwrite it (choose another --output_dir)")
                        if path.exists() and not written_by_this_tool(path):
                            raise ValueError(f"{file}: its output {path} exists and was not written by this tool; "
                                             "refusing to overwrite it (choose another --output_dir)")
                    record["midi"] = str(write_midi(output["midi"], midi))
                    if plot:
                        record["piano_roll"] = str(plot_piano_roll(output["midi"], png, title=str(file)))
            except Exception as err:  # any failure of one file is listed, the run goes on
                message = str(err) if str(file) in str(err) else f"{file}: {err}"
                kind = "" if isinstance(err, (ValueError, OSError)) else f" ({type(err).__name__})"
                run.errors.append({"file": str(file), "error": message + kind})
                continue
        record["warnings"] = list(dict.fromkeys(str(w.message) for w in caught))
        run.results.append(record)
    return run
