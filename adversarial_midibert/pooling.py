"""How the segments of one piece combine into one answer for the piece: class probabilities and embeddings.

Written once for the ``midi-classification`` and ``midi-feature-extraction`` pipelines and the evaluation of sequence
tasks; it imports only torch, as the pipelines ship it as Hub remote code.
"""

from __future__ import annotations

import torch

__all__ = ["aggregate_segment_log_probs", "mean_note_embedding"]


def aggregate_segment_log_probs(log_probs: torch.Tensor, num_notes: torch.Tensor) -> torch.Tensor:
    """Combine the ``(S, C)`` class log-probabilities of one piece's segments into ``(C,)`` probabilities: softmax of
    their mean weighted by ``num_notes`` `(S,)` (a segment is one piece of evidence per note; a geometric mean lets
    one confident segment count more than an arithmetic mean of probabilities would). Without notes, equal weights."""
    weights = num_notes.to(log_probs.dtype).clamp(min=0)
    if weights.sum() <= 0:
        weights = torch.ones_like(weights)
    mean = (log_probs * weights[:, None]).sum(0) / weights.sum()
    return torch.softmax(mean, dim=-1)


def mean_note_embedding(note_vectors: torch.Tensor) -> torch.Tensor:
    """The piece's embedding, ``(H,)`` float32: the mean of its notes' vectors ``(N, H)``, from all its segments (no
    BOS, EOS or padding row), so every note counts once. ``ValueError`` when the piece has no note."""
    if note_vectors.ndim != 2 or note_vectors.shape[0] == 0:
        raise ValueError(f"a piece embedding needs at least one note vector, got shape {tuple(note_vectors.shape)}")
    return note_vectors.float().mean(0)
