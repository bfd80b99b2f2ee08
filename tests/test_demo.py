"""The browser demo's functions (demo/app.py) without a browser: on a real MIDI file they show the models' own
prediction (class probabilities, the class-track MIDI to download, its piano roll); a bad file or model is a one-line
message naming it; the Space's requirements keep up with the package. tests/test_demo_browser.py drives the page."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import numpy as np
import pytest
import symusic

from adversarial_midibert.pipelines import midi_pipeline
from adversarial_midibert.visualization import plot_piano_roll

from tiny_models import tiny_finetuned_folder, tiny_pretrained_folder

COMPOSERS = ["Bethel", "Clayderman", "Einaudi", "Hancock", "Hillsong", "Hisaishi", "Ryuichi", "Yiruma"]
MELODY_CLASSES = ["melody", "bridge", "accompaniment"]


@pytest.fixture(scope="module")
def app(load_script):
    return load_script("demo/app.py", "demo_app")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-models")
    return {"classifier": str(tiny_finetuned_folder(root / "composer", False, COMPOSERS)),
            "melody": str(tiny_finetuned_folder(root / "melody", True, MELODY_CLASSES, finetuning_task="melody"))}


@pytest.fixture(scope="module")
def clip(data_root):
    files = sorted((data_root / "EMOPIA" / "midis").glob("*.mid"))
    if not files:
        pytest.skip(f"EMOPIA clips not found under {data_root}")
    return files[0]


def test_predict_shows_the_models_own_prediction(app, models, clip, tmp_path):
    result = app.predict(clip, models["classifier"], models["melody"], output_dir=tmp_path)
    # The classes: every class of the classifier, with the probabilities its pipeline gives for the piece.
    composer = midi_pipeline("midi-classification", model=models["classifier"], device="cpu")(str(clip))
    assert list(result.labels) == [s["label"] for s in composer["scores"]] and set(result.labels) == set(COMPOSERS)
    assert list(result.labels.values()) == pytest.approx([s["score"] for s in composer["scores"]], abs=1e-6)
    assert f"**{composer['label']}** ({composer['score']:.0%})" in result.summary
    # The download: every note of the file, on the track of the class the melody model gave it.
    melody = midi_pipeline("midi-token-classification", model=models["melody"], device="cpu")(str(clip))
    assert result.melody_midi == tmp_path / f"{clip.stem}.melody.mid"
    written = symusic.Score(str(result.melody_midi))
    assert written.note_num() == symusic.Score(str(clip)).note_num() == melody["num_notes"]
    expected = {t.name: t.notes.numpy() for t in melody["midi"].tracks if t.note_num()}
    assert sorted(t.name for t in written.tracks) == sorted(expected)
    for track in written.tracks:
        for key in ("time", "duration", "pitch"):
            np.testing.assert_array_equal(track.notes.numpy()[key], expected[track.name][key])
    counts = ", ".join(f"{n} {name}" for name, n in melody["counts"].items())
    assert f"{counts} notes" in result.summary and f"**{clip.name}**: {melody['num_notes']} notes" in result.summary
    # The piano roll: the class tracks, coloured as `adv-midibert predict` colours them (melody first, in red).
    from matplotlib.image import imread

    reference = plot_piano_roll(melody["midi"], tmp_path / "reference.png",
                                title=f"{clip.name}: notes coloured by predicted class")
    assert result.piano_roll == tmp_path / f"{clip.stem}.pianoroll.png"
    np.testing.assert_array_equal(imread(result.piano_roll), imread(reference))


def test_each_model_alone(app, models, clip, tmp_path):
    alone = app.predict(clip, classifier=models["classifier"], output_dir=tmp_path / "classifier")
    assert set(alone.labels) == set(COMPOSERS) and alone.piano_roll is None and alone.melody_midi is None
    alone = app.predict(clip, melody=models["melody"], output_dir=tmp_path / "melody")
    assert alone.labels == {} and alone.piano_roll.is_file() and alone.melody_midi.is_file()
    assert f"**{clip.name}**" in alone.summary and "Piece classifier" not in alone.summary


def test_a_bad_file_is_one_line_naming_it(app, models, tmp_path):
    upload = tmp_path / "gradio" / "1f3a9c"  # where the page's uploads land: the message names the file, not this
    upload.mkdir(parents=True)
    (upload / "notes.mid").write_text("these are my notes, not a MIDI file\n")
    (upload / "empty.mid").write_bytes(b"")
    symusic.Score(480).dump_midi(str(upload / "silent.mid"))
    with open(upload / "huge.mid", "wb") as huge:  # sparse: no disk used
        huge.truncate(app.MAX_MIDI_BYTES + 1)
    cases = {"notes.mid": "notes.mid: not a MIDI file", "empty.mid": "empty.mid: empty file",
             "silent.mid": "silent.mid: the file holds no notes", "gone.mid": "gone.mid: MIDI file not found",
             "huge.mid": f"huge.mid: 4.0 MiB is too large for this demo (at most {app.MAX_MIDI_BYTES // 2**20} MiB)"}
    for name, expected in cases.items():
        with pytest.raises(app.DemoError) as caught:
            app.predict(upload / name, models["classifier"], models["melody"], output_dir=tmp_path / "out")
        message = str(caught.value)
        assert message.startswith(expected), message
        assert "\n" not in message and str(upload) not in message
    with pytest.raises(app.DemoError, match="no MIDI file: upload one first"):
        app.predict(None, models["classifier"])


def test_a_model_that_cannot_serve_is_named_with_the_reason(app, models, clip, tmp_path):
    (tmp_path / "not-a-model").mkdir()
    pretrained = str(tiny_pretrained_folder(tmp_path / "pretrained"))
    cases = [
        ({"classifier": str(tmp_path / "nowhere")}, f"model {tmp_path / 'nowhere'}: folder not found"),
        ({"classifier": str(tmp_path / "not-a-model")}, f"model {tmp_path / 'not-a-model'}: cannot be loaded ("),
        ({"melody": pretrained}, f"model {pretrained} cannot be the melody model: fine-tune it on a task first"),
        ({"classifier": models["melody"]}, f"model {models['melody']} cannot be the piece classifier: it labels "
         "every note (melody, bridge, accompaniment): put it in the Melody model box"),
        ({"melody": models["classifier"]}, "put it in the Piece classifier box"),
        ({"classifier": " ", "melody": ""}, "no model: give a piece classifier, a melody model, or both"),
    ]
    for boxes, expected in cases:
        with pytest.raises(app.DemoError) as caught:
            app.predict(clip, output_dir=tmp_path / "out", **boxes)
        assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_models_go_to_the_box_of_their_head(app, models, tmp_path, capsys, monkeypatch):
    assert app.route_models([models["melody"], models["classifier"]]) == models
    monkeypatch.setenv("HOME", str(Path(models["melody"]).parent))  # a folder under the home directory
    assert app.route_models([" ~/melody "]) == {"melody": "~/melody"}
    assert app.route_models([]) == {}
    with pytest.raises(app.DemoError, match="both classifies the whole piece"):
        app.route_models([models["classifier"], models["classifier"]])
    with pytest.raises(SystemExit) as stopped:  # the command line says it before starting a server
        app.main(["--model", str(tmp_path / "nowhere")])
    assert stopped.value.code == 2 and f"model {tmp_path / 'nowhere'}: folder not found" in capsys.readouterr().err


def test_the_page_shows_errors_not_tracebacks(app, models, clip, monkeypatch):
    gr = pytest.importorskip("gradio", reason="the page needs the demo extra: pip install '.[demo]'")
    labels, piano_roll, melody_midi, summary = app.run_page(str(clip), models["classifier"], models["melody"])
    assert set(labels) == set(COMPOSERS) and piano_roll.endswith(".pianoroll.png")
    assert melody_midi.endswith(".melody.mid") and summary.startswith(f"**{clip.name}**")
    with pytest.raises(gr.Error) as caught:
        app.run_page(str(clip), models["melody"], "")
    assert caught.value.message.startswith(f"model {models['melody']} cannot be the piece classifier")

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory\n  a traceback line")

    monkeypatch.setattr(app, "predict", crash)
    with pytest.raises(gr.Error) as caught:
        app.run_page(str(clip), models["classifier"], "")
    assert caught.value.message == f"{clip.name}: out of memory (RuntimeError)"
    page = app.build_demo(**models)
    ids = {getattr(block, "elem_id", None) for block in page.blocks.values()}
    assert {"midi-file", "classifier", "melody", "predict", "classes", "piano-roll", "melody-midi"} <= ids


def _names(lines):
    return {re.split(r"[<>=!~\[;\s]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for line in lines if line.strip() and not line.strip().startswith(("#", "-"))}


def test_the_space_requirements_keep_up_with_the_package(repo_root):
    from packaging.requirements import Requirement
    from packaging.version import Version

    setup = configparser.ConfigParser()
    setup.read(repo_root / "setup.cfg")
    core = _names(setup["options"]["install_requires"].splitlines())
    demo = _names(setup["options.extras_require"]["demo"].splitlines())
    text = (repo_root / "demo" / "requirements.txt").read_text()
    assert core | demo - {"gradio"} <= _names(text.splitlines())
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text  # the CPU build of torch
    # The Space runs the gradio its card names; it must be one the demo extra allows.
    card = (repo_root / "demo" / "README.md").read_text()
    version = re.search(r"^sdk_version:\s*(\S+)", card, re.M).group(1)
    gradio = next(Requirement(line) for line in setup["options.extras_require"]["demo"].split() if "gradio" in line)
    assert Version(version) in gradio.specifier and re.search(r"^app_file:\s*app.py$", card, re.M)


# ------------------------------------------------------------------------------------- a demo safe to host
def test_the_page_runs_only_the_models_it_was_started_with(app, models, clip, tmp_path):
    """A visitor cannot make the server load a path or a Hub id of their choice, nor learn which folders exist."""
    gr = pytest.importorskip("gradio", reason="the page needs the demo extra: pip install '.[demo]'")
    secret = tiny_finetuned_folder(tmp_path / "secret", False, COMPOSERS)  # a model on the server, not served
    messages = []
    for name in (str(secret), str(tmp_path / "nowhere"), "some-org/some-model"):
        with pytest.raises(gr.Error) as caught:
            app.run_page(str(clip), name, "", served=models, workspace=tmp_path / "work")
        messages.append(caught.value.message.replace(name, "NAME"))
    assert len(set(messages)) == 1 and "not one this demo serves" in messages[0], messages
    labels, *_ = app.run_page(str(clip), models["classifier"], "", served=models, workspace=tmp_path / "work")
    assert set(labels) == set(COMPOSERS)
    page = app.build_demo(**models)
    boxes = [b for b in page.blocks.values() if getattr(b, "elem_id", None) in ("classifier", "melody")]
    assert len(boxes) == 2 and all(b.interactive is False for b in boxes)  # shown, not typed into


def test_a_file_with_more_notes_than_the_demo_reads_is_refused(app, models, clip, tmp_path, monkeypatch):
    notes = sum(t.note_num() for t in symusic.Score(str(clip)).tracks)
    monkeypatch.setattr(app, "MAX_NOTES", notes - 1)
    with pytest.raises(app.DemoError, match=rf"{clip.name}: {notes} notes, more than this demo reads \({notes - 1}\)"):
        app.predict(clip, models["classifier"], output_dir=tmp_path)
    monkeypatch.setattr(app, "MAX_NOTES", notes)
    assert app.predict(clip, models["classifier"], output_dir=tmp_path).labels


def test_clicks_leave_a_bounded_number_of_folders(app, models, clip, tmp_path, monkeypatch):
    """Every click writes into a folder of the server's workspace; a failed click's folder goes at once, and only
    the latest KEEP_CLICKS are kept (Gradio has copied their files by then)."""
    gr = pytest.importorskip("gradio", reason="the page needs the demo extra: pip install '.[demo]'")
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    monkeypatch.setattr(app, "KEEP_CLICKS", 2)
    silent = tmp_path / "silent.mid"
    score = symusic.Score(480)
    score.tracks.append(symusic.Track(program=0))
    score.dump_midi(str(silent))
    work = tmp_path / "work"
    for _ in range(3):  # fails in the melody model, after its folder was made
        with pytest.raises(gr.Error, match="holds no notes"):
            app.run_page(str(silent), "", models["melody"], served=models, workspace=work)
    assert not list(tmp_path.joinpath("system-tmp").iterdir()) and not any(work.iterdir())
    results = [app.run_page(str(clip), "", models["melody"], served=models, workspace=work) for _ in range(4)]
    assert len(list(work.iterdir())) == 2 and Path(results[-1][2]).is_file()
    assert not list(tmp_path.joinpath("system-tmp").iterdir())
