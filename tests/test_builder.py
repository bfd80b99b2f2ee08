"""Tests of the generic dataset builder (adversarial_midibert.data.builder) on tiny synthetic MIDI folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from adversarial_midibert.constants import BOS_ID, EOS_ID, MASK_ID, VELOCITY
from adversarial_midibert.data.builder import (
    BuildOptions,
    build_dataset,
    format_summary,
    load_task_dataset,
    save,
    split_pieces,
)
from adversarial_midibert.tokenization_octuple import OctupleTokenizer


def write_midi(path, n_notes=40, base=60, velocity=64, tracks=1):
    score = Score(480)
    score.tempos = [Tempo(0, 120.0)]
    score.time_signatures = [TimeSignature(0, 4, 4)]
    for t in range(tracks):
        track = Track(name=f"T{t}", program=0)
        track.notes = Note.from_numpy(
            (np.arange(n_notes) * 240).astype(np.int32),
            np.full(n_notes, 240, np.int32),
            (base + t * 5 + np.arange(n_notes) % 12).astype(np.int8),
            np.full(n_notes, velocity, np.int8),
        )
        score.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "midi"
    for label in ("a", "b"):
        for i in range(5):
            write_midi(root / label / f"{label}{i}.mid", n_notes=30 + 10 * i, base=50 + 10 * (label == "b"))
    (root / "a" / "empty.mid").write_bytes(b"")
    (root / "b" / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    return root


def test_folder_with_corrupt_and_empty_files_builds_and_reports_both(folder, tmp_path):
    tok = OctupleTokenizer(max_seq_len=16)
    ds = build_dataset(folder, labels="folder", splits=(0.6, 0.2, 0.2), tokenizer=tok, task="toy")
    skipped = {s["piece_id"]: s["reason"] for s in ds.build_report["skipped"]}
    assert set(skipped) == {"a/empty", "b/corrupt"}
    assert "empty" in skipped["a/empty"]
    assert set(ds) == {"train", "validation", "test"}
    pieces = {name: set(split["piece_id"]) for name, split in ds.items()}
    assert not (pieces["train"] & pieces["validation"]) and not (pieces["train"] & pieces["test"])
    assert not (pieces["validation"] & pieces["test"])
    assert ds.task_info["label_names"] == ["a", "b"] and ds.task_info["num_labels"] == 2
    train = ds["train"]
    assert set(train.column_names) == {"input_ids", "attention_mask", "labels", "piece_id", "segment_id"}
    assert train["segment_id"] == list(range(len(train)))
    row = np.asarray(train[0]["input_ids"])
    assert row.shape[1] == 8 and row.shape[0] <= 16
    assert (row[0] == BOS_ID).all() and (row[-1] == EOS_ID).all()
    assert len(train) > len(pieces["train"])  # long pieces are cut into several segments
    counts = ds.build_report["splits"]["train"]
    assert counts["pieces"] == len(pieces["train"]) and counts["segments"] == len(train)
    assert sum(counts["class_counts_pieces"].values()) == counts["pieces"]
    text = format_summary(ds)
    assert "skipped files: 2" in text and "corrupt" in text

    out = save(ds, tmp_path / "saved")
    assert json.loads((out / "build_report.json").read_text())["skipped"]
    loaded, info, tokenizer = load_task_dataset(out)
    assert info["task"] == "toy" and tokenizer.max_seq_len == 16
    assert loaded["train"]["input_ids"] == train["input_ids"]


def test_token_task_hidden_attribute_and_parallel_cache(folder, tmp_path):
    files = sorted(p for p in folder.rglob("*.mid") if p.stat().st_size > 100)

    kwargs = dict(task_type="token", token_label_fn=_first_track_labels, splits=(0.5, 0.25, 0.25),
                  tokenizer=OctupleTokenizer(max_seq_len=32), num_proc=2, hidden_attributes=["velocity"],
                  label_names=["x"], cache_dir=tmp_path / "cache", shard_size=2)
    ds = build_dataset(files, **kwargs)
    row = ds["train"][0]
    ids, labels = np.asarray(row["input_ids"]), np.asarray(row["labels"])
    assert len(labels) == len(ids) and labels[0] == labels[-1] == -100 and (labels[1:-1] == 0).all()
    # velocity stays in the data: the fine-tuned model hides it (config.hidden_attributes, test_modeling)
    assert (ids[1:-1, VELOCITY] != MASK_ID).all() and ds.task_info["hidden_attributes"] == ["velocity"]
    shards = sorted((tmp_path / "cache").rglob("*.arrow"))
    assert len(shards) >= 3  # train has 2 shards of 2 pieces, validation and test one each
    written = {p: p.stat().st_mtime_ns for p in shards}
    again = build_dataset(files, **kwargs)  # the same inputs: read from the cache, nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in shards} == written
    assert again["train"]["input_ids"] == ds["train"]["input_ids"]


def _first_track_labels(score, track_index, note_index):
    return np.where(np.asarray(track_index) == 0, 0, -100)


def test_split_pieces_mapping_and_errors():
    assignment, not_in, missing = split_pieces(["a", "b", "c"], {"train": ["a"], "valid": ["b", "z"]})
    assert assignment == {"train": ["a"], "validation": ["b"], "test": []}
    assert not_in == ["c"] and missing == ["z"]
    with pytest.raises(ValueError, match="both"):
        split_pieces(["a"], {"train": ["a"], "test": ["a"]})
    stratified, _, _ = split_pieces([f"p{i}" for i in range(20)], (0.8, 0.1, 0.1), ["x"] * 10 + ["y"] * 10)
    assert len(stratified["train"]) == 16 and {p for p in stratified["test"]} & {"p0", "p1", "p2", "p3", "p4", "p5",
                                                                                  "p6", "p7", "p8", "p9"}


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="task_type"):
        build_dataset([], task_type="bogus")
    with pytest.raises(ValueError, match="token_label_fn"):
        build_dataset([], task_type="token")
    with pytest.raises(ValueError, match="token_label_fn"):  # the options object checks itself, fields given or not
        build_dataset([], BuildOptions(task_type="pretrain"), task_type="token")


def test_pretrain_build_without_test_split_saves_and_loads(folder, tmp_path):
    options = BuildOptions(task_type="pretrain", splits=(0.8, 0.2, 0.0))
    ds = build_dataset(folder, options, tokenizer=OctupleTokenizer(max_seq_len=32))
    assert len(ds["test"]) == 0 and ds.task_info["task_type"] == "pretrain"
    loaded, info, _ = load_task_dataset(save(ds, tmp_path / "pretrain"))
    assert set(loaded) == {"train", "validation"} and info["task_type"] == "pretrain"
    assert loaded["train"]["input_ids"] == ds["train"]["input_ids"]


def test_folder_scan_reports_what_it_leaves_out_and_follows_symlinked_folders(tmp_path, monkeypatch):
    """Issue 11 failure 6: unreadable subfolders, dangling or looping symlinks and folders named x.mid were left out
    without a word, and symlinked subfolders were not followed."""
    import os

    from adversarial_midibert.data import builder

    root, outside = tmp_path / "midi", tmp_path / "elsewhere"
    for label in ("a", "b"):
        for i in range(3):
            write_midi(root / label / f"{label}{i}.mid")
    write_midi(outside / "c" / "c0.mid")
    write_midi(root / "folder.mid" / "inside.mid")  # a folder named like a MIDI file (its content is used)
    (root / "c").symlink_to(outside / "c", target_is_directory=True)  # symlinked subfolder: followed
    (root / "again").symlink_to(root / "a", target_is_directory=True)  # the same files a second time
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the top
    (root / "gone.mid").symlink_to(tmp_path / "missing.mid")  # dangling
    (root / "self.mid").symlink_to(root / "self.mid")  # a link to itself
    (root / "locked").mkdir()
    write_midi(root / "locked" / "l0.mid")
    real_scandir = os.scandir

    def scandir(path):  # the tests run as root, for whom chmod 000 does not lock a folder
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(builder.os, "scandir", scandir)
    ds = build_dataset(root, labels="folder", splits=(0.6, 0.2, 0.2), tokenizer=OctupleTokenizer(max_seq_len=16),
                       task="toy")
    pieces = {p for split in ds.values() for p in split["piece_id"]}
    assert {"c/c0", "folder.mid/inside"} <= pieces and not any(p.startswith("again/") for p in pieces)
    reasons = {Path(s["path"]).relative_to(root).as_posix(): s["reason"] for s in ds.build_report["skipped"]}
    assert reasons["locked"].startswith("unreadable folder: Permission denied")
    assert reasons["gone.mid"].startswith("dangling symlink")
    assert reasons["self.mid"].startswith("unusable symlink")
    assert reasons["a/loop"] == "symlink loop: points to an enclosing folder"
    assert reasons["folder.mid"] == "a folder, not a MIDI file"
    assert all(reasons[f"again/a{i}.mid"].startswith("same file as") for i in range(3))
    assert "locked" in format_summary(ds)


def test_max_files_must_be_positive(folder):
    """Issue 11 failure 6: --max_files 0 built one piece per split."""
    with pytest.raises(ValueError, match="max_files must be >= 1"):
        build_dataset(folder, labels="folder", max_files=0, tokenizer=OctupleTokenizer(max_seq_len=16))


def test_save_is_atomic_locked_and_refuses_other_folders(folder, tmp_path, lock_holder):
    """Issue 11 failure 4: two concurrent saves into one folder gave a dataset that no longer loads, and a dataset
    saved into a model folder replaced its tokenizer file."""
    from adversarial_midibert.atomic_io import FolderBusyError

    ds = build_dataset(folder, labels="folder", splits=(0.6, 0.2, 0.2), tokenizer=OctupleTokenizer(max_seq_len=16),
                       task="toy")
    out = tmp_path / "data"
    with lock_holder(out):  # another process writing the folder
        with pytest.raises(FolderBusyError, match=rf"^{out} is being written by another process \(lock "):
            save(ds, out)
    assert not out.exists()
    save(ds, out)
    save(ds, out)  # a dataset folder is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "midi"]  # no temporary folder or lock left
    loaded, info, _ = load_task_dataset(out)
    assert info["task"] == "toy" and len(loaded["train"]) == len(ds["train"])

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "octuple_tokenizer.json").write_text('{"mine": true}')
    with pytest.raises(FileExistsError, match=r"model is a model folder \(it has config.json\); refusing"):
        save(ds, model)
    assert (model / "octuple_tokenizer.json").read_text() == '{"mine": true}'
    save(ds, model, overwrite=True)
    assert not (model / "config.json").exists() and load_task_dataset(model)[1]["task"] == "toy"


def test_prepare_data_checks_counts_and_refuses_a_model_folder_before_building(tmp_path, capsys):
    from adversarial_midibert.data import prepare as prepare_data

    for flags, message in ((["--max_files", "0"], "--max_files must be >= 1, got 0"),
                           (["--num_proc", "0"], "--num_proc must be >= 1")):
        with pytest.raises(SystemExit):
            prepare_data.parse_args(["--task", "composer", "--output_dir", str(tmp_path / "o"), *flags])
        assert message in capsys.readouterr().err
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="model folder"):  # before any data is read
        prepare_data.main(["--task", "composer", "--data_root", str(tmp_path / "nowhere"), "--output_dir", str(model)])
