"""How the segments of one piece combine into one answer for the piece: class probabilities and embeddings.

A piece longer than ``max_seq_len`` notes is cut into segments that run through the model separately. This module
says how their outputs are put back together, once for every user: the ``midi-classification`` and
``midi-feature-extraction`` pipelines, and the evaluation of sequence tasks. It imports only torch, because the
pipelines ship it as Hub remote code (beside ``pipelines.py``, see
:func:`adversarial_midibert.hub.remote_code.add_pipeline_code`).

- Class probabilities: :func:`aggregate_segment_log_probs`, the note-weighted mean of the segments'
  log-probabilities (a geometric mean), then softmax.
- Embeddings: :func:`mean_note_embedding`, the mean of the note vectors of the last hidden layer (BOS, EOS and
  padding rows excluded). For a piece of several segments this is the mean of the segments' note means weighted
  by their notes: every note counts once, whichever segment it fell in.
"""

from __future__ import annotations

import torch

__all__ = ["aggregate_segment_log_probs", "mean_note_embedding"]


def aggregate_segment_log_probs(log_probs: torch.Tensor, num_notes: torch.Tensor) -> torch.Tensor:
    """Combine per-segment class log-probabilities into one distribution per piece.

    Args:
        log_probs: ``(S, C)`` log-probabilities of the ``S`` segments of one piece.
        num_notes: ``(S,)`` notes per segment (the weights).

    Returns:
        ``(C,)`` probabilities: softmax of the note-weighted mean of the log-probabilities. A segment is one piece
        of evidence per note it holds, so a short trailing segment counts little; a geometric (log) mean lets one
        confident segment move the result more than an arithmetic mean of probabilities would. When no segment
        has notes, the segments count equally.
    """
    weights = num_notes.to(log_probs.dtype).clamp(min=0)
    if weights.sum() <= 0:
        weights = torch.ones_like(weights)
    mean = (log_probs * weights[:, None]).sum(0) / weights.sum()
    return torch.softmax(mean, dim=-1)


def mean_note_embedding(note_vectors: torch.Tensor) -> torch.Tensor:
    """The piece's embedding: the mean of its notes' vectors.

    Args:
        note_vectors: ``(N, H)`` one vector per note of the piece, from all its segments (no BOS/EOS/padding row).

    Returns:
        ``(H,)`` float32. Raises ``ValueError`` when the piece has no note (the mean is undefined).
    """
    if note_vectors.ndim != 2 or note_vectors.shape[0] == 0:
        raise ValueError(f"a piece embedding needs at least one note vector, got shape {tuple(note_vectors.shape)}")
    return note_vectors.float().mean(0)
