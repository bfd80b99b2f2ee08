"""Classification metrics for fine-tuning: accuracy and macro-F1 as ``evaluate`` modules, token masks, confusion matrix.

Why local metric modules. ``evaluate`` (0.4.x) ships no metric scripts: ``evaluate.load("accuracy")``
downloads the script from the Hub Space ``evaluate-metric/accuracy`` and fails with
``FileNotFoundError`` under ``HF_HUB_OFFLINE=1`` unless it was cached before. ``evaluate.load`` can also
read a local script, but it copies that file alone into its module cache and takes the first
``EvaluationModule`` class it finds, so every metric would need its own dependency-free file. The two
metrics the project reports are therefore defined here as ordinary :class:`evaluate.Metric` subclasses:
they have the whole ``evaluate`` interface (``add_batch``, ``compute``, ``evaluate.combine``), work
offline, and give the same numbers as the Hub scripts (both call scikit-learn).

Token tasks are scored over real notes only: positions labelled ``-100`` (BOS, EOS, padding, ignored
notes) and positions that mask fine-tuning replaced by MASK (SPEC section 4) are left out, see
:func:`token_metric_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch

IGNORE_INDEX = -100

_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to the reference (``evaluate``'s ``accuracy``, offline).

    ``compute(predictions, references, sample_weight=None)`` returns ``{"accuracy": float}``.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy: the fraction of predictions equal to their reference label.",
            citation="",
            inputs_description="predictions, references: lists of integer class ids.",
            features=_FEATURES,
        )

    def _compute(self, predictions, references, sample_weight=None):
        from sklearn.metrics import accuracy_score

        if len(references) == 0:
            return {"accuracy": float("nan")}
        return {"accuracy": float(accuracy_score(references, predictions, sample_weight=sample_weight))}


class F1(evaluate.Metric):
    """F1 score (``evaluate``'s ``f1``, offline); ``average="macro"`` is the unweighted mean over classes.

    ``compute(predictions, references, labels=None, average="macro")`` returns ``{"f1": float}``.
    ``labels`` lists the class ids to average over (default: those seen in predictions or references).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="F1 score, the harmonic mean of precision and recall, averaged over classes.",
            citation="",
            inputs_description="predictions, references: lists of integer class ids.",
            features=_FEATURES,
        )

    def _compute(self, predictions, references, labels=None, average="macro"):
        from sklearn.metrics import f1_score

        if len(references) == 0:
            return {"f1": float("nan")}
        score = f1_score(references, predictions, labels=labels, average=average, zero_division=0)
        return {"f1": float(score) if np.ndim(score) == 0 else score.tolist()}


_LOCAL_METRICS = {"accuracy": Accuracy, "f1": F1}


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """Load an ``evaluate`` metric that works offline.

    Args:
        name: ``"accuracy"`` or ``"f1"`` (defined in this module); any other name is passed to
            ``evaluate.load`` (which then needs the Hub or its cache).
        **kwargs: passed to the metric's constructor (``experiment_id``, ``num_process``...).
    """
    if name in _LOCAL_METRICS:
        return _LOCAL_METRICS[name](**kwargs)
    return evaluate.load(name, **kwargs)


def token_metric_mask(labels, masked_positions=None) -> torch.Tensor | np.ndarray:
    """Positions that count for a token task's loss and metrics.

    Args:
        labels: ``(B, L)`` class ids with ``-100`` at BOS/EOS/padding/ignored notes (tensor or array).
        masked_positions: optional bool ``(B, L)`` (or ``(B, L, 8)``, reduced with any over the last
            axis): positions that mask fine-tuning replaced by MASK. They are left out (SPEC section 4).

    Returns:
        bool ``(B, L)`` of the same kind as ``labels``: True where the note is real and was not masked.
    """
    keep = labels != IGNORE_INDEX
    if masked_positions is not None:
        if masked_positions.ndim == keep.ndim + 1:
            masked_positions = masked_positions.any(-1)
        if masked_positions.shape != keep.shape:
            raise ValueError(
                f"masked_positions has shape {tuple(masked_positions.shape)}, expected {tuple(keep.shape)} like labels"
            )
        keep = keep & ~masked_positions
    return keep


def select_scored(predictions, labels, masked_positions=None) -> tuple[np.ndarray, np.ndarray]:
    """Flatten predictions and references to the scored positions.

    Args:
        predictions: ``(B,)`` for sequence tasks or ``(B, L)`` for token tasks, predicted class ids.
        labels: same shape as ``predictions``; ``-100`` marks positions not scored.
        masked_positions: optional bool ``(B, L)`` of mask-fine-tuning positions (token tasks), left out.

    Returns:
        ``(predictions, references)`` as 1-D int64 numpy arrays.
    """
    if isinstance(predictions, torch.Tensor):
        predictions = predictions.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(masked_positions, torch.Tensor):
        masked_positions = masked_positions.detach().cpu().numpy()
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    keep = token_metric_mask(labels, masked_positions)
    return predictions[keep].astype(np.int64), labels[keep].astype(np.int64)


def confusion_matrix(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> np.ndarray:
    """Counts ``(num_labels, num_labels)``: row = true class, column = predicted class.

    Args:
        predictions: predicted class ids.
        references: true class ids (same length).
        num_labels: number of classes; ids must lie in ``[0, num_labels)``.
    """
    predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
    for name, values in (("predictions", predictions), ("references", references)):
        if values.size and (values.min() < 0 or values.max() >= num_labels):
            raise ValueError(f"{name} hold class ids outside [0, {num_labels}): min {values.min()}, max {values.max()}")
    flat = np.bincount(references * num_labels + predictions, minlength=num_labels * num_labels)
    return flat.reshape(num_labels, num_labels)


def plot_confusion_matrix(matrix: np.ndarray, label_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write a confusion matrix PNG: colours are row-normalised (recall per class), cells show counts.

    Args:
        matrix: ``(C, C)`` counts from :func:`confusion_matrix`.
        label_names: ``C`` class names for the axes.
        path: output PNG file (parent folders are created).
        title: figure title (e.g. the task and the test accuracy).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    if matrix.shape != (len(label_names), len(label_names)):
        raise ValueError(f"confusion matrix shape {matrix.shape} does not match {len(label_names)} label names")
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = 2.5 + 0.6 * len(label_names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(label_names))
    ax.set_xticks(ticks, labels=list(label_names), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(label_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if len(label_names) <= 20:
        for (row, col), count in np.ndenumerate(matrix):
            colour = "white" if normalised[row, col] > 0.5 else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class ClassificationEvaluator:
    """Collect predictions batch by batch, then compute accuracy, macro-F1 and the confusion matrix.

    Args:
        num_labels: number of classes.
        label_names: class names (default ``"0"``, ``"1"``...), used by :meth:`plot`.

    Call :meth:`add_batch` with already gathered tensors (``accelerator.gather_for_metrics``), then
    :meth:`compute`.
    """

    def __init__(self, num_labels: int, label_names: Sequence[str] | None = None):
        self.num_labels = int(num_labels)
        self.label_names = list(label_names) if label_names is not None else [str(i) for i in range(num_labels)]
        if len(self.label_names) != self.num_labels:
            raise ValueError(f"{len(self.label_names)} label names given for {self.num_labels} labels")
        self._predictions: list[np.ndarray] = []
        self._references: list[np.ndarray] = []

    def add_batch(self, predictions, labels, masked_positions=None) -> None:
        """Add one batch.

        Args:
            predictions: ``(B,)`` or ``(B, L)`` predicted class ids.
            labels: same shape, ``-100`` where not scored.
            masked_positions: optional bool ``(B, L)``: mask-fine-tuning positions, not scored.
        """
        preds, refs = select_scored(predictions, labels, masked_positions)
        self._predictions.append(preds)
        self._references.append(refs)

    @property
    def predictions(self) -> np.ndarray:
        return np.concatenate(self._predictions) if self._predictions else np.zeros(0, dtype=np.int64)

    @property
    def references(self) -> np.ndarray:
        return np.concatenate(self._references) if self._references else np.zeros(0, dtype=np.int64)

    def compute(self, prefix: str = "") -> dict[str, float]:
        """Return ``{prefix+"accuracy", prefix+"f1_macro"}`` through the ``evaluate`` modules (see :attr:`num_scored`).

        Args:
            prefix: prepended to every key (``"eval_"``, ``"test_"``).
        """
        preds, refs = self.predictions.tolist(), self.references.tolist()
        accuracy = load_metric("accuracy").compute(predictions=preds, references=refs)["accuracy"]
        f1 = load_metric("f1").compute(predictions=preds, references=refs, average="macro")["f1"]
        return {f"{prefix}accuracy": accuracy, f"{prefix}f1_macro": f1}

    @property
    def num_scored(self) -> int:
        """How many predictions (segments, or notes for token tasks) were scored."""
        return int(sum(len(r) for r in self._references))

    def confusion_matrix(self) -> np.ndarray:
        """Counts ``(C, C)``: row = true class, column = predicted class."""
        return confusion_matrix(self.predictions, self.references, self.num_labels)

    def plot(self, path: str | Path, title: str = "") -> Path:
        """Write the confusion matrix PNG (see :func:`plot_confusion_matrix`)."""
        return plot_confusion_matrix(self.confusion_matrix(), self.label_names, path, title=title)
