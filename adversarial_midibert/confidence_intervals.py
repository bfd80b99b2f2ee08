"""Bootstrap confidence intervals over pieces: one run's accuracy, and differences between variants across seeds.

The segments (or notes) of one piece are not independent draws, so the bootstrap resamples pieces, each with all
its predictions; an accuracy over the drawn pieces is ``sum(correct) / sum(total)``. A variant's figure also moves
with the seed, so :func:`paired_bootstrap_difference` draws per resample one multiset of pieces shared by both
variants (paired) and one multiset of each variant's seeds. With a handful of seeds that seed level is too narrow
(normal tails, variance shrunk by ``(n - 1) / n``), so :func:`paired_t_interval` gives the Student t interval of the
per-seed differences beside it; a study sizes what it can see (:func:`minimum_detectable_effect`) from the wider.
``numpy.random.default_rng(seed)`` gives the same interval on every machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass
class _Interval:
    """A point estimate (on the observed data) and its interval ``[low, high]`` at ``confidence`` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (the difference is "significant")."""
        return bool(self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (with ``excludes_zero``)."""
        return {**asdict(self), "excludes_zero": self.excludes_zero}


@dataclass
class BootstrapInterval(_Interval):
    """A point estimate and its bootstrap percentile interval.

    Attributes:
        n_resamples: number of bootstrap resamples.
        seed: seed of ``numpy.random.default_rng``.
        method: how the resamples were drawn (a sentence).
    """

    n_resamples: int
    seed: int
    method: str


def _check_counts(correct, total, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(S, P)`` float arrays of correct and total counts (a 1-D input is one seed)."""
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    total = np.broadcast_to(np.atleast_2d(np.asarray(total, dtype=np.float64)), correct.shape)
    if correct.ndim != 2 or correct.shape[1] == 0:
        raise ValueError(f"{name}: expected per-piece counts of shape (pieces,) or (seeds, pieces), got "
                         f"{correct.shape}")
    if (correct < 0).any() or (correct > total).any():
        raise ValueError(f"{name}: correct counts must lie in [0, total] for every piece")
    return correct, np.array(total)


def _ratio(weights: np.ndarray, correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Accuracy of every seed under every piece resample: ``(B, P) x (S, P) -> (B, S)``; NaN where no total."""
    num, den = weights @ correct.T, weights @ total.T
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def _interval(samples: np.ndarray, estimate: float, confidence: float, n_resamples: int, seed: int, method: str):
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2
    low, high = np.nanquantile(samples, [alpha, 1.0 - alpha]) if np.isfinite(samples).any() else (np.nan, np.nan)
    return BootstrapInterval(float(estimate), float(low), float(high), confidence, n_resamples, seed, method)


def _draw(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """``(n_resamples, n)`` counts: how often each of ``n`` items is drawn in each resample of size ``n``."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def _seed_means(rng: np.random.Generator, pieces: np.ndarray, correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``(B,)`` mean accuracy over a resample of the ``S`` seeds, every accuracy over the resampled ``pieces``.

    NaN where a drawn seed has no prediction on the drawn pieces (the quantiles then skip that resample); a seed that
    was not drawn counts for nothing, even if its accuracy is NaN.
    """
    seeds = _draw(rng, correct.shape[0], pieces.shape[0])
    weighted = np.where(seeds > 0, _ratio(pieces, correct, total) * seeds, 0.0)
    return weighted.sum(axis=1) / correct.shape[0]


def _seed_mean_estimate(correct: np.ndarray, total: np.ndarray) -> float:
    """Observed mean over seeds of each seed's ``sum(correct) / sum(total)``."""
    sums = total.sum(1)
    return float(np.mean(correct.sum(1) / sums)) if (sums > 0).all() else np.nan


def bootstrap_accuracy(
    correct,
    total=1,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile interval of one variant's accuracy, resampling pieces with their segments or notes (and seeds).

    Args:
        correct: ``(P,)`` correct predictions per piece of one run (0/1 for a piece-level accuracy; correct
            segments or notes for a pooled accuracy), or ``(S, P)``: ``S`` seeds of one variant on the same pieces.
        total: ``(P,)`` or ``(S, P)`` predictions per piece (1 for a piece-level accuracy), or a scalar.
        n_resamples, confidence, seed: bootstrap resamples, interval level, generator seed (same seed, same
            interval).

    Returns:
        :class:`BootstrapInterval` of ``sum(correct) / sum(total)``, averaged over the seeds when there are several
        (then seeds are resampled too, as in :func:`paired_bootstrap_difference`).
    """
    correct, total = _check_counts(correct, total, "bootstrap_accuracy")
    runs, n_pieces = correct.shape
    rng = np.random.default_rng(seed)
    samples = _seed_means(rng, _draw(rng, n_pieces, n_resamples), correct, total)
    method = f"percentile bootstrap over {n_pieces} pieces (each with all its predictions)"
    if runs > 1:
        method = (f"two-level percentile bootstrap: {n_pieces} pieces (each with all its predictions) and {runs} "
                  "seeds resampled with replacement; statistic = the seed-mean accuracy")
    return _interval(samples, _seed_mean_estimate(correct, total), confidence, n_resamples, seed, method)


def paired_bootstrap_difference(
    correct_a,
    total_a,
    correct_b,
    total_b,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> BootstrapInterval:
    """Interval of ``mean accuracy(A) - mean accuracy(B)``: pieces resampled in pairs, seeds resampled per variant.

    Args:
        correct_a: ``(S_a, P)`` correct counts of variant A, one row per seed (or ``(P,)`` for one seed).
        total_a: same shape (or ``(P,)``, or a scalar): predictions per piece.
        correct_b: ``(S_b, P)`` for variant B, the same ``P`` pieces in the same order.
        total_b: as ``total_a``.
        n_resamples, confidence, seed: as for :func:`bootstrap_accuracy`.
    """
    correct_a, total_a = _check_counts(correct_a, total_a, "variant A")
    correct_b, total_b = _check_counts(correct_b, total_b, "variant B")
    if correct_a.shape[1] != correct_b.shape[1]:
        raise ValueError(f"the variants were scored on different numbers of pieces: {correct_a.shape[1]} and "
                         f"{correct_b.shape[1]}; a paired bootstrap needs the same pieces in the same order")
    rng = np.random.default_rng(seed)
    pieces = _draw(rng, correct_a.shape[1], n_resamples)  # shared by both variants: paired
    mean_a = _seed_means(rng, pieces, correct_a, total_a)
    mean_b = _seed_means(rng, pieces, correct_b, total_b)
    observed_a = _seed_mean_estimate(correct_a, total_a)
    observed_b = _seed_mean_estimate(correct_b, total_b)
    method = (f"two-level bootstrap: {correct_a.shape[1]} pieces resampled with replacement and shared by both "
              f"variants (paired), seeds resampled with replacement independently per variant "
              f"({correct_a.shape[0]} and {correct_b.shape[0]}); statistic = difference of the seed-mean accuracies; "
              "percentile interval")
    return _interval(mean_a - mean_b, observed_a - observed_b, confidence, n_resamples, seed, method)


def _macro_f1(confusion: np.ndarray) -> np.ndarray:
    """Macro-F1 over the classes of ``(..., C, C)`` confusion counts (rows: label, columns: prediction); a class
    neither present nor predicted scores 0, as scikit-learn's ``f1_score(labels=all classes)`` does."""
    true_positive = np.diagonal(confusion, axis1=-2, axis2=-1)
    denominator = confusion.sum(-1) + confusion.sum(-2)
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros(true_positive.shape), where=denominator > 0)
    return f1.mean(-1)


def bootstrap_macro_f1(confusion, n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                       seed: int = 0) -> BootstrapInterval:
    """Percentile interval of a variant's macro-F1 from per-piece confusion counts: pieces resampled (each with all its
    predictions) and, with several seeds, seeds too, as :func:`bootstrap_accuracy` does for an accuracy.

    Args:
        confusion: ``(P, C, C)`` one run's confusion counts per piece (label, prediction), or ``(S, P, C, C)``.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    confusion = confusion[None] if confusion.ndim == 3 else confusion
    runs, n_pieces = confusion.shape[:2]
    rng = np.random.default_rng(seed)
    pieces = _draw(rng, n_pieces, n_resamples)
    f1 = _macro_f1(np.einsum("bp,spij->bsij", pieces, confusion))  # (B, S)
    samples = (f1 * _draw(rng, runs, n_resamples)).sum(1) / runs
    return _interval(samples, float(_macro_f1(confusion.sum(1)).mean()), confidence, n_resamples, seed,
                     f"percentile bootstrap of the macro-F1 over {n_pieces} pieces and {runs} seed(s)")


def stack_piece_counts(runs, level: str, piece_ids=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(correct, total, piece_ids)``: per-piece counts at ``level`` (see ``PieceResults.counts``) of ``S`` runs
    (:class:`~adversarial_midibert.evaluation.PieceResults`) as ``(S, P)`` arrays for the bootstraps, in the order
    ``piece_ids`` (default: the first run's, sorted); ``ValueError`` when a run was scored on other pieces."""
    if not runs:
        raise ValueError("no runs to stack")
    order = sorted(runs[0].piece_ids) if piece_ids is None else [str(p) for p in piece_ids]
    correct, total = np.zeros((len(runs), len(order))), np.zeros((len(runs), len(order)))
    for s, run in enumerate(runs):
        if sorted(run.piece_ids) != sorted(order):
            missing, extra = set(order) - set(run.piece_ids), set(run.piece_ids) - set(order)
            raise ValueError(f"run {s} was scored on other pieces: {len(missing)} missing (e.g. "
                             f"{sorted(missing)[:3]}), {len(extra)} extra (e.g. {sorted(extra)[:3]}); pair only runs "
                             "on the same test set")
        position = {p: i for i, p in enumerate(run.piece_ids)}
        index = np.array([position[p] for p in order], dtype=np.int64)
        run_correct, run_total = run.counts(level)
        correct[s], total[s] = np.asarray(run_correct)[index], np.asarray(run_total)[index]
    return correct, total, order


@dataclass
class TInterval(_Interval):
    """A mean of per-seed differences and its Student t interval.

    Attributes:
        df: degrees of freedom (seeds - 1).
        standard_error: standard deviation of the differences (``ddof=1``) over the square root of their number.
        method: a sentence.
    """

    df: int
    standard_error: float
    method: str


def paired_t_interval(accuracy_a, accuracy_b, confidence: float = DEFAULT_CONFIDENCE) -> TInterval:
    """Student t interval of ``mean(accuracy_a - accuracy_b)`` over seeds paired by position.

    Args:
        accuracy_a: ``(S,)`` accuracy of variant A for each seed.
        accuracy_b: ``(S,)`` accuracy of variant B for the same seeds, in the same order (a seed fixes both
            variants' initialisation and data order).
        confidence: interval level.
    """
    from scipy.stats import t

    a, b = np.asarray(accuracy_a, dtype=np.float64), np.asarray(accuracy_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired_t_interval: expected two (seeds,) arrays of one length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"paired_t_interval: needs at least 2 paired seeds, got {len(a)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    differences = a - b
    df = len(differences) - 1
    standard_error = float(differences.std(ddof=1) / np.sqrt(len(differences)))
    half_width = float(t.ppf(0.5 + confidence / 2, df)) * standard_error
    estimate = float(differences.mean())
    return TInterval(estimate, estimate - half_width, estimate + half_width, confidence, df, standard_error,
                     f"Student t interval of the mean of {len(differences)} per-seed differences (seeds paired), "
                     f"{df} degrees of freedom")


def minimum_detectable_effect(low: float, high: float, df: int | None = None, confidence: float = DEFAULT_CONFIDENCE,
                              power: float = 0.8) -> float:
    """The smallest true difference that a two-sided test at ``confidence`` finds with probability ``power``, given
    an interval ``[low, high]`` at that confidence: ``(q(1 - alpha / 2) + q(power)) x SE`` with ``SE = (high - low) /
    (2 q(1 - alpha / 2))``; ``q`` is Student's t quantile with ``df`` degrees of freedom, or the normal one
    (``df=None``, e.g. a bootstrap interval)."""
    from scipy.stats import norm, t

    quantile = norm.ppf if df is None else (lambda p: t.ppf(p, df))
    critical = float(quantile(0.5 + confidence / 2))
    return (critical + float(quantile(power))) * (high - low) / (2 * critical)
