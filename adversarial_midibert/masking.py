"""Which tokens to mask, and how to corrupt them: the primitives shared by pre-training and the collators.

Every function works on whole batches with tensor operations (``input_ids`` `(B, L, 8)`, position masks `(B, L)`,
bar-level choices `(B, L, 8)`), on any device, and draws its randomness from an optional ``torch.Generator`` (on any
device). The functions that choose positions never choose padding, BOS or EOS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from .constants import BAR, BOS_ID, EOS_ID, IGNORE_INDEX, MASK_ID, NUM_SPECIAL_TOKENS, PAD_ID

__all__ = ["step_seed", "maskable_positions", "choose_random_positions", "choose_bar_positions", "rank_positions",
           "choose_top_scored_positions", "share_mask_counts", "corrupt", "mask_for_finetuning", "uniform_draw"]


def uniform_draw(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device (any), returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def share_mask_counts(maskable: torch.Tensor, ratio: float) -> torch.Tensor:
    """How many positions masking a share ``ratio`` of each row takes: ``round(ratio * n_maskable)`` per row, at least 1
    where the row has a maskable position and ratio > 0 (random masking's count, and the adversarial ``"share"``
    budget's), `torch.LongTensor` of shape `(B,)`."""
    n = maskable.sum(dim=1)
    k = torch.round(n.to(torch.float64) * ratio).to(torch.long)
    if ratio > 0:
        k = torch.maximum(k, (n > 0).to(torch.long))
    return torch.minimum(k, n)


def maskable_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Positions holding a real note, bool `(B, L)`: inside ``attention_mask`` (if given) and not a PAD, BOS or EOS
    row. A row with a MASK or any non-special id is a note (a note with a hidden attribute is still a note)."""
    if input_ids.dim() != 3:
        raise ValueError(f"input_ids must have shape (B, L, 8), got {tuple(input_ids.shape)}")
    structural = (input_ids == PAD_ID) | (input_ids == BOS_ID) | (input_ids == EOS_ID)
    maskable = ~structural.all(dim=-1)
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape[:2]:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids "
                f"{tuple(input_ids.shape[:2])}"
            )
        maskable = maskable & attention_mask.bool()
    return maskable


def rank_positions(
    scores: torch.Tensor,
    maskable: torch.Tensor,
    generator: torch.Generator | None = None,
    largest: bool = True,
) -> torch.Tensor:
    """The rank of every position in its row: the maskable positions by score (rank 0 = the highest, or the lowest
    with ``largest=False``), then the others. Returns a permutation of ``0..L-1`` per row, `(B, L)`.

    Scores `(B, L)` are compared in float32; NaN ranks after every number, before any unmaskable position. Without a
    ``generator`` the earlier of equal scores wins; with one, every order of tied positions is equally likely, so a
    coarse (bf16) score does not favour the start of the segment.
    """
    if scores.shape != maskable.shape:
        raise ValueError(f"scores shape {tuple(scores.shape)} != maskable shape {tuple(maskable.shape)}")
    batch, length = scores.shape
    s = scores.detach().float()
    s = s if largest else -s
    # Stable sorts by the least significant key first make one lexicographic order: maskable first, then by score
    # (NaN last: it becomes -inf, while nan_to_num turns a real -inf into the lowest float), then by a random key
    # (or by position).
    if generator is not None:
        order = torch.argsort(uniform_draw(s.shape, generator, s.device), dim=1)
    else:
        order = torch.arange(length, device=s.device).expand(batch, length)
    for key in (s.nan_to_num(nan=float("-inf")), maskable.float()):
        order = order.gather(1, torch.sort(key.gather(1, order), dim=1, descending=True, stable=True).indices)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(length, device=scores.device).expand(batch, length))
    return ranks


def choose_top_scored_positions(
    scores: torch.Tensor,
    maskable: torch.Tensor,
    k: int | torch.Tensor,
    generator: torch.Generator | None = None,
    largest: bool = True,
) -> torch.Tensor:
    """The ``k`` maskable positions with the highest (or, ``largest=False``, lowest) score in each row: bool `(B, L)`
    with exactly ``min(k, n_maskable)`` per row. ``k`` is an int or `(B,)`; ties as in :func:`rank_positions`."""
    batch = scores.shape[0]
    if not torch.is_tensor(k):
        k = torch.full((batch,), int(k), dtype=torch.long, device=scores.device)
    k = k.to(device=scores.device, dtype=torch.long).reshape(-1)
    if k.numel() != batch:
        raise ValueError(f"k must hold one count per row ({batch}), got {k.numel()}")
    ranks = rank_positions(scores, maskable, generator, largest)
    return (ranks < k.unsqueeze(1)) & maskable


def choose_random_positions(
    maskable: torch.Tensor, ratio: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniformly random positions: exactly :func:`share_mask_counts` of each row, bool `(B, L)`."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    scores = uniform_draw(maskable.shape, generator, maskable.device)
    return choose_top_scored_positions(scores, maskable, share_mask_counts(maskable, ratio))


def choose_bar_positions(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    ratio: float = 0.15,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MusicBERT's bar-level masking: choose (bar, attribute) pairs and mask that attribute for every note of the bar
    (so it cannot be copied from a neighbour), returning bool `(B, L, 8)`.

    In each row the (bar, attribute) groups are taken in random order until the chosen cells reach
    ``round(ratio * 8 * n_maskable)`` (at least one group when the row has a note; it overshoots by at most one bar).
    Bars are read from the ``constants.BAR`` column of ``input_ids``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    device = input_ids.device
    batch, length, n_attr = input_ids.shape
    chosen = torch.zeros((batch, length, n_attr), dtype=torch.bool, device=device)
    if ratio == 0 or not bool(maskable.any()):
        return chosen
    bars = input_ids[..., BAR].long()
    span = int(bars.max()) + 1
    rows = torch.arange(batch, device=device).unsqueeze(1).expand(batch, length)
    keys = (rows * span + bars)[maskable]  # one key per (row, bar) for every maskable token
    group_keys, token_group, group_size = torch.unique(keys, return_inverse=True, return_counts=True)
    group_row = torch.div(group_keys, span, rounding_mode="floor")
    n_groups = group_keys.numel()

    # Cells = (group, attribute). Sort them by (row, random score) and take the prefix of each row.
    cell_row = group_row.repeat_interleave(n_attr)
    cell_size = group_size.repeat_interleave(n_attr)
    cell_draw = uniform_draw((n_groups * n_attr,), generator, device, torch.float64)
    sort_key = cell_row.to(torch.float64) * 2.0 + cell_draw
    order = torch.argsort(sort_key)
    sorted_row, sorted_size = cell_row[order], cell_size[order]
    target = share_mask_counts(maskable, ratio) * n_attr  # cells wanted per row (n_maskable * 8 * ratio)
    row_total = maskable.sum(dim=1) * n_attr
    row_offset = torch.cumsum(row_total, 0) - row_total  # cells of the previous rows
    before = torch.cumsum(sorted_size, 0) - sorted_size - row_offset[sorted_row]
    take_sorted = before < target[sorted_row]
    take = torch.empty_like(take_sorted)
    take[order] = take_sorted
    chosen[maskable] = take.view(n_groups, n_attr)[token_group]
    return chosen


def corrupt(
    input_ids: torch.Tensor,
    chosen: torch.Tensor,
    vocab_sizes: Sequence[int] | torch.Tensor,
    mask_token_id: int = MASK_ID,
    generator: torch.Generator | None = None,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT-style corruption of the chosen positions.

    Each chosen token (``chosen`` `(B, L)`) becomes MASK in all eight attributes with probability ``mask_prob``, a
    random non-special id in each attribute with probability ``random_prob``, and stays unchanged otherwise. With a
    bar-level choice (``chosen`` `(B, L, 8)`) the same draw is made per chosen cell and only that attribute changes.

    Args:
        input_ids (`torch.LongTensor` of shape `(B, L, 8)`): uncorrupted ids (not modified).
        chosen (`torch.BoolTensor` of shape `(B, L)` or `(B, L, 8)`): the positions (or cells) to corrupt.
        vocab_sizes (8 ints or a tensor): random ids are drawn in ``[NUM_SPECIAL_TOKENS, vocab_size)``. A tensor on
            the data's device avoids a copy per call and is not checked (its owner checks it once).
        mask_token_id (`int`), generator (`torch.Generator`, *optional*), mask_prob (`float`), random_prob (`float`).

    Returns:
        `(corrupted_ids, labels, corrupted)`: ids `(B, L, 8)`; labels `(B, L, 8)`, the original id at the chosen tokens
        or cells and -100 elsewhere; bool `(B, L)`, True where MASK or a random id was written.
    """
    if input_ids.dim() != 3:
        raise ValueError(f"input_ids must have shape (B, L, 8), got {tuple(input_ids.shape)}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1 + 1e-9:
        raise ValueError(f"need mask_prob, random_prob >= 0 with sum <= 1, got {mask_prob}, {random_prob}")
    device = input_ids.device
    if not torch.is_tensor(vocab_sizes) and min(vocab_sizes) <= NUM_SPECIAL_TOKENS:
        # Sizes given as numbers are checked here; a tensor is trusted (reading it back would wait for the device at
        # every step): its owner checks it once (AdversarialMLM does).
        raise ValueError(f"every vocabulary must have non-special ids (> {NUM_SPECIAL_TOKENS}), got "
                         f"{list(vocab_sizes)}")
    vocab = torch.as_tensor(vocab_sizes, dtype=torch.long, device=device).reshape(-1)
    if vocab.numel() != input_ids.shape[-1]:
        raise ValueError(f"vocab_sizes has {vocab.numel()} entries, input_ids has {input_ids.shape[-1]} attributes")
    chosen = chosen.bool()
    if chosen.dim() == 2:
        if chosen.shape != input_ids.shape[:2]:
            raise ValueError(f"chosen shape {tuple(chosen.shape)} does not match input_ids {tuple(input_ids.shape)}")
        draw = uniform_draw(chosen.shape, generator, device).unsqueeze(-1)  # one decision per token
        cells = chosen.unsqueeze(-1).expand_as(input_ids)
    elif chosen.shape == input_ids.shape:
        draw = uniform_draw(chosen.shape, generator, device)  # one decision per (token, attribute)
        cells = chosen
    else:
        raise ValueError(f"chosen must be (B, L) or (B, L, 8), got {tuple(chosen.shape)} for {tuple(input_ids.shape)}")
    to_mask = cells & (draw < mask_prob)
    to_random = cells & (draw >= mask_prob) & (draw < mask_prob + random_prob)
    n_regular = (vocab - NUM_SPECIAL_TOKENS).to(torch.float64)
    id_draw = uniform_draw(input_ids.shape, generator, device, torch.float64)
    random_ids = (id_draw * n_regular).long() + NUM_SPECIAL_TOKENS
    random_ids = torch.minimum(random_ids, vocab - 1)
    corrupted_ids = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted_ids = torch.where(to_random, random_ids.to(input_ids.dtype), corrupted_ids)
    labels = torch.where(cells, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    corrupted = (to_mask | to_random).any(dim=-1)
    return corrupted_ids, labels, corrupted


def mask_for_finetuning(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    ratio: float = 0.15,
    generator: torch.Generator | None = None,
    mask_token_id: int = MASK_ID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask fine-tuning (docs/method.md section 4): replace ``round(ratio * n_notes)`` notes per row (of ``maskable``
    `(B, L)`) by MASK in all attributes; ``ratio`` 0 masks nothing. Returns ``(masked_ids (B, L, 8), mask (B, L))``
    (token tasks leave the masked positions out of the loss and the accuracy)."""
    mask = choose_random_positions(maskable, ratio, generator)
    masked_ids = input_ids.masked_fill(mask.unsqueeze(-1), mask_token_id)
    return masked_ids, mask


def step_seed(*parts: int | bytes) -> int:
    """A 63-bit seed derived from ``parts`` (the run's seed, the step, the process index...; bytes taken as they
    are): the randomness of a step does not depend on how the run got there, so a resumed run draws as an
    uninterrupted one."""
    text = b"/".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)
