"""Frozen features and linear probes (research/probing.py) on real POP909 and Pianist8 pieces, and the
study's report built from probe files (research/run_study.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adversarial_midibert import AdvMidiBertModel
from adversarial_midibert.constants import VELOCITY
from research.probing import cross_validated_piece_probe, encode_dataset, fit_linear_probe

from tiny_models import TINY_SIZES, tiny_config


@pytest.fixture(scope="module")
def melody(data_root, tmp_path_factory):
    from adversarial_midibert.data import build_recipe

    out = tmp_path_factory.mktemp("melody") / "data"
    dataset = build_recipe("melody", data_root=data_root, max_seq_len=64, max_files=12, num_proc=1, output_dir=out)
    return dataset


def encoder(vocab_sizes, seed=0):
    torch.manual_seed(seed)
    return AdvMidiBertModel(tiny_config(vocab_sizes=list(vocab_sizes), max_position_embeddings=64))


def test_note_features_cover_every_labelled_note_and_hide_attributes(melody):
    model = encoder(melody.tokenizer.vocab_sizes)
    split = melody["train"]
    encoded = encode_dataset(model, split, batch_size=5)
    labels = np.concatenate([np.asarray(row) for row in split["labels"]])
    notes = sum(sum(mask) - 2 for mask in split["attention_mask"])  # every row but BOS and EOS
    assert encoded.note_features.shape == (notes, TINY_SIZES["hidden_size"])
    assert (encoded.note_labels != -100).sum() == (labels != -100).sum()
    assert encoded.piece_ids == list(dict.fromkeys(split["piece_id"]))
    # the piece embedding is the note-weighted mean of its notes
    first = encoded.note_piece == 0
    assert np.allclose(encoded.piece_features[0], encoded.note_features[first].mean(0), atol=1e-5)
    # hidden velocity: changing every velocity leaves the features unchanged
    shifted = [dict(row, input_ids=[r[:VELOCITY] + [max(4, (r[VELOCITY] + 3) % 20)] + r[VELOCITY + 1:]
                                    if r[VELOCITY] >= 4 else r for r in row["input_ids"]]) for row in split]
    assert not np.allclose(encode_dataset(model, shifted).note_features, encoded.note_features)
    hidden = encode_dataset(model, split, hidden_attributes=["velocity"]).note_features
    assert np.allclose(encode_dataset(model, shifted, hidden_attributes=["velocity"]).note_features, hidden)


def test_linear_probe_counts_every_test_note_per_piece(melody):
    model = encoder(melody.tokenizer.vocab_sizes)
    train, test = encode_dataset(model, melody["train"]), encode_dataset(model, melody["test"])
    result = fit_linear_probe(train, test)
    labelled = np.concatenate([np.asarray(row) for row in melody["test"]["labels"]])
    assert result.total.sum() == (labelled != -100).sum()
    assert result.piece_ids == test.piece_ids and result.correct.shape == (len(test.piece_ids),)
    assert np.all(result.correct <= result.total)
    majority = np.bincount(labelled[labelled != -100]).max() / (labelled != -100).sum()
    assert result.accuracy > majority - 0.05  # a probe on real features is no worse than the majority class


def test_cross_validated_probe_predicts_every_piece_once():
    from research.probing import EncodedSplit

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    features = rng.normal(size=(40, 6)).astype(np.float32)
    features[np.arange(40), labels] += 6.0  # each class along its own direction: linearly separable
    encoded = EncodedSplit(features, None, np.arange(40), [f"p{i}" for i in range(40)], features, labels)
    result = cross_validated_piece_probe(encoded, folds=5)
    assert result.total.tolist() == [1.0] * 40 and result.accuracy > 0.9
    shuffled = EncodedSplit(features, None, np.arange(40), encoded.piece_ids, features, rng.permutation(labels))
    assert cross_validated_piece_probe(shuffled, folds=5).accuracy < 0.6  # nothing to learn: near chance


def test_study_report_pairs_pieces_and_gives_interval_and_mde(tmp_path):
    from research import run_study as study

    args = study.parse_args(["--work_dir", str(tmp_path), "--arms", "random,adversarial", "--seeds", "0,1"])
    pieces = [f"song{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    for arm, rate in (("random", 0.6), ("adversarial", 0.7)):
        for seed in (0, 1):
            order = rng.permutation(30)  # each file lists the pieces in another order: the report must pair them
            entry = {"piece_ids": [pieces[i] for i in order], "total": [100.0] * 30,
                     "correct": [float(rng.binomial(100, rate)) for _ in order]}
            path = study.probe_file(args, arm, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({e: entry for e in ("melody-probe", "velocity-probe", "composer-cv")}))
    compared, accuracy = study.comparisons(args)
    row = next(c for c in compared if c["evaluation"] == "melody-probe" and c["a"] == "adversarial")
    assert row["b"] == "random" and row["pieces"] == 30 and row["seeds_a"] == 2
    assert 0.05 < row["difference"] < 0.15 and row["ci95"][0] < row["difference"] < row["ci95"][1]
    assert row["excludes_zero"] and 0 < row["mde"] < 0.1
    assert accuracy["melody-probe"]["adversarial"]["seeds"] == 2
    finetune = next(c for c in compared if c["evaluation"] == "melody-finetune-10pct")
    assert finetune["difference"] is None and finetune["status"] == "not run yet"
