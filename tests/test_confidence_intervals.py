"""Bootstrap intervals over pieces: coverage on a known case, pairing, the seed level, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from adversarial_midibert.confidence_intervals import (
    bootstrap_accuracy,
    paired_bootstrap_difference,
    stack_piece_counts,
)
from adversarial_midibert.evaluation import PieceResults


def test_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    """Known case: 100 pieces, each right with probability 0.7. The 95 % interval must hold 0.7 in ~95 % of trials."""
    rng = np.random.default_rng(123)
    trials, hits, widths = 300, 0, []
    for t in range(trials):
        correct = (rng.random(100) < 0.7).astype(int)
        interval = bootstrap_accuracy(correct, n_resamples=1000, seed=t)
        hits += interval.low <= 0.7 <= interval.high
        widths.append(interval.high - interval.low)
        assert interval.estimate == pytest.approx(correct.mean())
    assert 0.90 <= hits / trials <= 0.99
    # Width close to the normal approximation 2 * 1.96 * sqrt(p (1 - p) / n) = 0.18.
    assert np.mean(widths) == pytest.approx(2 * 1.96 * np.sqrt(0.7 * 0.3 / 100), rel=0.1)


def test_pooled_accuracy_resamples_pieces_with_their_notes():
    # Two pieces: 90 of 100 notes right and 0 of 10. Micro accuracy 90/110; resampling pieces moves it a lot.
    interval = bootstrap_accuracy([90, 0], [100, 10], n_resamples=2000, seed=0)
    assert interval.estimate == pytest.approx(90 / 110)
    assert interval.low == pytest.approx(0.0) and interval.high == pytest.approx(0.9)
    with pytest.raises(ValueError, match="correct counts"):
        bootstrap_accuracy([3], [2])


def test_same_seed_same_interval_other_seed_other_draws():
    correct = np.arange(40) % 3 == 0
    first = bootstrap_accuracy(correct, seed=7).to_dict()
    assert first == bootstrap_accuracy(correct, seed=7).to_dict()
    assert first != bootstrap_accuracy(correct, seed=8).to_dict()
    assert first["method"].startswith("percentile bootstrap over 40 pieces")
    a, b = np.ones((2, 40)), np.zeros((3, 40))
    b[:, :10] = 1
    assert paired_bootstrap_difference(a, 1, b, 1, seed=3) == paired_bootstrap_difference(a, 1, b, 1, seed=3)


def test_pairing_removes_piece_difficulty():
    """B is A plus a few extra right answers: every paired resample gives a positive difference; unpaired would not."""
    rng = np.random.default_rng(0)
    a = (rng.random(60) < 0.5).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:6]] = 1  # B fixes 6 of A's errors
    paired = paired_bootstrap_difference(b, 1, a, 1, n_resamples=4000, seed=1)
    assert paired.estimate == pytest.approx(6 / 60)
    assert paired.low > 0 and paired.excludes_zero
    # Without pairing, the interval of A alone is already much wider than that of the paired difference.
    unpaired_a = bootstrap_accuracy(a, n_resamples=4000, seed=2)
    assert unpaired_a.high - unpaired_a.low > 1.5 * (paired.high - paired.low)
    # Identical variants: the difference is exactly 0 in every resample.
    same = paired_bootstrap_difference(a, 1, a, 1, seed=0)
    assert (same.low, same.high, same.excludes_zero) == (0.0, 0.0, False)


def test_seed_level_widens_the_interval():
    """Three seeds per variant that disagree a lot: resampling seeds must widen the interval."""
    pieces = 50
    a = np.zeros((3, pieces))
    for s, n in enumerate((20, 30, 40)):  # accuracies 0.4, 0.6, 0.8 on nested sets of pieces
        a[s, :n] = 1
    b = np.zeros((1, pieces))
    b[0, :25] = 1
    one_seed = paired_bootstrap_difference(a[1], 1, b, 1, n_resamples=4000, seed=0)
    three_seeds = paired_bootstrap_difference(a, 1, b, 1, n_resamples=4000, seed=0)
    assert three_seeds.estimate == pytest.approx(0.6 - 0.5) == pytest.approx(one_seed.estimate)
    assert three_seeds.high - three_seeds.low > 1.5 * (one_seed.high - one_seed.low)
    assert "seeds resampled" in three_seeds.method and "(3 and 1)" in three_seeds.method
    with pytest.raises(ValueError, match="different numbers of pieces"):
        paired_bootstrap_difference(a, 1, b[:, :10], 1)


def test_one_variant_over_several_seeds():
    """bootstrap_accuracy of (S, P) counts: the seed-mean, its interval widened by resampling seeds."""
    pieces = 50
    runs = np.zeros((3, pieces))
    for s, n in enumerate((20, 30, 40)):  # accuracies 0.4, 0.6, 0.8
        runs[s, :n] = 1
    one_seed = bootstrap_accuracy(runs[1], n_resamples=4000, seed=0)
    three_seeds = bootstrap_accuracy(runs, n_resamples=4000, seed=0)
    assert three_seeds.estimate == pytest.approx(0.6) == pytest.approx(one_seed.estimate)
    assert three_seeds.high - three_seeds.low > 1.5 * (one_seed.high - one_seed.low)
    assert "3 seeds resampled" in three_seeds.method
    assert bootstrap_accuracy(runs[1:2], seed=4) == bootstrap_accuracy(runs[1], seed=4)  # one row is one run


def test_resamples_without_predictions_are_skipped_not_counted_as_wrong():
    # Only the first piece has predictions (and they are right): a resample that misses it has no accuracy at all.
    correct, total = np.array([[3, 0, 0, 0]] * 2), np.array([3, 0, 0, 0])
    for interval in (bootstrap_accuracy(correct, total, seed=0),
                     paired_bootstrap_difference(correct, total, np.zeros((1, 4)), total, seed=0)):
        assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0)


def test_stack_piece_counts_aligns_pieces_by_id():
    run1 = PieceResults(["x", "y"], np.array([1, 2]), np.array([5, 9]), np.array([4, 1]))
    run2 = PieceResults(["y", "x"], np.array([2, 1]), np.array([9, 5]), np.array([9, 0]))
    correct, total, order = stack_piece_counts([run1, run2], "note")
    assert order == ["x", "y"]
    assert correct.tolist() == [[4, 1], [0, 9]] and total.tolist() == [[5, 9], [5, 9]]
    other = PieceResults(["x", "z"], np.array([1, 1]), np.array([5, 5]), np.array([1, 1]))
    with pytest.raises(ValueError, match="other pieces"):
        stack_piece_counts([run1, other], "note")
    with pytest.raises(ValueError, match="does not apply"):
        stack_piece_counts([run1], "piece")


def test_paired_t_interval_matches_scipy():
    from scipy import stats

    from adversarial_midibert.confidence_intervals import paired_t_interval

    a = np.array([0.812, 0.805, 0.821, 0.799, 0.816, 0.809])
    b = np.array([0.806, 0.807, 0.811, 0.795, 0.812, 0.800])
    interval = paired_t_interval(a, b)
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert interval.estimate == pytest.approx(np.mean(a - b))
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert interval.df == 5 and interval.excludes_zero == (expected.low > 0 or expected.high < 0)
    narrow = paired_t_interval(a, b, confidence=0.8)
    assert narrow.high - narrow.low == pytest.approx(np.diff(stats.ttest_rel(a, b).confidence_interval(0.8))[0])
    with pytest.raises(ValueError, match="at least 2 paired seeds"):
        paired_t_interval([0.5], [0.4])
    with pytest.raises(ValueError, match="one length"):
        paired_t_interval(a, b[:5])


def test_minimum_detectable_effect_from_the_interval():
    """(q(0.975) + q(0.8)) x SE, with SE read back from the interval; Student quantiles with df, normal without."""
    from scipy import stats

    from adversarial_midibert.confidence_intervals import minimum_detectable_effect

    standard_error = 0.004
    z = stats.norm.ppf(0.975)
    assert minimum_detectable_effect(-z * standard_error, z * standard_error) == pytest.approx(
        (z + stats.norm.ppf(0.8)) * standard_error)
    t = stats.t.ppf(0.975, 5)
    assert minimum_detectable_effect(0.01 - t * standard_error, 0.01 + t * standard_error, df=5) == pytest.approx(
        (t + stats.t.ppf(0.8, 5)) * standard_error)


def test_macro_f1_interval_from_per_piece_confusion_counts():
    """The estimate is scikit-learn's macro-F1 over all classes (the seeds averaged); the interval resamples pieces."""
    from sklearn.metrics import f1_score

    from adversarial_midibert.confidence_intervals import bootstrap_macro_f1

    rng = np.random.default_rng(0)
    runs = []
    for _ in range(2):  # two seeds, 40 pieces of 30 notes, 4 classes (2 never predicted, 3 neither present nor)
        labels = rng.integers(0, 3, (40, 30))
        predictions = np.where(rng.random((40, 30)) < 0.7, labels, rng.integers(0, 2, (40, 30)))
        confusion = np.zeros((40, 4, 4), dtype=np.int64)
        np.add.at(confusion, (np.repeat(np.arange(40), 30), labels.ravel(), predictions.ravel()), 1)
        runs.append((confusion, f1_score(labels.ravel(), predictions.ravel(), labels=[0, 1, 2, 3], average="macro",
                                         zero_division=0)))
    interval = bootstrap_macro_f1(np.stack([c for c, _ in runs]), n_resamples=500)
    assert interval.estimate == pytest.approx(np.mean([f1 for _, f1 in runs]))
    assert interval.low < interval.estimate < interval.high and interval.high - interval.low < 0.15
    one = bootstrap_macro_f1(runs[0][0], n_resamples=500)
    assert one.estimate == pytest.approx(runs[0][1])
    few = bootstrap_macro_f1(runs[0][0][:4], n_resamples=500)  # 4 pieces: a wider interval
    assert few.high - few.low > one.high - one.low
