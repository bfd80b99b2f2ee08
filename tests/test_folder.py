"""``prepare_data.py --midi_dir --labels``: a user's folder of MIDI files + a CSV, split by piece, one bad file listed."""

from __future__ import annotations

import json
import shutil

import pytest
from datasets import ClassLabel, load_from_disk

from adversarial_midibert.data import build_folder_dataset, load_task_dataset, resolve_folder, task_info_from_dataset


@pytest.fixture(scope="module")
def prepare(load_example):
    return load_example("prepare_data")


def _emopia_folder(data_root, folder):
    clips = sorted((data_root / "EMOPIA" / "midis").glob("*.mid"))
    chosen = [c for c in clips if c.name.startswith("Q1")][:3] + [c for c in clips if c.name.startswith("Q3")][:3]
    if len(chosen) < 6:
        pytest.skip(f"EMOPIA clips not found under {data_root}")
    rows = ["file,mood,split"]
    for i, clip in enumerate(chosen):
        sub = folder / ("happy" if clip.name.startswith("Q1") else "sad")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, sub / clip.name)
        rows.append(f"{clip.stem},{'happy' if clip.name.startswith('Q1') else 'sad'},{['train', 'valid', 'test'][i % 3]}")
    (folder / "sad" / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01 truncated")
    rows.append("broken,sad,train")
    rows.append("not_a_file,happy,train")
    (folder.parent / "labels.csv").write_text("\n".join(rows) + "\n")
    return chosen


def test_prepare_own_folder_sequence(prepare, data_root, tmp_path, capsys):
    midi_dir = tmp_path / "midis"
    clips = _emopia_folder(data_root, midi_dir)
    out = tmp_path / "mood"
    prepare.main(["--midi_dir", str(midi_dir), "--labels", str(tmp_path / "labels.csv"), "--label_column", "mood",
                  "--split_column", "split", "--output_dir", str(out), "--max_seq_len", "64", "--task", "mood"])
    report = json.loads((out / "build_report.json").read_text())
    assert [s["piece_id"] for s in report["skipped"]] == ["sad/broken"]
    assert "sad/broken.mid" in report["skipped"][0]["path"] and report["skipped"][0]["reason"]
    assert report["labels_without_file"] == ["not_a_file"]
    assert {split: c["pieces"] for split, c in report["splits"].items()} == {"train": 2, "validation": 2, "test": 2}
    assert "skipped files: 1" in capsys.readouterr().out

    plain = load_from_disk(str(out))  # the datasets library alone: class names and task come with the data
    assert plain["train"].features["labels"] == ClassLabel(names=["happy", "sad"])
    info = task_info_from_dataset(plain)
    assert info["task"] == "mood" and info["task_type"] == "sequence" and info["label_names"] == ["happy", "sad"]
    data, task_info, tokenizer = load_task_dataset(out)
    assert task_info == info and tokenizer.max_seq_len == 64
    pieces = {row["piece_id"]: row["labels"] for split in data.values() for row in split}
    assert pieces == {f"{'happy' if c.name.startswith('Q1') else 'sad'}/{c.stem}":
                      int(not c.name.startswith("Q1")) for c in clips}


def test_prepare_own_folder_token_labels_from_track_names(prepare, data_root, tmp_path):
    songs = sorted((data_root / "POP909").glob("00[1-3]/00[1-3].mid"))
    if len(songs) < 3:
        pytest.skip(f"POP909 not found under {data_root}")
    midi_dir = tmp_path / "songs"
    midi_dir.mkdir()
    for song in songs:
        shutil.copyfile(song, midi_dir / song.name)
    (tmp_path / "tracks.csv").write_text("track,role\nMELODY,lead\nBRIDGE,lead\nPIANO,accompaniment\n")
    (tmp_path / "split.json").write_text(json.dumps({"train": ["001", "002"], "test": ["003.mid"]}))
    out = tmp_path / "roles"
    prepare.main(["--midi_dir", str(midi_dir), "--labels", str(tmp_path / "tracks.csv"), "--task_type", "token",
                  "--label_column", "role", "--label_names", "lead,accompaniment", "--splits",
                  str(tmp_path / "split.json"), "--output_dir", str(out), "--max_seq_len", "64"])
    data, info, _ = load_task_dataset(out)
    assert info["task_type"] == "token" and info["label_names"] == ["lead", "accompaniment"]
    assert data["train"].features["labels"].feature == ClassLabel(names=["lead", "accompaniment"])
    assert sorted(set(data["train"]["piece_id"])) == ["001", "002"] and set(data["test"]["piece_id"]) == {"003"}
    labels = [v for row in data["test"]["labels"] for v in row]
    assert labels.count(0) > 0 and labels.count(1) > 0 and set(labels) <= {-100, 0, 1}


def test_folder_errors_name_the_problem(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mid").write_bytes(b"MThd")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.mid").write_bytes(b"MThd")
    (tmp_path / "labels.csv").write_text("file,label\nx,one\n")
    with pytest.raises(ValueError, match="'x' names several files"):
        resolve_folder(tmp_path, tmp_path / "labels.csv")
    with pytest.raises(ValueError, match="label_column 'genre' is not a column"):
        resolve_folder(tmp_path, tmp_path / "labels.csv", label_column="genre")
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        resolve_folder(tmp_path, tmp_path / "nowhere.csv")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "y.mid").write_bytes(b"MThd")
    (tmp_path / "c.csv").write_text("file,label\ny,a\n")
    with pytest.raises(ValueError, match=r"label_names must be distinct.*\['a'\]"):
        build_folder_dataset(tmp_path / "c", tmp_path / "c.csv", label_names=["a", "a"])


def test_own_folder_lists_what_the_scan_left_out(tmp_path):
    """Issue 11 failure 6 on a user's folder: dangling symlinks and folders named x.mid are listed, not dropped."""
    from symusic import Note, Score, Track

    root = tmp_path / "midi"
    for name in ("a", "b"):
        score = Score(96)
        track = Track("piano", program=0)
        for i in range(8):
            track.notes.append(Note(i * 48, 48, 60 + i, 80))
        score.tracks.append(track)
        (root / name).mkdir(parents=True)
        score.dump_midi(str(root / name / f"{name}.mid"))
    (root / "gone.mid").symlink_to(tmp_path / "missing.mid")
    (root / "odd.mid").mkdir()
    (tmp_path / "labels.csv").write_text("file,label\na,x\nb,y\n")
    ds = build_folder_dataset(root, tmp_path / "labels.csv", splits=None, max_seq_len=16)
    reasons = {s["path"]: s["reason"] for s in ds.build_report["skipped"] if s["split"] is None}
    assert reasons[str(root / "gone.mid")].startswith("dangling symlink")
    assert reasons[str(root / "odd.mid")] == "a folder, not a MIDI file"
