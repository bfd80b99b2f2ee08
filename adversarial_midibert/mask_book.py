"""The mask book of adversarial pre-training (docs/method.md 3.1): which notes of each training segment may be masked.

A 0/1 flag per (training segment, position), indexed by the dataset's ``segment_id``: 1 = may be masked, 0 = frozen
by a freezing pass. Padding, BOS and EOS are never masked whatever a book says
(:func:`adversarial_midibert.masking.maskable_positions`). :class:`PackedMaskBook` keeps one bit per position, in
memory or on disk (tested against a byte-per-position book, ``tests/byte_mask_book.py``); :class:`MaskerScoreCache`
keeps each segment's masker scores from its previous visit, for ``masker_scores_from="cache"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .atomic_io import atomic_write_json

__all__ = ["MaskerScoreCache", "PackedMaskBook"]


def _check_range(low: int, high: int, num_segments: int, what: str = "mask book") -> None:
    """Raise an ``IndexError`` naming the range when segment ids ``low .. high`` are not all in the book."""
    if low < 0 or high >= num_segments:
        raise IndexError(f"segment_id out of range for a {what} of {num_segments} segments: min {low}, max {high} "
                         "(is this batch from the training split?)")


def _segment_ids(segment_ids: Any, num_segments: int, what: str = "mask book") -> np.ndarray:
    """The ids as int64 numpy, checked with :func:`_check_range`."""
    ids = np.asarray(torch.as_tensor(segment_ids).reshape(-1).cpu(), dtype=np.int64)
    if ids.size:
        _check_range(int(ids.min()), int(ids.max()), num_segments, what)
    return ids


def _check_saved_size(state: dict, num_segments: int, max_len: int, what: str) -> None:
    """Raise a ``ValueError`` when a saved state's size is not this run's (a checkpoint of another dataset)."""
    if (state["num_segments"], state["max_len"]) != (num_segments, max_len):
        raise ValueError(f"{what} in the checkpoint has {state['num_segments']} segments of {state['max_len']} rows, "
                         f"this run's training split needs {num_segments} x {max_len} (was the checkpoint made on "
                         "another dataset?)")


def _last_occurrences(ids: np.ndarray) -> np.ndarray:
    """Indices of the last occurrence of each distinct id (a batch that names a segment twice: the last row wins)."""
    return len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]


# A 256-entry table: set bits of each byte value.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


class PackedMaskBook:
    """The mask book with one bit per position, off the accelerator: in memory, or on disk and read per batch.

    The bits record the *frozen* positions (1 = frozen), so a book (or a sparse file) starts as "nothing frozen".
    Beside them the book keeps two counts per segment, its real notes and its frozen notes (:meth:`frozen_fraction`).
    In memory every process holds the whole book and applies the same updates. On disk (``directory``) the bits and
    counts are files read with ``os.pread`` for each batch's rows, so no process holds the book in memory; only the
    ``writer`` (the main process) writes, and :meth:`broadcast` makes its writes visible to the others (all must see
    one folder: one machine, or a shared filesystem).

    Args:
        num_segments (`int`): rows (training segments); segment ids are ``0 .. num_segments - 1``.
        max_len (`int`): columns (the longest segment, BOS and EOS included).
        segment_lengths (array of shape `(num_segments,)`, *optional*): rows of each segment (BOS and EOS included),
            giving the note counts up front; otherwise :meth:`set_rows` records them (the freezing pass passes them).
        directory (`str` or `os.PathLike`, *optional*): keep the book in files in this folder.
        writer (`bool`): on disk: whether this process writes (``accelerator.is_main_process``).
    """

    def __init__(
        self,
        num_segments: int,
        max_len: int,
        segment_lengths: Any | None = None,
        directory: str | os.PathLike | None = None,
        writer: bool = True,
    ):
        if num_segments < 1 or max_len < 1:
            raise ValueError(f"PackedMaskBook needs num_segments >= 1 and max_len >= 1, got {num_segments}, {max_len}")
        self._num_segments = int(num_segments)
        self._max_len = int(max_len)
        self.row_bytes = -(-self._max_len // 8)
        self.directory = None if directory is None else Path(directory)
        self.writer = bool(writer) or self.directory is None
        notes = None
        if segment_lengths is not None:
            lengths = np.asarray(torch.as_tensor(segment_lengths).cpu(), dtype=np.int64).reshape(-1)
            if lengths.size != num_segments:
                raise ValueError(f"segment_lengths has {lengths.size} entries for {num_segments} segments")
            if lengths.size and lengths.max() > max_len:
                raise ValueError(f"a segment length exceeds max_len={max_len}: {int(lengths.max())}")
            notes = np.maximum(lengths - 2, 0).astype(np.int32)
        self._fds: tuple[int, int] | None = None
        if self.directory is None:
            self._bits = np.zeros((self._num_segments, self.row_bytes), dtype=np.uint8)
            self._counts = np.zeros((self._num_segments, 2), dtype=np.int32)  # notes, frozen notes
            if notes is not None:
                self._counts[:, 0] = notes
            self._totals = None
        else:
            self._totals = [0, 0]
            if self.writer:
                self._create_files(notes)

    # ------------------------------------------------------------------------------------------------ storage
    def _paths(self, directory: Path | None = None) -> tuple[Path, Path, Path]:
        d = directory or self.directory
        return d / "frozen_bits.bin", d / "counts.bin", d / "mask_book.json"

    def _create_files(self, notes: np.ndarray | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        bits, counts, meta = self._paths()
        for path, size in ((bits, self._num_segments * self.row_bytes), (counts, self._num_segments * 8)):
            with open(path, "wb") as handle:  # a sparse file of zeros: nothing frozen
                handle.truncate(size)
        if notes is not None:
            table = np.zeros((self._num_segments, 2), dtype=np.int32)
            table[:, 0] = notes
            table.tofile(counts)
            self._totals = [int(notes.sum()), 0]
        self._write_meta()

    def _write_meta(self) -> None:
        atomic_write_json(self._paths()[2], {"num_segments": self._num_segments, "max_len": self._max_len,
                                             "notes": self._totals[0], "frozen": self._totals[1]}, indent=None)

    def _open(self) -> tuple[int, int]:
        if self._fds is None:
            bits, counts, meta = self._paths()
            if not bits.is_file():
                raise FileNotFoundError(f"{self.directory}: no mask book files (was the writer's book created "
                                        "before the other processes read it?)")
            flags = os.O_RDWR if self.writer else os.O_RDONLY
            self._fds = (os.open(bits, flags), os.open(counts, flags))
            if not self.writer:
                state = json.loads(meta.read_text())
                self._totals = [int(state["notes"]), int(state["frozen"])]
        return self._fds

    def close(self) -> None:
        """Close the book's files (on disk; reopened on the next use)."""
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fds"] = None
        return state

    def _read(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Packed bits `(n, row_bytes)` and counts `(n, 2)` of the given segments."""
        if self.directory is None:
            return self._bits[ids], self._counts[ids]
        fd_bits, fd_counts = self._open()
        bits = np.zeros((len(ids), self.row_bytes), dtype=np.uint8)
        counts = np.zeros((len(ids), 2), dtype=np.int32)
        for i, sid in enumerate(ids.tolist()):
            raw = os.pread(fd_bits, self.row_bytes, sid * self.row_bytes)
            bits[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
            raw = os.pread(fd_counts, 8, sid * 8)
            counts[i, : len(raw) // 4] = np.frombuffer(raw, dtype=np.int32)
        return bits, counts

    def _write(self, ids: np.ndarray, bits: np.ndarray, counts: np.ndarray) -> None:
        if self.directory is None:
            self._bits[ids] = bits
            self._counts[ids] = counts
            return
        fd_bits, fd_counts = self._open()
        for sid, row, count in zip(ids.tolist(), bits, counts):
            os.pwrite(fd_bits, row.tobytes(), sid * self.row_bytes)
            os.pwrite(fd_counts, count.tobytes(), sid * 8)

    # ------------------------------------------------------------------------------------------------ interface
    @property
    def num_segments(self) -> int:
        return self._num_segments

    @property
    def max_len(self) -> int:
        return self._max_len

    def nbytes(self) -> int:
        """Bytes of the book held in this process's memory (0 on disk: rows are read per batch)."""
        return self._bits.nbytes + self._counts.nbytes if self.directory is None else 0

    def rows(self, segment_ids: torch.Tensor, length: int) -> torch.Tensor:
        """The book rows of a batch (1 = may be masked), cut or padded (with 1) to ``length`` columns, bool `(B,
        length)`."""
        ids = _segment_ids(segment_ids, self._num_segments)
        bits, _ = self._read(ids)
        frozen = np.unpackbits(bits, axis=1, count=self._max_len, bitorder="little")[:, :length].astype(bool)
        allowed = torch.from_numpy(~frozen)
        if allowed.shape[1] < length:
            allowed = F.pad(allowed, (0, length - allowed.shape[1]), value=True)
        return allowed

    def set_rows(self, segment_ids: torch.Tensor, rows: torch.Tensor, notes: torch.Tensor | None = None) -> None:
        """Overwrite the first ``rows.shape[1]`` columns of the given segments (1 = may be masked; later duplicates
        win), and record their real notes when ``notes`` `(B,)` is given. On disk, only the writer writes."""
        if not self.writer:
            return
        ids = _segment_ids(segment_ids, self._num_segments)
        if ids.size == 0:
            return
        allowed = torch.as_tensor(rows).to(device="cpu", dtype=torch.bool).numpy()
        note_counts = None if notes is None else np.asarray(torch.as_tensor(notes).cpu(), dtype=np.int64).reshape(-1)
        last = _last_occurrences(ids)
        ids, allowed = ids[last], allowed[last]
        note_counts = None if note_counts is None else note_counts[last]
        width = min(allowed.shape[1], self._max_len)
        old_bits, counts = self._read(ids)
        frozen = np.unpackbits(old_bits, axis=1, count=self._max_len, bitorder="little").astype(bool)
        frozen[:, :width] = ~allowed[:, :width]
        bits = np.packbits(frozen, axis=1, bitorder="little")
        new_frozen = _POPCOUNT[bits].sum(axis=1, dtype=np.int64)
        new_counts = counts.copy()
        new_counts[:, 1] = new_frozen
        if note_counts is not None:
            new_counts[:, 0] = note_counts
        if self._totals is not None:
            self._totals[0] += int(new_counts[:, 0].sum() - counts[:, 0].sum())
            self._totals[1] += int(new_counts[:, 1].sum() - counts[:, 1].sum())
        self._write(ids, bits, new_counts)

    def frozen_fraction(self) -> float:
        """Fraction of the real notes that are frozen (notes as given up front or recorded by :meth:`set_rows`)."""
        if self.directory is None:
            notes, frozen = self._counts[:, 0].sum(dtype=np.int64), self._counts[:, 1].sum(dtype=np.int64)
        else:
            self._open()
            notes, frozen = self._totals
        return float(frozen) / float(notes) if notes else 0.0

    def broadcast(self, accelerator: Any = None) -> None:
        """Make every process see the same book after an update: on disk the writer flushes its files and the
        counts, every process waits for it, and the readers reopen the files (in memory: nothing to do)."""
        if self.directory is None:
            return
        if self.writer:
            if self._fds is not None:
                for fd in self._fds:
                    os.fsync(fd)
            self._write_meta()
        if accelerator is not None and accelerator.num_processes > 1:
            accelerator.wait_for_everyone()
        if not self.writer:
            self.close()

    def fingerprint(self) -> str:
        """A short hash of the frozen positions (the same for equal books, in memory or on disk)."""
        digest = hashlib.sha256()
        chunk = 1 << 16
        for start in range(0, self._num_segments, chunk):
            ids = np.arange(start, min(start + chunk, self._num_segments))
            digest.update(self._read(ids)[0].tobytes())
        return digest.hexdigest()[:16]

    # -------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """In memory: the whole book (for ``accelerator.register_for_checkpointing``). On disk: its size only; the
        files are copied by :meth:`save_files` / :meth:`load_files`."""
        state = {"num_segments": self._num_segments, "max_len": self._max_len}
        if self.directory is None:
            state["frozen_bits"] = torch.from_numpy(self._bits.copy())
            state["counts"] = torch.from_numpy(self._counts.copy())
        return state

    def load_state_dict(self, state: dict) -> None:
        _check_saved_size(state, self._num_segments, self._max_len, "mask book")
        if self.directory is None:
            self._bits = state["frozen_bits"].numpy().astype(np.uint8, copy=True)
            self._counts = state["counts"].numpy().astype(np.int32, copy=True)

    def save_files(self, directory: str | os.PathLike) -> None:
        """On disk: copy the book's files into ``directory`` (a checkpoint folder); the writer does it."""
        if self.directory is None or not self.writer:
            return
        self.broadcast()
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        for src, dst in zip(self._paths(), self._paths(target)):
            shutil.copyfile(src, dst)

    def load_files(self, directory: str | os.PathLike, accelerator: Any = None) -> None:
        """On disk: replace the book by the files saved in ``directory`` by :meth:`save_files` (all processes call
        it; the writer copies, the others wait and reopen)."""
        if self.directory is None:
            return
        source = Path(directory)
        meta = json.loads(self._paths(source)[2].read_text())
        _check_saved_size(meta, self._num_segments, self._max_len, f"mask book {source}")
        self.close()
        if self.writer:
            for src, dst in zip(self._paths(source), self._paths()):
                shutil.copyfile(src, dst)
            self._totals = [int(meta["notes"]), int(meta["frozen"])]
        if accelerator is not None and accelerator.num_processes > 1:
            accelerator.wait_for_everyone()


class MaskerScoreCache:
    """Each training segment's masker scores from its previous visit: one byte per (segment, position), in memory.

    A score ``s`` in ``[0, 1]`` is kept as the code ``round(s * 254)`` (finer than bf16 scores); the code 255 means
    "never seen" (a NaN score is stored as never seen). Every process holds the whole cache (eight times the mask
    book; the on-disk book of ``--streaming`` has no such cache). Each process writes its own batches' segments and
    :meth:`sync` (a collective call, at the end of an epoch and before a checkpoint) shares the rows changed since
    the last sync; within an epoch a segment is visited once, by one process, so no read misses a newer score.
    """

    LEVELS = 254
    NEVER_SEEN = 255

    def __init__(self, num_segments: int, max_len: int):
        if num_segments < 1 or max_len < 1:
            raise ValueError(f"MaskerScoreCache needs num_segments >= 1 and max_len >= 1, got {num_segments}, "
                             f"{max_len}")
        self._codes = np.full((int(num_segments), int(max_len)), self.NEVER_SEEN, dtype=np.uint8)
        self._changed: list[np.ndarray] = []  # ids written since the last sync

    @property
    def num_segments(self) -> int:
        return self._codes.shape[0]

    @property
    def max_len(self) -> int:
        return self._codes.shape[1]

    def nbytes(self) -> int:
        """Bytes held in memory."""
        return self._codes.nbytes

    @classmethod
    def encode(cls, scores: torch.Tensor) -> torch.Tensor:
        """Scores (any float tensor, clamped to ``[0, 1]``) -> uint8 codes, NaN -> ``NEVER_SEEN``; on their device."""
        scores = scores.detach().float()
        codes = torch.round(scores.clamp(0.0, 1.0) * cls.LEVELS).to(torch.uint8)
        return codes.masked_fill(torch.isnan(scores), cls.NEVER_SEEN)

    @classmethod
    def decode(cls, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 codes -> ``(scores, seen)``: float32 scores (0 where never seen) and bool seen, on their device."""
        seen = codes != cls.NEVER_SEEN
        return torch.where(seen, codes.float() / cls.LEVELS, 0.0), seen

    def codes(self, segment_ids: Any, length: int) -> torch.Tensor:
        """The codes of a batch's segments, cut or padded (with ``NEVER_SEEN``) to ``length`` columns, uint8
        `(B, length)` on the host (decode them with :meth:`decode` on the batch's device)."""
        ids = _segment_ids(segment_ids, self.num_segments, "masker score cache")
        rows = torch.from_numpy(self._codes[ids, :length])
        if rows.shape[1] < length:
            rows = F.pad(rows, (0, length - rows.shape[1]), value=self.NEVER_SEEN)
        return rows

    def set_rows(self, segment_ids: Any, scores: torch.Tensor, written: torch.Tensor) -> None:
        """Store the scores `(B, L)` of the given segments where ``written`` `(B, L)` is set (the real notes), keeping
        the other positions; a segment named twice keeps its last row. Copies the scores to the host."""
        ids = _segment_ids(segment_ids, self.num_segments, "masker score cache")
        if ids.size == 0:
            return
        width = min(scores.shape[1], self.max_len)
        codes = self.encode(scores[:, :width]).cpu().numpy()
        written = written[:, :width].to(device="cpu", dtype=torch.bool).numpy()
        last = _last_occurrences(ids)
        ids, codes, written = ids[last], codes[last], written[last]
        rows = self._codes[ids, :width]
        np.copyto(rows, codes, where=written)
        self._codes[ids, :width] = rows
        self._changed.append(ids)

    def sync(self, accelerator: Any = None) -> None:
        """Gather the rows every process changed since the last sync and apply them everywhere (with one process, or
        none, it only forgets which rows changed). All processes must call it together."""
        changed = np.unique(np.concatenate(self._changed)) if self._changed else np.zeros(0, dtype=np.int64)
        self._changed = []
        if accelerator is None or accelerator.num_processes <= 1:
            return
        ids = torch.from_numpy(changed).to(accelerator.device)
        rows = torch.from_numpy(self._codes[changed]).to(accelerator.device)
        ids = accelerator.pad_across_processes(ids, dim=0, pad_index=-1)
        rows = accelerator.pad_across_processes(rows, dim=0, pad_index=self.NEVER_SEEN)
        ids, rows = accelerator.gather((ids, rows))
        keep = ids >= 0
        self._codes[ids[keep].cpu().numpy()] = rows[keep].cpu().numpy()


    def state_dict(self) -> dict:
        """The whole cache (saved by ``checkpointing.CheckpointManager`` beside the mask book)."""
        codes = torch.from_numpy(self._codes.copy())
        return {"num_segments": self.num_segments, "max_len": self.max_len, "codes": codes}

    def load_state_dict(self, state: dict) -> None:
        _check_saved_size(state, self.num_segments, self.max_len, "masker score cache")
        self._codes = state["codes"].numpy().astype(np.uint8, copy=True)
