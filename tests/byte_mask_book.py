"""The byte-per-position mask book the tests check :class:`~adversarial_midibert.mask_book.PackedMaskBook` against:
the plainest form of the mask book of docs/method.md 3.1, one byte per position in a tensor."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F

from adversarial_midibert.mask_book import _check_range


class MaskBook:
    """A 0/1 flag per (training segment, position): 1 = may be masked, 0 = frozen (docs/method.md 3.1), one byte each.

    Rows are indexed by the dataset's ``segment_id`` column. The book starts all ones; whether a position is a
    real note is decided by :func:`adversarial_midibert.masking.maskable_positions` at use time, so padding, BOS
    and EOS are never maskable whatever the book says.

    Args:
        num_segments (`int`): number of training segments (rows).
        max_len (`int`): longest segment, BOS and EOS included (columns).
        segment_lengths (`torch.Tensor` of shape `(num_segments,)`, *optional*): rows of each segment, BOS and
            EOS included (the sum of its attention mask). Only used by :meth:`frozen_fraction` to count real notes
            (positions ``1 .. length - 2``); without it every position counts.
        device (`torch.device` or `str`): where the book lives (the training device keeps row look-ups cheap).
    """

    def __init__(
        self,
        num_segments: int,
        max_len: int,
        segment_lengths: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ):
        if num_segments < 1 or max_len < 1:
            raise ValueError(f"MaskBook needs num_segments >= 1 and max_len >= 1, got {num_segments}, {max_len}")
        self.book = torch.ones(num_segments, max_len, dtype=torch.uint8, device=device)
        if segment_lengths is not None:
            segment_lengths = torch.as_tensor(segment_lengths, dtype=torch.long).reshape(-1)
            if segment_lengths.numel() != num_segments:
                raise ValueError(
                    f"segment_lengths has {segment_lengths.numel()} entries for {num_segments} segments"
                )
            if bool((segment_lengths > max_len).any()):
                raise ValueError(f"a segment length exceeds max_len={max_len}: {int(segment_lengths.max())}")
            segment_lengths = segment_lengths.to(device)
        self.segment_lengths = segment_lengths

    @property
    def num_segments(self) -> int:
        return self.book.shape[0]

    @property
    def max_len(self) -> int:
        return self.book.shape[1]

    @property
    def device(self) -> torch.device:
        return self.book.device

    def to(self, device: torch.device | str) -> MaskBook:
        """Move the book (in place) and return it."""
        self.book = self.book.to(device)
        if self.segment_lengths is not None:
            self.segment_lengths = self.segment_lengths.to(device)
        return self

    def _check_ids(self, segment_ids: torch.Tensor) -> torch.Tensor:
        segment_ids = torch.as_tensor(segment_ids).reshape(-1).to(device=self.device, dtype=torch.long)
        if segment_ids.numel():
            _check_range(int(segment_ids.min()), int(segment_ids.max()), self.num_segments)
        return segment_ids

    def rows(self, segment_ids: torch.Tensor, length: int) -> torch.Tensor:
        """The book rows of a batch, cut or padded (with 1) to ``length`` columns, as bool `(B, length)`."""
        ids = self._check_ids(segment_ids)
        rows = self.book.index_select(0, ids)[:, :length].bool()
        if rows.shape[1] < length:
            rows = F.pad(rows, (0, length - rows.shape[1]), value=True)
        return rows

    def set_rows(self, segment_ids: torch.Tensor, rows: torch.Tensor, notes: torch.Tensor | None = None) -> None:
        """Overwrite the first ``rows.shape[1]`` columns of the given segments (later duplicates win).

        ``notes`` (real notes per row) is accepted for the interface of :class:`PackedMaskBook` and not needed here
        (``segment_lengths`` counts the notes).
        """
        ids = self._check_ids(segment_ids)
        rows = rows.to(device=self.device, dtype=torch.uint8)
        width = min(rows.shape[1], self.max_len)
        self.book[ids, :width] = rows[:, :width]

    def frozen_fraction(self) -> float:
        """Fraction of the real notes (all positions without ``segment_lengths``) that are frozen."""
        frozen = self.book == 0
        if self.segment_lengths is None:
            return float(frozen.float().mean())
        pos = torch.arange(self.max_len, device=self.device)
        notes = (pos >= 1) & (pos < (self.segment_lengths - 1).unsqueeze(1))
        n = int(notes.sum())
        return float((frozen & notes).sum()) / n if n else 0.0

    def broadcast(self, accelerator: Any = None) -> None:
        """Copy rank 0's book to every process (no-op in a single process)."""
        if accelerator is None or accelerator.num_processes <= 1:
            return
        from accelerate.utils import broadcast

        book = self.book.to(accelerator.device)
        self.book = broadcast(book, from_process=0).to(self.device)

    def fingerprint(self) -> str:
        """A short hash of the book's content (to check that processes agree)."""
        return hashlib.sha256(self.book.cpu().numpy().tobytes()).hexdigest()[:16]

    def state_dict(self) -> dict:
        state = {"book": self.book.cpu().clone()}
        if self.segment_lengths is not None:
            state["segment_lengths"] = self.segment_lengths.cpu().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        book = state["book"]
        if tuple(book.shape) != tuple(self.book.shape):
            raise ValueError(
                f"mask book in the checkpoint has shape {tuple(book.shape)}, this run's training split needs "
                f"{tuple(self.book.shape)} (was the checkpoint made on another dataset?)"
            )
        self.book = book.to(device=self.device, dtype=torch.uint8).clone()
        if state.get("segment_lengths") is not None:
            self.segment_lengths = state["segment_lengths"].to(self.device)
