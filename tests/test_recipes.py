"""Tests of the paper-task recipes (adversarial_midibert.data.recipes) on the real data: split lists in full,
tokenising only a few files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from symusic import Score

from adversarial_midibert.constants import BOS_ID, MASK_ID, VELOCITY
from adversarial_midibert.data.builder import build_dataset
from adversarial_midibert.data.recipes import (
    VELOCITY_BINS,
    build_recipe,
    eval_piece_paths,
    melody_token_labels,
    resolve_recipe,
    velocity_class,
    velocity_token_labels,
)
from adversarial_midibert.tokenization_octuple import OctupleTokenizer

EXPECTED = {
    ("composer", None): (337, 37, 37),
    ("emotion", None): (864, 107, 107),
    ("emotion", "emopia_song"): (876, 114, 88),
    ("melody", None): (693, 86, 86),
    ("velocity", None): (693, 86, 86),
}


@pytest.mark.parametrize("task,source", list(EXPECTED))
def test_full_split_lists(data_root, task, source):
    spec = resolve_recipe(task, data_root, split_source=source)
    assert spec.missing_files == []
    split = spec.split_piece_ids()
    assert tuple(len(split[k]) for k in ("train", "validation", "test")) == EXPECTED[(task, source)]
    sets = [set(v) for v in split.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    if spec.task_type == "sequence":
        label_of = {r.piece_id: r.label for r in spec.records}
        assert {label_of[p] for p in split["train"]} == set(spec.label_names)  # every class in train


def test_emotion_labels_agree_with_label_csv(data_root):
    spec = resolve_recipe("emotion", data_root)
    with (data_root / "EMOPIA" / "label.csv").open() as handle:
        table = {row["ID"]: int(row["4Q"]) for row in csv.DictReader(handle)}
    checked = 0
    for r in spec.records:
        stem = Path(r.piece_id).stem
        if stem in table:
            assert r.label == f"Q{table[stem]}"
            checked += 1
    assert checked > 1000


def test_pretrain_excludes_eval_pieces(data_root):
    spec = resolve_recipe("pretrain", data_root)
    excluded = eval_piece_paths(data_root)
    paths = {str(Path(r.path).resolve()) for r in spec.records}
    assert not (paths & excluded)
    assert spec.extra_info["excluded_eval_pieces"] == len(excluded)
    with_eval = resolve_recipe("pretrain", data_root, exclude_eval_pieces=False)
    assert len(with_eval.records) == len(spec.records) + len(excluded)
    assert len({r.piece_id for r in with_eval.records}) == len(with_eval.records)


def test_composer_build_few_files(data_root):
    ds = build_recipe("composer", data_root, max_files=4, max_seq_len=128)
    assert ds.build_report["skipped"] == []
    assert ds.task_info["num_labels"] == 8 and len(ds["test"]) > 0
    row = ds["train"][0]
    assert isinstance(row["labels"], int) and np.asarray(row["input_ids"])[0].tolist() == [BOS_ID] * 8


def _one_song(data_root, song, fn, hidden=()):
    path = data_root / "POP909" / song / f"{song}.mid"
    ds = build_dataset([{"path": str(path), "piece_id": song}], task_type="token", token_label_fn=fn,
                       splits={"train": [song]}, tokenizer=OctupleTokenizer(max_seq_len=512),
                       label_names=[f"class{i}" for i in range(6)], hidden_attributes=hidden)
    return path, ds


def test_melody_labels_come_from_the_melody_track(data_root):
    path, ds = _one_song(data_root, "001", melody_token_labels)
    score = Score(str(path))
    names = [t.name.strip().upper() for t in score.tracks]
    labels = np.concatenate([np.asarray(x) for x in ds["train"]["labels"]])
    assert ds.build_report["splits"]["train"]["dropped_notes"] == 0
    for cls, name in enumerate(("MELODY", "BRIDGE", "PIANO")):
        assert (labels == cls).sum() == len(score.tracks[names.index(name)].notes)


def test_velocity_input_hidden_and_labels_binned(data_root):
    path, ds = _one_song(data_root, "002", velocity_token_labels, hidden=("velocity",))
    ids = np.concatenate([np.asarray(x)[1:-1] for x in ds["train"]["input_ids"]])
    # the velocity stays in the data; the task names it, and the fine-tuned model hides it (config.hidden_attributes)
    assert (ids[:, VELOCITY] != MASK_ID).all() and ds.task_info["hidden_attributes"] == ["velocity"]
    labels = np.concatenate([np.asarray(x) for x in ds["train"]["labels"]])
    labels = labels[labels >= 0]
    raw = np.concatenate([t.notes.numpy()["velocity"] for t in Score(str(path)).tracks])
    assert np.array_equal(np.bincount(labels, minlength=6), np.bincount(velocity_class(raw), minlength=6))
    assert velocity_class(np.array([0, 31, 32, 63, 64, 95, 96, 127])).tolist() == [0, 0, 1, 2, 3, 4, 5, 5]
    assert len(VELOCITY_BINS) == 6
    spec = resolve_recipe("velocity", data_root)
    assert spec.hidden_attributes == ["velocity"]


def test_unknown_task_and_bad_root(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        resolve_recipe("genre", tmp_path)
    with pytest.raises(FileNotFoundError, match="data_root"):
        resolve_recipe("composer", tmp_path / "missing")
    with pytest.raises(ValueError, match="split_source"):
        resolve_recipe("composer", tmp_path, split_source="emopia_song")
