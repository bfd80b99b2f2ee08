"""``prepare_data.py --midi_dir --labels``: a user's folder of MIDI files + a CSV, split by piece, one bad file listed.
``prepare_data.py --midi_dir --labels``: a user's folder of MIDI files + a CSV, split by piece, one bad file listed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from datasets import ClassLabel, load_from_disk

from adversarial_midibert.data import build_folder_dataset, load_task_dataset, resolve_folder, task_info_from_dataset


@pytest.fixture(scope="module")
def prepare():
    from adversarial_midibert.data import prepare

    return prepare


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
        label = "happy" if clip.name.startswith("Q1") else "sad"
        rows.append(f"{clip.stem},{label},{['train', 'valid', 'test'][i % 3]}")
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


def _tiny_folder(tmp_path, names=("a", "b", "c"), tracks=1):
    from test_builder import write_midi

    root = tmp_path / "midi"
    for i, name in enumerate(names):
        write_midi(root / f"{name}.mid", n_notes=20 + 3 * i, base=50 + 2 * i, tracks=tracks)
    return root


@pytest.mark.parametrize("rows, match", [
    (["file,label", "a,x", "b,y", "a,y"], r"labels.csv line 4: file 'a' has \('y', None\), but line 2 gives"),
    (["file,label", "a,x", "b,y", "a.mid,y"], r"line 4: file 'a' has .*line 2"),  # one file by two names
    (["file,label", "a,x", "b"], r"labels.csv line 3: 1 field\(s\), 2 expected"),
    (["file,label", "a,x", "b,y,z"], r"labels.csv line 3: 3 field\(s\), 2 expected"),
])
def test_conflicting_or_broken_csv_rows_stop_with_the_line(tmp_path, rows, match):
    """Issue 19 item 4: the same file twice with different labels (the last won silently), a row with a missing
    field (AttributeError on None.strip)."""
    root = _tiny_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=match):
        resolve_folder(root, tmp_path / "labels.csv")


def test_repeated_csv_rows_and_headers_are_reported(tmp_path):
    """Issue 19 item 4: a repeated header row and repeated rows passed unreported; they are kept once and listed in
    build_report.json with their lines."""
    root = _tiny_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na,x\nfile,label\nb,y\nc,x\nb,y\n")
    ds = build_folder_dataset(root, tmp_path / "labels.csv", splits=None, max_seq_len=16)
    assert ds.build_report["labels_csv_problems"] == [
        {"line": 3, "problem": "repeated header row, left out"},
        {"line": 6, "problem": "file 'b' repeats line 4, left out"}]
    assert ds["train"].features["labels"].names == ["x", "y"]
    assert {r["piece_id"]: r["labels"] for r in ds["train"]} == {"a": 0, "b": 1, "c": 0}


def test_build_dataset_csv_labels_refuse_conflicts(tmp_path):
    """The same checks on ``build_dataset(labels="x.csv")``: a conflict names both lines, a repeat is reported."""
    from adversarial_midibert import OctupleTokenizer
    from adversarial_midibert.data import build_dataset

    root = _tiny_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na,x\nb,y\nc,x\nb.mid,x\n")
    with pytest.raises(ValueError, match=r"b.mid is labelled differently by several rows \(line 3 .*line 5"):
        build_dataset(root, labels=tmp_path / "labels.csv", label_column="label", splits=None,
                      tokenizer=OctupleTokenizer(max_seq_len=16))
    (tmp_path / "labels.csv").write_text("file,label\na,x\nb,y\nc,x\nb,y\n")
    ds = build_dataset(root, labels=tmp_path / "labels.csv", label_column="label", splits=None,
                       tokenizer=OctupleTokenizer(max_seq_len=16))
    assert ds.build_report["labels_csv_problems"] == [{"line": 5, "problem": "file 'b' repeats line 3, left out"}]


def _note_classes(ds, piece_id):
    """The labels of a piece's notes, in token order (BOS/EOS rows left out)."""
    rows = [r for r in ds["train"] if r["piece_id"] == piece_id]
    return [label for r in sorted(rows, key=lambda r: r["segment_id"]) for label in r["labels"][1:-1]]


def test_token_csv_labels_give_each_note_its_track_class(tmp_path):
    """Issue 19 items 16 and 9: each note gets the class of its track, named or by index (swapped classes and a
    broken index fallback passed the old test); an empty label makes no class "" and is reported; tracks twice
    with different labels stop the build."""
    from adversarial_midibert import OctupleTokenizer

    root = _tiny_folder(tmp_path, names=("a",), tracks=3)  # tracks T0, T1, T2
    (tmp_path / "tracks.csv").write_text("track,label\nt0,lead\n1,bass\nT2,\nT0,lead\n")
    tokenizer = OctupleTokenizer(max_seq_len=16)
    ds = build_folder_dataset(root, tmp_path / "tracks.csv", task_type="token", splits=None, tokenizer=tokenizer)
    assert ds["train"].features["labels"].feature.names == ["bass", "lead"]
    _, (track_index, _) = tokenizer.encode_score(str(root / "a.mid"), return_note_indices=True)
    expected = np.select([track_index == 0, track_index == 1], [1, 0], -100).tolist()
    assert _note_classes(ds, "a") == expected and {0, 1, -100} <= set(expected)
    assert ds.build_report["labels_csv_problems"] == [
        {"line": 4, "problem": "track 'T2' has an empty label, its notes are left unlabelled"},
        {"line": 5, "problem": "track 't0' repeats line 2, left out"}]
    (tmp_path / "tracks.csv").write_text("track,label\nT0,lead\nt0,bass\n")
    with pytest.raises(ValueError, match=r"tracks.csv line 3: track 't0' has 'bass', but line 2 gives 'lead'"):
        resolve_folder(root, tmp_path / "tracks.csv", task_type="token")


def test_prepare_into_the_current_folder(prepare, tmp_path, monkeypatch):
    """Issue 19 item 12: ``prepare --output_dir .`` died with "PosixPath('.') has an empty name"."""
    root = _tiny_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label,split\na,x,train\nb,y,train\nc,x,test\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    prepare.main(["--midi_dir", str(root), "--labels", str(tmp_path / "labels.csv"), "--output_dir", ".",
                  "--max_seq_len", "16", "--split_column", "split"])
    data, info, _ = load_task_dataset(work)
    assert info["label_names"] == ["x", "y"] and sum(len(split) for split in data.values()) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "midi", "work"]  # no lock or temp left


def test_a_token_csv_naming_files_is_refused_not_applied_to_every_file(tmp_path):
    """Issue 26 item 9: track labels apply to the tracks of that name in every file; a CSV whose rows name files
    (``file,track,label`` naming only a.mid) used to label b.mid's notes too, silently."""
    root = _tiny_folder(tmp_path, names=("a", "b"), tracks=2)
    (tmp_path / "tracks.csv").write_text("file,track,label\na.mid,T0,lead\na.mid,T1,bass\n")
    with pytest.raises(ValueError, match=r"tracks.csv: column 'file' names files of .* \('a.mid'\)"):
        resolve_folder(root, tmp_path / "tracks.csv", task_type="token")
    (tmp_path / "tracks.csv").write_text("track,label,comment\nT0,lead,the tune\nT1,bass,\n")  # other columns: fine
    assert resolve_folder(root, tmp_path / "tracks.csv", task_type="token").extra_info["track_labels"] == {
        "t0": "lead", "t1": "bass"}


def test_files_differing_only_by_suffix_are_two_pieces(tmp_path):
    """Issue 26 item 12: x.mid beside x.MID (or x.midi) gave one piece id; prepare then failed with a traceback or a
    label message about another file."""
    from test_builder import write_midi

    root = tmp_path / "midi"
    for name, base in (("x.mid", 50), ("x.MID", 60), ("x.midi", 55), ("y.mid", 70)):
        write_midi(root / name, n_notes=20, base=base)
    (tmp_path / "labels.csv").write_text("file,label\nx.mid,a\nx.MID,b\nx.midi,a\ny,b\n")
    spec = resolve_folder(root, tmp_path / "labels.csv")
    ids = sorted(r.piece_id for r in spec.records)
    assert ids == ["x.MID", "x.mid", "x.midi", "y"]
    assert {r.piece_id: r.label for r in spec.records} == {"x.mid": "a", "x.MID": "b", "x.midi": "a", "y": "b"}
    ds = build_folder_dataset(root, tmp_path / "labels.csv", splits=None, max_seq_len=16)
    assert sum(split["pieces"] for split in ds.build_report["splits"].values()) == 4
    (tmp_path / "labels.csv").write_text("file,label\nx,a\n")
    with pytest.raises(ValueError, match="'x' names several files"):
        resolve_folder(root, tmp_path / "labels.csv")
