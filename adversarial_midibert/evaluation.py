"""Classification metrics for fine-tuning: accuracy and macro-F1 as ``evaluate`` metrics, token masks, piece-level
results, confusion matrix (scikit-learn).

:class:`Accuracy` and :class:`F1` are here because ``evaluate.load("accuracy")`` fetches a script from the Hub and
fails offline. Token tasks are scored over real notes only (:func:`token_metric_mask`); macro-F1 averages over every
label of the task. :class:`PieceResults` holds the per-piece figures (``*_piece_results.json``) that
:mod:`adversarial_midibert.confidence_intervals` resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch

from .constants import IGNORE_INDEX


class _ClassIdMetric(evaluate.Metric):
    """An ``evaluate`` metric over integer class ids: a subclass gives its ``description`` and ``_compute``."""

    description = ""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.description, citation="", inputs_description="predictions, references: class ids.",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))


class Accuracy(_ClassIdMetric):
    """``evaluate``'s ``accuracy``, offline: ``compute(predictions, references)`` -> ``{"accuracy": float}``."""

    description = "Accuracy: the fraction of predictions equal to their reference label."

    def _compute(self, predictions, references):
        from sklearn.metrics import accuracy_score

        return {"accuracy": float(accuracy_score(references, predictions)) if len(references) else float("nan")}


class F1(_ClassIdMetric):
    """``evaluate``'s ``f1``, offline: ``compute(predictions, references, labels=None, average="macro")`` ->
    ``{"f1": float}``; a label in ``labels`` neither predicted nor present scores 0."""

    description = "F1 score, the harmonic mean of precision and recall, averaged over classes."

    def _compute(self, predictions, references, labels=None, average="macro"):
        from sklearn.metrics import f1_score

        if not len(references):
            return {"f1": float("nan")}
        return {"f1": float(f1_score(references, predictions, labels=labels, average=average, zero_division=0))}


def accuracy_and_macro_f1(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> dict[str, float]:
    """``{"accuracy", "f1_macro"}`` through :class:`Accuracy` and :class:`F1`; macro-F1 over every label id in
    ``range(num_labels)`` (a class neither predicted nor present scores 0). Both are NaN when nothing was scored."""
    predictions, references = list(map(int, predictions)), list(map(int, references))
    return {"accuracy": Accuracy().compute(predictions=predictions, references=references)["accuracy"],
            "f1_macro": F1().compute(predictions=predictions, references=references,
                                     labels=list(range(num_labels)), average="macro")["f1"]}


def token_metric_mask(labels, masked_positions=None) -> torch.Tensor | np.ndarray:
    """Positions that count for a token task's loss and metrics: bool ``(B, L)`` of the same kind as ``labels``
    (``(B, L)`` class ids, ``-100`` where not scored), True where the note is real and not in ``masked_positions``
    (optional bool ``(B, L)`` or ``(B, L, 8)``: what mask fine-tuning replaced by MASK, docs/method.md section 4)."""
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
    """``(predictions, references)`` at the scored positions (:func:`token_metric_mask`), as 1-D int64 arrays.

    ``predictions`` are ``(B,)`` (sequence tasks) or ``(B, L)`` (token tasks) class ids; ``labels`` the same shape.
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
    """Counts ``(num_labels, num_labels)``: row = true class, column = predicted class; ids outside
    ``[0, num_labels)`` are refused."""
    from sklearn.metrics import confusion_matrix as counts

    predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
    for name, values in (("predictions", predictions), ("references", references)):  # scikit-learn drops them silently
        if values.size and (values.min() < 0 or values.max() >= num_labels):
            raise ValueError(f"{name} hold class ids outside [0, {num_labels}): min {values.min()}, max {values.max()}")
    return counts(references, predictions, labels=np.arange(num_labels))


def plot_confusion_matrix(matrix: np.ndarray, label_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write ``matrix`` (``(C, C)`` counts) as a PNG at ``path`` and return it: colours are row-normalised (recall
    per class), cells show counts, axes are named by ``label_names``."""
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


# ----------------------------------------------------------------------------------------------- pieces
def group_by_piece(piece_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(pieces, index)``: the distinct piece ids in order of first appearance and, per row, its piece's position."""
    positions: dict[str, int] = {}
    index = np.fromiter((positions.setdefault(str(p), len(positions)) for p in piece_ids), dtype=np.int64,
                        count=len(piece_ids))
    return list(positions), index


def aggregate_by_piece(log_probs: np.ndarray, piece_index: np.ndarray, num_notes: np.ndarray) -> np.ndarray:
    """:func:`~adversarial_midibert.pooling.aggregate_segment_log_probs` for every piece at once: ``(P, C)``
    probabilities from ``(N, C)`` segment log-probabilities, each segment's piece position ``(N,)`` (see
    :func:`group_by_piece`) and notes ``(N,)``."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    piece_index = np.asarray(piece_index, dtype=np.int64)
    num_pieces = int(piece_index.max()) + 1 if len(piece_index) else 0
    weights = np.clip(np.asarray(num_notes, dtype=np.float64), 0, None)
    weight_sums = np.bincount(piece_index, weights=weights, minlength=num_pieces)
    unweighted = weight_sums[piece_index] <= 0  # pieces without notes: segments count equally, as for one piece
    weights = np.where(unweighted, 1.0, weights)
    weight_sums = np.bincount(piece_index, weights=weights, minlength=num_pieces)
    sums = np.zeros((num_pieces, log_probs.shape[1]))
    np.add.at(sums, piece_index, log_probs * weights[:, None])
    mean = sums / weight_sums[:, None]
    mean -= mean.max(axis=1, keepdims=True)
    probs = np.exp(mean)
    return probs / probs.sum(axis=1, keepdims=True)


@dataclass
class PieceResults:
    """Per-piece results of one evaluated split.

    Attributes:
        piece_ids: ``P`` piece ids (order of first appearance in the split).
        num_segments: ``(P,)`` segments per piece.
        num_notes: ``(P,)`` sequence tasks: notes in the piece's segments; token tasks: scored notes (real notes,
            not replaced by mask fine-tuning).
        num_correct: ``(P,)`` sequence tasks: correctly classified segments; token tasks: correctly classified notes.
        labels: ``(P,)`` sequence tasks: the piece's label (``None`` for token tasks).
        predictions: ``(P,)`` sequence tasks: the piece's predicted label from the aggregated probabilities.
        probabilities: ``(P, C)`` sequence tasks: the aggregated class probabilities.
        confusion: ``(P, C, C)`` token tasks: the piece's scored notes counted by label (rows) and prediction.
    """

    piece_ids: list[str]
    num_segments: np.ndarray
    num_notes: np.ndarray
    num_correct: np.ndarray
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    confusion: np.ndarray | None = None

    @property
    def is_sequence(self) -> bool:
        return self.labels is not None

    def __len__(self) -> int:
        return len(self.piece_ids)

    def counts(self, level: str = "piece") -> tuple[np.ndarray, np.ndarray]:
        """``(correct, total)`` per piece for a bootstrap (:mod:`adversarial_midibert.confidence_intervals`) at
        ``level`` ``"piece"`` (sequence tasks, 0/1 per piece), ``"segment"`` (sequence tasks) or ``"note"`` (token
        tasks)."""
        if level == "piece" and self.is_sequence:
            return (self.predictions == self.labels).astype(np.int64), np.ones(len(self), dtype=np.int64)
        if level == "segment" and self.is_sequence:
            return self.num_correct, self.num_segments
        if level == "note" and not self.is_sequence:
            return self.num_correct, self.num_notes
        kind = "sequence" if self.is_sequence else "token"
        raise ValueError(f"level {level!r} does not apply to a {kind} task (sequence: piece, segment; token: note)")

    def compute(self, num_labels: int, prefix: str = "") -> dict[str, float]:
        """``{prefix}num_pieces`` and, for sequence tasks, ``{prefix}piece_accuracy`` and ``{prefix}piece_f1_macro``
        (a token task's note accuracy is the evaluator's)."""
        out: dict[str, float] = {f"{prefix}num_pieces": len(self)}
        if self.is_sequence:
            scores = accuracy_and_macro_f1(self.predictions, self.labels, num_labels)
            out[f"{prefix}piece_accuracy"], out[f"{prefix}piece_f1_macro"] = scores["accuracy"], scores["f1_macro"]
        return out

    def records(self, label_names: Sequence[str] | None = None) -> list[dict]:
        """One JSON-ready dict per piece (what ``*_piece_results.json`` holds)."""
        out = []
        for i, piece in enumerate(self.piece_ids):
            row = {"piece_id": piece, "num_segments": int(self.num_segments[i])}
            if self.is_sequence:
                names = list(label_names) if label_names is not None else [str(c)
                                                                           for c in range(self.probabilities.shape[1])]
                label, prediction = int(self.labels[i]), int(self.predictions[i])
                row.update(
                    label=names[label], label_id=label, predicted=names[prediction], predicted_id=prediction,
                    correct=label == prediction, num_notes=int(self.num_notes[i]),
                    num_correct_segments=int(self.num_correct[i]),
                    probabilities={n: round(float(p), 6) for n, p in zip(names, self.probabilities[i])},
                )
            else:
                row.update(num_scored_notes=int(self.num_notes[i]), num_correct_notes=int(self.num_correct[i]))
                if self.confusion is not None:
                    row["confusion"] = self.confusion[i].tolist()
            out.append(row)
        return out

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> PieceResults:
        """Read back :meth:`records` (the per-piece counts; probabilities in the records' label order)."""
        if not records:
            raise ValueError("no piece records")
        ids = [str(r["piece_id"]) for r in records]
        segments = np.array([r["num_segments"] for r in records], dtype=np.int64)
        if "label_id" in records[0]:
            return cls(ids, segments, np.array([r["num_notes"] for r in records], dtype=np.int64),
                       np.array([r["num_correct_segments"] for r in records], dtype=np.int64),
                       labels=np.array([r["label_id"] for r in records], dtype=np.int64),
                       predictions=np.array([r["predicted_id"] for r in records], dtype=np.int64),
                       probabilities=np.array([list(r["probabilities"].values()) for r in records], dtype=np.float64))
        return cls(ids, segments, np.array([r["num_scored_notes"] for r in records], dtype=np.int64),
                   np.array([r["num_correct_notes"] for r in records], dtype=np.int64),
                   confusion=np.array([r["confusion"] for r in records], dtype=np.int64)
                   if "confusion" in records[0] else None)


def piece_results(
    piece_ids: Sequence[str],
    scored: np.ndarray,
    correct: np.ndarray,
    num_notes: np.ndarray,
    labels: np.ndarray | None = None,
    log_probs: np.ndarray | None = None,
    notes: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> PieceResults:
    """Group per-segment results by piece: a sequence task's :class:`PieceResults` when ``log_probs`` is given, a
    token task's otherwise.

    Args:
        piece_ids: ``(N,)`` the piece of every segment, in the order of the other arrays.
        scored: ``(N,)`` scored predictions per segment (1 per labelled segment, or scored notes).
        correct: ``(N,)`` correct predictions per segment.
        num_notes: ``(N,)`` notes per segment (the weights of the aggregation).
        labels: ``(N,)`` sequence tasks: the segment labels (all segments of a piece share it).
        log_probs: ``(N, C)`` sequence tasks: the segments' class log-probabilities.
        notes: token tasks: the scored notes' labels and predictions (segment by segment, ``scored`` of each) and the
            number of classes, counted per piece in ``confusion``.
    """
    if len(piece_ids) != len(scored):
        raise ValueError(f"{len(piece_ids)} piece ids for {len(scored)} evaluated segments: the evaluation rows must "
                         "be the split's rows in order (unshuffled loader, gather_for_metrics)")
    pieces, index = group_by_piece(piece_ids)
    count = len(pieces)
    num_segments = np.bincount(index, minlength=count)
    if log_probs is None:
        confusion = None
        if notes is not None:
            note_labels, note_predictions, num_labels = notes
            confusion = np.zeros((count, num_labels, num_labels), dtype=np.int64)
            np.add.at(confusion, (np.repeat(index, np.asarray(scored, dtype=np.int64)), note_labels, note_predictions),
                      1)
        return PieceResults(pieces, num_segments, np.bincount(index, weights=scored, minlength=count).astype(np.int64),
                            np.bincount(index, weights=correct, minlength=count).astype(np.int64), confusion=confusion)
    labels = np.asarray(labels, dtype=np.int64)
    piece_labels = np.zeros(count, dtype=np.int64)
    piece_labels[index] = labels
    if (piece_labels[index] != labels).any():
        bad = sorted({pieces[i] for i in index[piece_labels[index] != labels]})
        raise ValueError(f"segments of one piece carry different labels: {bad[:5]}")
    probabilities = aggregate_by_piece(log_probs, index, num_notes)
    return PieceResults(pieces, num_segments, np.bincount(index, weights=num_notes, minlength=count).astype(np.int64),
                        np.bincount(index, weights=correct, minlength=count).astype(np.int64),
                        labels=piece_labels, predictions=probabilities.argmax(1), probabilities=probabilities)


class ClassificationEvaluator:
    """Collect predictions batch by batch (:meth:`add_batch`, gathered tensors, the split's rows in order), then
    compute accuracy and macro-F1, piece results and the confusion matrix; ``label_names`` (default ``"0"``,
    ``"1"``...) name the classes of :meth:`plot`.
    """

    def __init__(self, num_labels: int, label_names: Sequence[str] | None = None):
        self.num_labels = int(num_labels)
        self.label_names = list(label_names) if label_names is not None else [str(i) for i in range(num_labels)]
        if len(self.label_names) != self.num_labels:
            raise ValueError(f"{len(self.label_names)} label names given for {self.num_labels} labels")
        self._predictions: list[np.ndarray] = []
        self._references: list[np.ndarray] = []
        self._rows: dict[str, list[np.ndarray]] = {"scored": [], "correct": [], "labels": [], "num_notes": [],
                                                   "log_probs": []}
        self._is_sequence = False

    def add_batch(self, predictions, labels, masked_positions=None, log_probs=None, num_notes=None) -> None:
        """Add one batch.

        Args:
            predictions: ``(B,)`` or ``(B, L)`` predicted class ids.
            labels: same shape, ``-100`` where not scored.
            masked_positions: optional bool ``(B, L)``: mask-fine-tuning positions, not scored.
            log_probs: optional ``(B, C)`` class log-probabilities (sequence tasks; needed by :meth:`piece_results`).
            num_notes: optional ``(B,)`` notes per segment (the weights of the piece aggregation).
        """
        preds, refs = select_scored(predictions, labels, masked_positions)
        self._predictions.append(preds)
        self._references.append(refs)
        predictions, labels, masked_positions, log_probs, num_notes = (
            x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
            for x in (predictions, labels, masked_positions, log_probs, num_notes)
        )
        predictions, labels = np.asarray(predictions), np.asarray(labels)
        self._is_sequence = labels.ndim == 1
        keep = token_metric_mask(labels, masked_positions)
        hits = keep & (predictions == labels)
        if keep.ndim == 2:
            keep, hits = keep.sum(1), hits.sum(1)
        self._rows["scored"].append(np.asarray(keep, dtype=np.int64))
        self._rows["correct"].append(np.asarray(hits, dtype=np.int64))
        self._rows["labels"].append(labels if labels.ndim == 1 else np.zeros(len(labels), dtype=np.int64))
        self._rows["num_notes"].append(np.asarray(num_notes if num_notes is not None else keep, dtype=np.int64))
        if log_probs is not None:
            self._rows["log_probs"].append(np.asarray(log_probs, dtype=np.float64))

    @property
    def predictions(self) -> np.ndarray:
        return np.concatenate(self._predictions) if self._predictions else np.zeros(0, dtype=np.int64)

    @property
    def references(self) -> np.ndarray:
        return np.concatenate(self._references) if self._references else np.zeros(0, dtype=np.int64)

    def compute(self, prefix: str = "") -> dict[str, float]:
        """``{prefix+"accuracy", prefix+"f1_macro"}`` (:func:`accuracy_and_macro_f1`), e.g. ``prefix="eval_"``."""
        scores = accuracy_and_macro_f1(self.predictions, self.references, self.num_labels)
        return {f"{prefix}{name}": value for name, value in scores.items()}

    def piece_results(self, piece_ids: Sequence[str]) -> PieceResults:
        """Group what was added by piece (:func:`piece_results`); ``piece_ids``: the split's column, in order."""
        rows = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in self._rows.items()}
        sequence = self._is_sequence
        if sequence and len(rows["log_probs"]) != len(rows["scored"]):
            raise ValueError("piece results of a sequence task need the log_probs of every batch "
                             "(add_batch(log_probs=))")
        return piece_results(piece_ids, rows["scored"], rows["correct"], rows["num_notes"],
                             labels=rows["labels"] if sequence else None,
                             log_probs=rows["log_probs"] if sequence else None,
                             notes=None if sequence else (self.references, self.predictions, self.num_labels))

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
