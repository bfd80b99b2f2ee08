"""Frozen-encoder features and linear probes: what a pre-trained encoder knows, measured without fine-tuning.

Probing (as MERT reports its results) trains only a linear classifier on the encoder's frozen representations, so
the figure reflects the representation rather than the fine-tuning recipe; it is cheap and has little variance of
its own, which makes it the sharp evaluation of a pre-training study.

- :func:`encode_dataset` runs an encoder over a tokenised split (rows of ``input_ids``, ``attention_mask``,
  ``labels``, ``piece_id``) and returns, for every real note, its last hidden state, its label and its piece, and for
  every piece the note-weighted mean of its notes' hidden states (the piece embedding; every segment of a long piece
  counts, weighted by its notes).
- :func:`fit_linear_probe` fits a multinomial logistic regression (scikit-learn) on standardised features and returns
  the per-piece correct/total counts on the evaluation features, ready for
  :mod:`adversarial_midibert.confidence_intervals`.
- :func:`cross_validated_piece_probe` does the same for one label per piece with stratified k-fold
  cross-validation, every piece predicted once by a probe that did not see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adversarial_midibert.constants import ATTRIBUTE_NAMES, IGNORE_INDEX, MASK_ID
from adversarial_midibert.data.collators import pad_octuple_batch
from adversarial_midibert.data.sampling import sample_pieces
from adversarial_midibert.evaluation import group_by_piece
from adversarial_midibert.masking import maskable_positions

__all__ = ["EncodedSplit", "encode_dataset", "fit_linear_probe", "cross_validated_piece_probe", "ProbeResult"]


@dataclass
class EncodedSplit:
    """Frozen features of one split.

    Attributes:
        note_features: ``(N, H)`` float32, one row per real note (padding, BOS and EOS left out).
        note_labels: ``(N,)`` int64 per-note labels (-100 where the note has none), or ``None`` for a split without
            token labels.
        note_piece: ``(N,)`` index into ``piece_ids`` of each note's piece.
        piece_ids: the split's pieces, in order of first appearance.
        piece_features: ``(P, H)`` note-weighted mean of each piece's note features.
        piece_labels: ``(P,)`` the piece's label for sequence tasks, else ``None``.
    """

    note_features: np.ndarray
    note_labels: np.ndarray | None
    note_piece: np.ndarray
    piece_ids: list[str]
    piece_features: np.ndarray
    piece_labels: np.ndarray | None


@torch.no_grad()
def encode_dataset(
    encoder: torch.nn.Module,
    split: Any,
    batch_size: int = 64,
    hidden_attributes: Sequence[str] = (),
    max_pieces: int | None = None,
    sample_seed: int = 0,
) -> EncodedSplit:
    """Run a frozen encoder over a tokenised split.

    Args:
        encoder: an ``AdvMidiBertModel`` (or any model whose output has ``last_hidden_state``), in eval mode here.
        split: a ``datasets.Dataset`` (or a list of rows) with ``input_ids``, ``attention_mask``, ``piece_id`` and
            optionally ``labels``; the segments of a piece are consecutive rows.
        batch_size: segments per forward pass.
        hidden_attributes: attribute names replaced by MASK at every note before encoding (e.g. ``["velocity"]``
            for velocity prediction, so that the representation cannot copy it).
        max_pieces: encode only the rows of N pieces drawn at random with ``sample_seed``
            (:func:`~adversarial_midibert.data.sampling.sample_pieces`; a split lists its pieces in sorted order, so
            the first N would be a biased sample).
        sample_seed: seed of that draw.

    Returns:
        :class:`EncodedSplit`.
    """
    hidden = [ATTRIBUTE_NAMES.index(name) for name in hidden_attributes]
    pieces = [row["piece_id"] for row in split] if isinstance(split, list) else list(split["piece_id"])
    piece_ids, _ = group_by_piece(pieces)
    if max_pieces is not None:
        kept = set(sample_pieces(piece_ids, max_pieces, seed=sample_seed, group=None))
        piece_ids = [p for p in piece_ids if p in kept]
    position = {p: i for i, p in enumerate(piece_ids)}
    rows = [i for i, p in enumerate(pieces) if p in position]
    row_piece = np.array([position[pieces[i]] for i in rows], dtype=np.int64)
    has_labels = "labels" in (split[0] if isinstance(split, list) else split.column_names)
    was_training = encoder.training
    encoder.eval()
    features, labels, owners = [], [], []
    piece_labels = np.full(len(piece_ids), IGNORE_INDEX, dtype=np.int64) if has_labels else None
    try:
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            batch_rows = [split[i] for i in rows[start:stop]]
            batch = pad_octuple_batch(batch_rows)
            input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
            notes = maskable_positions(input_ids, attention_mask)
            input_ids[..., hidden] = input_ids[..., hidden].masked_fill(notes[..., None], MASK_ID)  # notes only
            state = encoder(input_ids, attention_mask=attention_mask).last_hidden_state.float()
            features.append(state[notes].numpy())
            owner = torch.from_numpy(row_piece[start:stop]).unsqueeze(1).expand_as(notes)
            owners.append(owner[notes].numpy())
            if has_labels and batch["labels"].dim() == 2:
                labels.append(batch["labels"][notes].numpy())
            elif has_labels:
                piece_labels[row_piece[start:stop]] = [int(row["labels"]) for row in batch_rows]
    finally:
        encoder.train(was_training)
    note_features = np.concatenate(features).astype(np.float32)
    note_piece = np.concatenate(owners).astype(np.int64)
    count = np.bincount(note_piece, minlength=len(piece_ids)).astype(np.float64)
    piece_features = np.zeros((len(piece_ids), note_features.shape[1]), dtype=np.float64)
    np.add.at(piece_features, note_piece, note_features)
    piece_features = (piece_features / np.maximum(count, 1)[:, None]).astype(np.float32)
    return EncodedSplit(
        note_features=note_features,
        note_labels=np.concatenate(labels).astype(np.int64) if labels else None,
        note_piece=note_piece,
        piece_ids=piece_ids,
        piece_features=piece_features,
        piece_labels=piece_labels if not labels else None,  # sequence tasks: one label per piece
    )


@dataclass
class ProbeResult:
    """Per-piece counts of a probe on its evaluation pieces (``correct[p] / total[p]``), and the pooled accuracy."""

    piece_ids: list[str]
    correct: np.ndarray
    total: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / max(self.total.sum(), 1))

    def counts(self, level: str = "note") -> tuple[np.ndarray, np.ndarray]:
        """``(correct, total)`` per piece, as :meth:`~adversarial_midibert.evaluation.PieceResults.counts` gives them
        (for :func:`~adversarial_midibert.confidence_intervals.stack_piece_counts`); a probe scores notes only."""
        if level != "note":
            raise ValueError(f"a probe's counts are per note, not per {level}")
        return self.correct, self.total


def _probe(max_iter: int, seed: int, C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C, random_state=seed))


def fit_linear_probe(
    train: EncodedSplit, test: EncodedSplit, max_iter: int = 300, seed: int = 0, C: float = 1.0
) -> ProbeResult:
    """A per-note linear probe: logistic regression on standardised frozen features of ``train``'s labelled notes,
    scored on every labelled note of ``test``.

    Returns:
        :class:`ProbeResult` with, per test piece, the correctly classified notes and the labelled notes.
    """
    if train.note_labels is None or test.note_labels is None:
        raise ValueError("fit_linear_probe needs per-note labels in both splits (a token task)")
    keep = train.note_labels != IGNORE_INDEX
    probe = _probe(max_iter, seed, C).fit(train.note_features[keep], train.note_labels[keep])
    scored = test.note_labels != IGNORE_INDEX
    hit = probe.predict(test.note_features[scored]) == test.note_labels[scored]
    owners = test.note_piece[scored]
    pieces = len(test.piece_ids)
    return ProbeResult(test.piece_ids, np.bincount(owners, weights=hit, minlength=pieces),
                       np.bincount(owners, minlength=pieces).astype(np.float64))


def cross_validated_piece_probe(
    encoded: EncodedSplit, folds: int = 5, seed: int = 0, max_iter: int = 1000, C: float = 1.0
) -> ProbeResult:
    """One label per piece: stratified ``folds``-fold cross-validation of a logistic regression on the piece
    embeddings; every piece is predicted once, by the probe of the fold that left it out.

    Returns:
        :class:`ProbeResult` with ``correct`` 0/1 and ``total`` 1 per piece.
    """
    from sklearn.model_selection import StratifiedKFold

    if encoded.piece_labels is None:
        raise ValueError("cross_validated_piece_probe needs one label per piece (a sequence task)")
    x, y = encoded.piece_features, encoded.piece_labels
    predicted = np.full(len(y), -1)
    for train_index, test_index in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        predicted[test_index] = _probe(max_iter, seed, C).fit(x[train_index], y[train_index]).predict(x[test_index])
    return ProbeResult(encoded.piece_ids, (predicted == y).astype(np.float64), np.ones(len(y)))
