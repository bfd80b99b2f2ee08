"""Collators: a list of dataset rows -> a batch of padded tensors, with the training-time augmentations.

Both are dataclasses usable as a ``DataLoader``'s ``collate_fn`` or a ``Trainer``'s ``data_collator``; a batch holds
what the models' ``forward`` takes, the bookkeeping tensors (``segment_id``, ``masked_positions``, ``corrupted``) on
request. :class:`DataCollatorForOctuple` (fine-tuning: padding, pitch shift, mask fine-tuning);
:class:`DataCollatorForOctupleMLM` (masked LM on the CPU side: random or bar-level choice, BERT-style corruption).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..constants import IGNORE_INDEX, MASK_ID, NUM_SPECIAL_TOKENS, PAD_ID, PITCH, PROGRAM
from ..masking import (
    choose_bar_positions,
    choose_random_positions,
    corrupt,
    mask_for_finetuning,
    maskable_positions,
    step_seed,
    uniform_draw,
)

__all__ = ["DataCollatorForOctuple", "DataCollatorForOctupleMLM", "pad_octuple_batch", "pitch_shift_batch"]


def _as_array(value: Any, what: str, index: int) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"row {index}: column '{what}' is not an integer array ({err})") from err


def pad_octuple_batch(
    rows: Sequence[Mapping[str, Any]],
    pad_token_id: int = PAD_ID,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad dataset rows (``input_ids`` (length, 8), optional ``attention_mask``, ``labels`` (an int, or one per token)
    and ``segment_id``) to the longest one, rounded up to ``pad_to_multiple_of``, with ``pad_token_id`` rows: a dict
    of ``input_ids`` (B, L, 8), ``attention_mask`` (B, L), ``labels`` ((B,) or (B, L), -100 at padding) and
    ``segment_id`` (B,) when the rows have them."""
    if len(rows) == 0:
        raise ValueError("cannot collate an empty list of rows")
    ids = []
    for i, row in enumerate(rows):
        if "input_ids" not in row:
            raise KeyError(f"row {i} has no 'input_ids' column (columns: {sorted(row)})")
        a = _as_array(row["input_ids"], "input_ids", i)
        if a.ndim != 2 or a.shape[1] != 8:
            raise ValueError(f"row {i}: input_ids must be (length, 8), got shape {a.shape}")
        ids.append(a)
    lengths = np.array([a.shape[0] for a in ids])
    length = int(lengths.max())
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    batch = len(rows)
    input_ids = np.full((batch, length, 8), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((batch, length), dtype=np.int64)
    for i, a in enumerate(ids):  # one copy per row (rows have different lengths), not per token
        input_ids[i, : a.shape[0]] = a
        if "attention_mask" in rows[i] and rows[i]["attention_mask"] is not None:
            attention_mask[i, : a.shape[0]] = _as_array(rows[i]["attention_mask"], "attention_mask", i)
        else:
            attention_mask[i, : a.shape[0]] = 1
    out = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if "labels" in rows[0] and rows[0]["labels"] is not None:
        first = np.asarray(rows[0]["labels"])
        if first.ndim == 0:
            out["labels"] = torch.tensor([int(r["labels"]) for r in rows], dtype=torch.long)
        else:
            labels = np.full((batch, length), IGNORE_INDEX, dtype=np.int64)
            for i, row in enumerate(rows):
                lab = _as_array(row["labels"], "labels", i)
                if lab.shape[0] != lengths[i]:
                    raise ValueError(f"row {i}: {lab.shape[0]} token labels for {lengths[i]} tokens")
                labels[i, : lab.shape[0]] = lab
            out["labels"] = torch.from_numpy(labels)
    if "segment_id" in rows[0]:
        out["segment_id"] = torch.tensor([int(r["segment_id"]) for r in rows], dtype=torch.long)
    return out


def pitch_shift_batch(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    pitch_id_range: tuple[int, int],
    drum_program_token_id: int | None = None,
    max_shift: int = 11,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transpose each segment by its own random number of semitones (docs/method.md section 4), vectorised.

    A segment's shift is drawn uniformly among the integers of ``[-max_shift, max_shift]`` that keep all its pitched
    notes inside ``pitch_id_range`` (the ids of the lowest and highest pitch, contiguous in between); 0 without pitched
    notes. Only note rows (``maskable`` `(B, L)`) with a regular pitch id change: drums (program id
    ``drum_program_token_id``), special rows and MASK pitches do not. Returns ``(shifted_ids (B, L, 8), shifts (B,))``.
    """
    low_id, high_id = int(pitch_id_range[0]), int(pitch_id_range[1])
    pitch = input_ids[..., PITCH]
    pitched = maskable & (pitch >= low_id) & (pitch <= high_id)
    if drum_program_token_id is not None:
        pitched = pitched & (input_ids[..., PROGRAM] != drum_program_token_id)
    big = torch.iinfo(torch.long).max
    lowest = torch.where(pitched, pitch, torch.full_like(pitch, big)).min(dim=1).values
    highest = torch.where(pitched, pitch, torch.full_like(pitch, -big)).max(dim=1).values
    has = pitched.any(dim=1)
    down = torch.where(has, torch.clamp(low_id - lowest, min=-max_shift), torch.zeros_like(lowest))
    up = torch.where(has, torch.clamp(high_id - highest, max=max_shift), torch.zeros_like(highest))
    u = uniform_draw(input_ids.shape[0], generator, input_ids.device, torch.float64)
    shifts = down + torch.floor(u * (up - down + 1).to(torch.float64)).long()
    shifts = torch.minimum(shifts, up)
    shifted = input_ids.clone()
    shifted[..., PITCH] = torch.where(pitched, pitch + shifts.unsqueeze(1), pitch)
    return shifted, shifts


def seeded_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or from the system's entropy when ``seed`` is None."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _tokenizer_value(tokenizer: Any, name: str, default: Any = None) -> Any:
    return getattr(tokenizer, name, default) if tokenizer is not None else default


@dataclass
class DataCollatorForOctuple:
    """Pads Octuple rows for fine-tuning, with optional pitch-shift augmentation and mask fine-tuning.

    Args:
        tokenizer (`OctupleTokenizer`, *optional*): the PAD and MASK ids, the pitch range and the drum program id
            (required for ``pitch_shift``).
        pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.
        pitch_shift (`bool`): transpose each segment by a random number of semitones, at most ``max_pitch_shift``.
        mask_ratio (`float`): mask fine-tuning: replace this fraction of each segment's notes by MASK (0 = off); for
            token tasks their labels become -100.
        seed (`int`, *optional*): with rows carrying ``segment_id``, each batch is drawn from a generator seeded by
            ``(seed, epoch, segment ids)`` (:meth:`set_epoch`): the same in any worker and after a resume; otherwise
            from one generator seeded once.
        return_segment_id, return_masked_positions (`bool`): also return ``segment_id`` (B,) and the mask
            fine-tuning's ``masked_positions`` (B, L) bool.
    """

    tokenizer: Any = None
    pad_to_multiple_of: int | None = None
    pitch_shift: bool = False
    max_pitch_shift: int = 11
    mask_ratio: float = 0.0
    seed: int | None = None
    return_segment_id: bool = False
    return_masked_positions: bool = False
    generator: torch.Generator = field(init=False, repr=False)
    epoch: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1], got {self.mask_ratio}")
        if self.max_pitch_shift < 0:
            raise ValueError(f"max_pitch_shift must be >= 0, got {self.max_pitch_shift}")
        if self.pitch_shift and self.tokenizer is None:
            raise ValueError("pitch_shift=True needs a tokenizer (for the pitch range and the drum program id)")
        self.generator = seeded_generator(self.seed)

    @property
    def pad_token_id(self) -> int:
        return int(_tokenizer_value(self.tokenizer, "pad_token_id", PAD_ID))

    @property
    def mask_token_id(self) -> int:
        return int(_tokenizer_value(self.tokenizer, "mask_token_id", MASK_ID))

    def pitch_id_range(self) -> tuple[int, int]:
        """Ids of the lowest and highest pitch of the tokenizer's vocabulary."""
        low, high = self.tokenizer.pitch_range
        return int(self.tokenizer.pitch_token_id(low)), int(self.tokenizer.pitch_token_id(high))

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentations (call before iterating the DataLoader of each epoch)."""
        self.epoch = int(epoch)

    def _batch_generator(self, segment_ids: torch.Tensor | None) -> torch.Generator:
        if self.seed is None or segment_ids is None:
            return self.generator
        return torch.Generator().manual_seed(step_seed(self.seed, self.epoch, segment_ids.numpy().tobytes()))

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_octuple_batch(rows, self.pad_token_id, self.pad_to_multiple_of)
        generator = self._batch_generator(batch.get("segment_id"))
        if not self.return_segment_id:
            batch.pop("segment_id", None)
        maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
        if self.pitch_shift:
            batch["input_ids"], _ = pitch_shift_batch(
                batch["input_ids"],
                maskable,
                self.pitch_id_range(),
                _tokenizer_value(self.tokenizer, "drum_program_token_id"),
                self.max_pitch_shift,
                generator,
            )
        if self.mask_ratio > 0:
            batch["input_ids"], masked = mask_for_finetuning(
                batch["input_ids"], maskable, self.mask_ratio, generator, self.mask_token_id
            )
            if self.return_masked_positions:
                batch["masked_positions"] = masked
            if "labels" in batch and batch["labels"].dim() == 2:
                batch["labels"] = batch["labels"].masked_fill(masked, IGNORE_INDEX)
        return batch


@dataclass
class DataCollatorForOctupleMLM:
    """Pads Octuple rows and corrupts them for masked-LM: random (BERT) or bar-level (MusicBERT) choice.

    Args:
        tokenizer (`OctupleTokenizer`, *optional*): gives ``vocab_sizes`` and the PAD / MASK ids.
        vocab_sizes (sequence of 8 ints, *optional*): the attribute vocabulary sizes, when no tokenizer is given.
        strategy (`str`): ``"random"`` or ``"bar"`` (one attribute for all notes of a bar).
        mlm_probability (`float`): fraction of notes (or cells) chosen.
        mask_prob, random_prob (`float`): the chosen tokens' chances of MASK and of a random id (else unchanged).
        pad_to_multiple_of (`int`, *optional*), seed (`int`, *optional*): as in :class:`DataCollatorForOctuple`.
        return_corrupted, return_segment_id (`bool`): also return ``corrupted`` (B, L) bool (where MASK or a random
            id was written) and ``segment_id``.

    The batch's ``labels`` (B, L, 8) hold -100 outside the chosen tokens, replacing any ``labels`` column of the rows.
    """

    tokenizer: Any = None
    vocab_sizes: Sequence[int] | None = None
    strategy: str = "random"
    mlm_probability: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    return_corrupted: bool = False
    return_segment_id: bool = False
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.strategy not in ("random", "bar"):
            raise ValueError(f"strategy must be 'random' or 'bar', got {self.strategy!r}")
        if self.vocab_sizes is None:
            self.vocab_sizes = _tokenizer_value(self.tokenizer, "vocab_sizes")
        if self.vocab_sizes is None or len(self.vocab_sizes) != 8:
            raise ValueError("DataCollatorForOctupleMLM needs a tokenizer or vocab_sizes (8 ints)")
        if bool(np.any(np.asarray(self.vocab_sizes) <= NUM_SPECIAL_TOKENS)):
            raise ValueError(f"vocab_sizes must all exceed {NUM_SPECIAL_TOKENS}, got {list(self.vocab_sizes)}")
        self.generator = seeded_generator(self.seed)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        pad_id = int(_tokenizer_value(self.tokenizer, "pad_token_id", PAD_ID))
        mask_id = int(_tokenizer_value(self.tokenizer, "mask_token_id", MASK_ID))
        batch = pad_octuple_batch(rows, pad_id, self.pad_to_multiple_of)
        batch.pop("labels", None)
        if not self.return_segment_id:
            batch.pop("segment_id", None)
        maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
        if self.strategy == "random":
            chosen = choose_random_positions(maskable, self.mlm_probability, self.generator)
        else:
            chosen = choose_bar_positions(batch["input_ids"], maskable, self.mlm_probability, self.generator)
        ids, labels, corrupted = corrupt(
            batch["input_ids"], chosen, self.vocab_sizes, mask_id, self.generator, self.mask_prob, self.random_prob
        )
        batch.update(input_ids=ids, labels=labels)
        if self.return_corrupted:
            batch["corrupted"] = corrupted
        return batch
