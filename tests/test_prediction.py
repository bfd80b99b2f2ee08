"""Prediction over many files never drops work: every input gives a result or a listed error with its reason, output
names stay unique, warnings name their file, ``--top_k -1`` keeps every class, ``--no_plot`` draws nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import symusic

from adversarial_midibert.prediction import collect_midi_files, output_stems

from tiny_models import tiny_finetuned_folder

COMPOSERS = ["Bethel", "Clayderman", "Einaudi", "Hancock", "Hillsong", "Hisaishi", "Ryuichi", "Yiruma"]


@pytest.fixture(scope="module")
def predict():
    from adversarial_midibert import predict

    return predict


def _clips(data_root, count):
    files = sorted((data_root / "EMOPIA" / "midis").glob("*.mid"))[:count]
    if len(files) < count:
        pytest.skip(f"EMOPIA clips not found under {data_root}")
    return files


def test_output_stems_keep_relative_paths_and_stay_unique(tmp_path):
    files = [tmp_path / "a" / "song.mid", tmp_path / "b" / "song.mid", tmp_path / "a" / "song.mid",
             tmp_path / "a" / "deep" / "x.midi"]
    assert [p.as_posix() for p in output_stems(files)] == ["a/song", "b/song", "a/song-2", "a/deep/x"]
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "deep" / "x.midi").write_bytes(b"MThd")
    (tmp_path / "empty").mkdir()
    found, errors = collect_midi_files([tmp_path / "a", tmp_path / "empty", tmp_path / "gone.mid"])
    assert found == [tmp_path / "a" / "deep" / "x.midi"]
    assert [e["file"] for e in errors] == [str(tmp_path / "empty"), str(tmp_path / "gone.mid")]
    assert "no MIDI file" in errors[0]["error"] and "not found" in errors[1]["error"]


def test_token_model_lists_every_failure_and_never_overwrites(predict, data_root, tmp_path, monkeypatch, capsys):
    model = tiny_finetuned_folder(tmp_path / "model", True, ["melody", "bridge", "accompaniment"],
                                  finetuning_task="melody")
    first, second = _clips(data_root, 2)
    inputs = tmp_path / "inputs"
    for folder, clip in (("a", first), ("b", second)):  # two files named song.mid
        (inputs / folder).mkdir(parents=True)
        shutil.copyfile(clip, inputs / folder / "song.mid")
    (inputs / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06 this is not a MIDI file")
    shutil.copyfile(first, inputs / "locked.mid")
    real_read_bytes = Path.read_bytes

    def read_bytes(self):  # permission denied (the tests may run as root, where chmod does not stop reading)
        if self.name == "locked.mid":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    real_open = open
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: read_bytes(Path(f)) if Path(str(f)).name == "locked.mid"
                        else real_open(f, *a, **k))
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = predict.main([str(model), str(inputs / "a" / "song.mid"), str(inputs / "corrupt.mid"),
                         str(inputs / "locked.mid"), str(inputs / "b" / "song.mid"), str(tmp_path / "missing.mid"),
                         "--output_dir", str(out), "--json", str(report), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a/song.melody.mid", "a/song.pianoroll.png", "b/song.melody.mid", "b/song.pianoroll.png"]
    for folder, clip in (("a", first), ("b", second)):
        assert symusic.Score(str(out / folder / "song.melody.mid")).note_num() == symusic.Score(str(clip)).note_num()
    data = json.loads(report.read_text())
    assert data["num_inputs"] == 5 and data["num_failed"] == 3
    assert [r["file"] for r in data["results"]] == [str(inputs / "a" / "song.mid"), str(inputs / "b" / "song.mid")]
    errors = {Path(e["file"]).name: e["error"] for e in data["errors"]}
    assert set(errors) == {"corrupt.mid", "locked.mid", "missing.mid"}
    assert "Permission denied" in errors["locked.mid"] and "not found" in errors["missing.mid"]
    assert all(name in message for name, message in errors.items())
    assert "3 of 5 inputs failed" in captured.err

    code = predict.main([str(model), str(inputs / "a"), "--output_dir", str(tmp_path / "quiet"), "--no_plot",
                         "--device", "cpu"])
    assert code == 0 and [p.name for p in (tmp_path / "quiet").rglob("*") if p.is_file()] == ["song.melody.mid"]


def test_sequence_model_top_k_and_warnings_naming_the_file(predict, data_root, tmp_path, capsys):
    model = tiny_finetuned_folder(tmp_path / "model", False, COMPOSERS)
    clip = _clips(data_root, 1)[0]
    score = symusic.Score(str(clip))
    score.tracks[0].notes.append(symusic.Note(0, 240, 5, 80))  # below the pitch range: left out and reported
    for folder in ("x", "y"):  # identical files: both warnings are shown
        (tmp_path / folder).mkdir()
        score.dump_midi(str(tmp_path / folder / "low.mid"))
    code = predict.main([str(model), str(tmp_path / "x" / "low.mid"), str(tmp_path / "y" / "low.mid"),
                         "--top_k", "-1", "--device", "cpu", "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code == 0
    lines = [line for line in captured.out.splitlines() if "low.mid:" in line]
    assert len(lines) == 2 and all(line.count(" 0.") == 8 for line in lines)  # every class, none dropped
    for folder in ("x", "y"):
        assert f"warning: {tmp_path / folder / 'low.mid'}: 1 of {score.note_num()} notes left out" in captured.err
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [r["notes_left_out"] for r in results] == [{"pitch_out_of_range": 1}] * 2
    assert predict.main([str(model), str(clip), "--top_k", "2", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count(" 0.") == 2
    with pytest.raises(SystemExit):
        predict.parse_args([str(model), str(clip), "--top_k", "0"])


def test_outputs_never_replace_inputs_and_are_not_predicted_again(predict, tmp_path, capsys):
    """Issue 19 item 6: ``--output_dir`` equal to the input folder replaced the input ``y.classes.mid`` with the
    output for ``y.mid``, and a re-run predicted on the earlier outputs."""
    from test_builder import write_midi

    model = tiny_finetuned_folder(tmp_path / "model", True, ["melody", "accompaniment"])  # suffix "classes"
    folder = tmp_path / "songs"
    write_midi(folder / "y.mid", n_notes=30)
    write_midi(folder / "y.classes.mid", n_notes=12, base=40)
    mine = (folder / "y.classes.mid").read_bytes()
    # both named as inputs: the output of y.mid would replace the input y.classes.mid -> an error, not a write
    code = predict.main([str(model), str(folder / "y.mid"), str(folder / "y.classes.mid"), "--output_dir",
                         str(folder), "--no_plot", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1 and (folder / "y.classes.mid").read_bytes() == mine
    assert f"its output {folder / 'y.classes.mid'} is an input of this run" in captured.err
    assert (folder / "y.classes.classes.mid").is_file()  # the other input was predicted
    (folder / "y.classes.classes.mid").unlink()
    # the folder as input, twice. Issue 26 item 11: the user's own y.classes.mid was skipped as "an output of this
    # tool" and then replaced by y.mid's prediction. Only files this tool wrote (a marker inside) are skipped or
    # replaced: y.classes.mid is predicted, y.mid's output would replace it (an error), y.classes.classes.mid (ours)
    # is skipped on the second run and rewritten in place.
    for run in range(2):
        report = tmp_path / "run.json"
        assert predict.main([str(model), str(folder), "--output_dir", str(folder), "--no_plot", "--device", "cpu",
                             "--json", str(report)]) == 1
        data = json.loads(report.read_text())
        assert [r["file"] for r in data["results"]] == [str(folder / "y.classes.mid")]
        assert [e["file"] for e in data["errors"]] == [str(folder / "y.mid")]
        assert "is an input of this run" in data["errors"][0]["error"]
        assert [s["file"] for s in data["skipped"]] == ([str(folder / "y.classes.classes.mid")] if run else [])
        assert (folder / "y.classes.mid").read_bytes() == mine
    assert sorted(p.name for p in folder.iterdir()) == ["y.classes.classes.mid", "y.classes.mid", "y.mid"]
    assert "skipped: " in capsys.readouterr().err
    # an output folder holding a user's file of an output's name: refused; this tool's own files are rewritten
    for name, content in (("y.classes.mid", mine), ("y.pianoroll.png", b"my picture")):
        out = tmp_path / f"out-{name}"
        out.mkdir()
        (out / name).write_bytes(content)
        assert predict.main([str(model), str(folder / "y.mid"), "--output_dir", str(out), "--device", "cpu"]) == 1
        assert f"its output {out / name} exists and was not written by this tool" in capsys.readouterr().err
        assert (out / name).read_bytes() == content
    for _ in range(2):
        assert predict.main([str(model), str(folder / "y.mid"), "--output_dir", str(tmp_path / "fresh"),
                             "--device", "cpu"]) == 0


def test_an_unwritable_json_path_fails_before_the_run(predict, tmp_path, capsys):
    """Issue 19 item 10: ``--json`` to an unwritable path failed only after the whole run, losing its results."""
    from test_builder import write_midi

    write_midi(tmp_path / "x.mid", n_notes=10)
    (tmp_path / "file").write_text("not a folder")
    for bad in (tmp_path / "file" / "out.json", tmp_path):
        code = predict.main([str(tmp_path / "no_model"), str(tmp_path / "x.mid"), "--json", str(bad),
                             "--output_dir", str(tmp_path / "out")])
        error = capsys.readouterr().err.strip()
        assert code == 2 and f"--json {bad}" in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_a_model_of_an_unknown_type_is_one_line(predict, tmp_path, capsys):
    """Issue 26 item 13: a config.json of an unknown model_type gave a traceback."""
    from test_builder import write_midi

    write_midi(tmp_path / "x.mid", n_notes=10)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "no_such_model"}))
    code = predict.main([str(tmp_path / "model"), str(tmp_path / "x.mid"), "--output_dir", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and str(tmp_path / "model") in error and "no_such_model" in error and "\n" not in error, error
