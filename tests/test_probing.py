"""Frozen features and linear probes (research/probing.py) on real POP909 and Pianist8 pieces (the study's report
from probe files: tests/test_run_study.py)."""

from __future__ import annotations

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


def test_a_piece_limit_draws_a_seeded_sample_not_the_first_pieces(melody):
    model = encoder(melody.tokenizer.vocab_sizes)
    split = melody["train"]
    every = list(dict.fromkeys(split["piece_id"]))
    samples = [encode_dataset(model, split, max_pieces=3, sample_seed=seed) for seed in range(4)]
    assert all(len(s.piece_ids) == 3 and set(s.piece_ids) <= set(every) for s in samples)
    assert any(s.piece_ids != every[:3] for s in samples) and len({tuple(s.piece_ids) for s in samples}) > 1
    assert encode_dataset(model, split, max_pieces=3, sample_seed=1).piece_ids == samples[1].piece_ids
    # every note of the sampled pieces, each owned by its piece
    rows = [i for i, p in enumerate(split["piece_id"]) if p in samples[1].piece_ids]
    assert samples[1].note_features.shape[0] == sum(sum(split[i]["attention_mask"]) - 2 for i in rows)
    notes = {p: sum(sum(split[i]["attention_mask"]) - 2 for i in rows if split[i]["piece_id"] == p) for p in every}
    assert np.bincount(samples[1].note_piece).tolist() == [notes[p] for p in samples[1].piece_ids]


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
