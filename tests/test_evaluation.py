"""Accuracy and macro-F1 through ``evaluate`` offline, token-metric masking, confusion matrix PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adversarial_midibert.evaluation import (
    ClassificationEvaluator,
    accuracy_and_macro_f1,
    confusion_matrix,
    select_scored,
    token_metric_mask,
)


def test_accuracy_and_macro_f1_match_their_definitions():
    preds, refs = [0, 1, 2, 2, 1, 0], [0, 1, 1, 2, 1, 2]
    scores = accuracy_and_macro_f1(preds, refs, 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # per class F1 = 2 TP / (2 TP + FP + FN): class 0 (1 TP, 1 FP), 1 (2 TP, 1 FN), 2 (1 TP, 1 FP, 1 FN)
    assert scores["f1_macro"] == pytest.approx((2 / 3 + 4 / 5 + 2 / 4) / 3)
    assert all(np.isnan(v) for v in accuracy_and_macro_f1([], [], 3).values())


def test_metrics_are_evaluate_modules_that_work_offline_and_combine():
    import evaluate

    from adversarial_midibert.evaluation import F1, Accuracy

    preds, refs = [0, 1, 2, 2, 1, 0], [0, 1, 1, 2, 1, 2]
    accuracy = Accuracy()
    for p, r in zip(preds, refs):  # evaluate's streaming interface
        accuracy.add(prediction=p, reference=r)
    assert accuracy.compute() == {"accuracy": pytest.approx(4 / 6)}
    combined = evaluate.combine([Accuracy(), F1()]).compute(predictions=preds, references=refs)
    assert combined == {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx((2 / 3 + 4 / 5 + 2 / 4) / 3)}


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


def test_macro_f1_averages_over_every_label():
    # Classes 0 and 1 only, in a 4-class task: classes 2 and 3 count with F1 = 0.
    evaluator = ClassificationEvaluator(4)
    evaluator.add_batch(np.array([0, 1, 1]), np.array([0, 1, 1]))
    assert evaluator.compute() == {"accuracy": 1.0, "f1_macro": pytest.approx(0.5)}


def test_piece_aggregation_matches_prediction_for_every_piece():
    from adversarial_midibert.evaluation import aggregate_by_piece, group_by_piece
    from adversarial_midibert.pooling import aggregate_segment_log_probs

    rng = np.random.default_rng(0)
    piece_ids = ["b", "a", "b", "c", "a", "b"]
    log_probs = torch.log_softmax(torch.from_numpy(rng.normal(size=(6, 3))), dim=-1)
    num_notes = np.array([10, 3, 1, 0, 7, 0])
    pieces, index = group_by_piece(piece_ids)
    assert pieces == ["b", "a", "c"] and index.tolist() == [0, 1, 0, 2, 1, 0]
    probabilities = aggregate_by_piece(log_probs.numpy(), index, num_notes)
    for p in range(3):
        rows = torch.from_numpy(np.flatnonzero(index == p))
        expected = aggregate_segment_log_probs(log_probs[rows], torch.from_numpy(num_notes)[rows])
        np.testing.assert_allclose(probabilities[p], expected.numpy(), rtol=1e-6)  # "c": no notes, equal weights


def test_evaluator_piece_results_sequence_and_token():
    from adversarial_midibert.evaluation import PieceResults

    # Sequence task: piece "x" has a long segment voting 1 and a short one voting 0; piece "y" one segment.
    evaluator = ClassificationEvaluator(2, ["no", "yes"])
    log_probs = torch.log(torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]]))
    evaluator.add_batch(log_probs.argmax(-1), torch.tensor([1, 1, 1]), log_probs=log_probs,
                        num_notes=torch.tensor([100, 5, 30]))
    pieces = evaluator.piece_results(["x", "x", "y"])
    assert pieces.predictions.tolist() == [1, 0] and pieces.num_correct.tolist() == [1, 0]
    assert pieces.num_segments.tolist() == [2, 1] and pieces.num_notes.tolist() == [105, 30]
    assert pieces.compute(2, "test_") == {"test_num_pieces": 2, "test_piece_accuracy": 0.5,
                                          "test_piece_f1_macro": pytest.approx(1 / 3)}
    records = pieces.records(["no", "yes"])
    assert records[0]["label"] == "yes" and records[0]["predicted"] == "yes" and records[0]["correct"]
    assert sum(records[1]["probabilities"].values()) == pytest.approx(1.0)
    again = PieceResults.from_records(records)
    assert again.counts("piece")[0].tolist() == [1, 0] and again.counts("segment")[1].tolist() == [2, 1]
    with pytest.raises(ValueError, match="2 piece ids for 3"):
        evaluator.piece_results(["x", "y"])
    with pytest.raises(ValueError, match="log_probs"):
        no_probs = ClassificationEvaluator(2)
        no_probs.add_batch(torch.tensor([1]), torch.tensor([1]))
        no_probs.piece_results(["x"])

    # Token task: notes per piece, masked notes not scored.
    evaluator = ClassificationEvaluator(3)
    labels = torch.tensor([[-100, 0, 1, 2, -100], [-100, 1, 1, -100, -100], [-100, 2, 2, 2, -100]])
    predictions = torch.tensor([[0, 0, 0, 2, 0], [0, 1, 0, 0, 0], [0, 2, 2, 0, 0]])
    masked = torch.zeros(3, 5, dtype=torch.bool)
    masked[0, 2] = True
    evaluator.add_batch(predictions, labels, masked)
    pieces = evaluator.piece_results(["p", "q", "p"])
    assert pieces.num_notes.tolist() == [5, 2] and pieces.num_correct.tolist() == [4, 1]
    assert pieces.num_correct.sum() / pieces.num_notes.sum() == evaluator.compute()["accuracy"]
    assert pieces.records()[1] == {"piece_id": "q", "num_segments": 1, "num_scored_notes": 2, "num_correct_notes": 1,
                                   "confusion": [[0, 0, 0], [1, 1, 0], [0, 0, 0]]}  # label 1: one right, one as 0
    # per piece, the scored notes by label and prediction: they add up to the split's confusion matrix
    assert np.array_equal(pieces.confusion.sum(0), evaluator.confusion_matrix())
    assert np.trace(pieces.confusion, axis1=1, axis2=2).tolist() == pieces.num_correct.tolist()
    assert np.array_equal(PieceResults.from_records(pieces.records()).confusion, pieces.confusion)
    with pytest.raises(ValueError, match="segments of one piece carry different labels"):
        from adversarial_midibert.evaluation import piece_results

        piece_results(["x", "x"], np.ones(2), np.ones(2), np.ones(2), labels=np.array([0, 1]),
                      log_probs=np.zeros((2, 2)))
