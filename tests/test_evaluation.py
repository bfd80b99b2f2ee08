"""Metrics through ``evaluate`` offline, token-metric masking, confusion matrix PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adversarial_midibert.evaluation import (
    ClassificationEvaluator,
    confusion_matrix,
    load_metric,
    select_scored,
    token_metric_mask,
)


def test_metrics_load_offline_and_match_sklearn():
    from sklearn.metrics import f1_score

    preds, refs = [0, 1, 2, 2, 1, 0], [0, 1, 1, 2, 1, 2]
    assert load_metric("accuracy").compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(4 / 6)
    f1 = load_metric("f1").compute(predictions=preds, references=refs, average="macro")["f1"]
    assert f1 == pytest.approx(f1_score(refs, preds, average="macro"))


def test_masked_notes_are_left_out_of_token_metrics():
    # Two segments: BOS, 3 notes, EOS (+ padding in the second).
    labels = torch.tensor([[-100, 0, 1, 2, -100], [-100, 1, 1, -100, -100]])
    predictions = torch.tensor([[5, 0, 0, 2, 5], [5, 0, 1, 5, 5]])
    masked = torch.zeros(2, 5, dtype=torch.bool)
    masked[0, 2] = True  # a wrong prediction, but masked: not scored
    masked[1, 1] = True  # same
    keep = token_metric_mask(labels, masked)
    assert keep.tolist() == [[False, True, False, True, False], [False, False, True, False, False]]
    preds, refs = select_scored(predictions, labels, masked)
    assert preds.tolist() == [0, 2, 1] and refs.tolist() == [0, 2, 1]

    evaluator = ClassificationEvaluator(3, ["melody", "bridge", "accompaniment"])
    evaluator.add_batch(predictions, labels, masked)
    assert evaluator.compute("test_") == {"test_accuracy": 1.0, "test_f1_macro": 1.0}
    assert evaluator.num_scored == 3
    # Without the mask the two wrong predictions count.
    unmasked = ClassificationEvaluator(3)
    unmasked.add_batch(predictions, labels)
    assert unmasked.compute()["accuracy"] == pytest.approx(3 / 5)
    # A per-attribute mask (B, L, 8) is reduced over attributes.
    per_attribute = masked[..., None].expand(2, 5, 8).clone()
    assert torch.equal(token_metric_mask(labels, per_attribute), keep)


def test_mask_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="masked_positions"):
        token_metric_mask(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool))


def test_confusion_matrix_and_png(tmp_path):
    matrix = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
    evaluator = ClassificationEvaluator(2, ["a", "b"])
    evaluator.add_batch(np.array([0, 1, 1]), np.array([0, 1, 0]))
    path = evaluator.plot(tmp_path / "cm.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
