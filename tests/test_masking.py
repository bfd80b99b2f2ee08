"""Tests of the masking primitives (adversarial_midibert.masking): counts, exclusions, 80/10/10, seeding."""

from __future__ import annotations

import pytest
import torch

from adversarial_midibert.constants import BAR, BOS_ID, EOS_ID, MASK_ID, NUM_SPECIAL_TOKENS, PAD_ID
from adversarial_midibert.masking import (
    choose_bar_positions,
    choose_random_positions,
    choose_top_scored_positions,
    corrupt,
    mask_for_finetuning,
    maskable_positions,
)

VOCAB = [40, 30, 20, 50, 30, 20, 10, 12]


def make_batch(batch=4, length=64, seed=0):
    """Random note rows framed by BOS/EOS, rows padded to different lengths; bars ascending."""
    g = torch.Generator().manual_seed(seed)
    vocab = torch.tensor(VOCAB)
    ids = (torch.rand(batch, length, 8, generator=g) * (vocab - NUM_SPECIAL_TOKENS)).long() + NUM_SPECIAL_TOKENS
    ids[..., BAR] = NUM_SPECIAL_TOKENS + torch.sort(torch.randint(0, 12, (batch, length), generator=g), dim=1).values
    lengths = torch.tensor([length, length - 10, length // 2, 3])[:batch]
    attention = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    ids[:, 0] = BOS_ID
    ids[torch.arange(batch), lengths - 1] = EOS_ID
    ids[~attention] = PAD_ID
    return ids, attention.long()


def test_maskable_excludes_special_rows():
    ids, attention = make_batch()
    maskable = maskable_positions(ids, attention)
    assert maskable.sum(1).tolist() == [62, 52, 30, 1]
    assert not maskable[:, 0].any()
    # a note with one hidden attribute (velocity task) stays a note
    ids[0, 5, 5] = MASK_ID
    assert maskable_positions(ids, attention)[0, 5]


def test_random_positions_exact_count_and_never_unmaskable():
    ids, attention = make_batch()
    maskable = maskable_positions(ids, attention)
    chosen = choose_random_positions(maskable, 0.15, torch.Generator().manual_seed(1))
    expected = [max(1, round(0.15 * n)) for n in maskable.sum(1).tolist()]
    assert chosen.sum(1).tolist() == expected
    assert not (chosen & ~maskable).any()
    empty = torch.zeros(2, 5, dtype=torch.bool)
    assert not choose_random_positions(empty, 0.5).any()


def test_seeded_determinism():
    ids, attention = make_batch()
    maskable = maskable_positions(ids, attention)
    a = choose_random_positions(maskable, 0.3, torch.Generator().manual_seed(7))
    b = choose_random_positions(maskable, 0.3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    a = choose_bar_positions(ids, maskable, 0.15, torch.Generator().manual_seed(7))
    b = choose_bar_positions(ids, maskable, 0.15, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_top_scored_ties_and_k_per_row():
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.9, 0.1], [1.0, 2.0, 3.0, 4.0, 5.0]])
    maskable = torch.tensor([[True, True, True, True, True], [True, True, True, True, False]])
    chosen = choose_top_scored_positions(scores, maskable, torch.tensor([2, 10]))
    assert chosen[0].tolist() == [True, False, False, True, False]  # tie -> earliest position
    assert chosen[1].tolist() == [True, True, True, True, False]  # clipped; never the unmaskable one


def test_bar_positions_whole_bars_and_ratio():
    ids, attention = make_batch(batch=3, length=400)
    attention[:] = 1
    ids[:, 1:-1] = ids[:, 1:-1].clamp(min=NUM_SPECIAL_TOKENS)
    maskable = maskable_positions(ids, attention)
    chosen = choose_bar_positions(ids, maskable, 0.15, torch.Generator().manual_seed(3))
    assert chosen.shape == ids.shape
    assert not (chosen & ~maskable.unsqueeze(-1)).any()
    fraction = chosen.sum((1, 2)).float() / (maskable.sum(1).float() * 8)
    assert ((fraction > 0.1) & (fraction < 0.3)).all(), fraction
    # a chosen (bar, attribute) is chosen for every note of that bar
    bars = ids[..., BAR]
    for b in range(3):
        for bar in bars[b][maskable[b]].unique():
            in_bar = maskable[b] & (bars[b] == bar)
            cells = chosen[b][in_bar]
            assert (cells.all(0) | ~cells.any(0)).all()


def test_corrupt_80_10_10():
    ids, attention = make_batch(batch=4, length=2000)
    maskable = maskable_positions(ids, attention)
    chosen = maskable.clone()
    out, labels, corrupted = corrupt(ids, chosen, VOCAB, MASK_ID, torch.Generator().manual_seed(0))
    n = chosen.sum().item()
    masked = (out == MASK_ID).all(-1) & chosen
    changed = (out != ids).any(-1) & ~masked
    assert abs(masked.sum().item() / n - 0.8) < 0.03
    assert abs(changed.sum().item() / n - 0.1) < 0.03  # random ids (a few may equal the original)
    assert torch.equal(out[~chosen], ids[~chosen])  # PAD/BOS/EOS and unchosen untouched
    assert (labels[chosen] == ids[chosen]).all() and (labels[~chosen] == -100).all()
    assert not (corrupted & ~chosen).any()
    random_rows = out[chosen & ~masked]
    assert (random_rows >= NUM_SPECIAL_TOKENS).all()
    assert (random_rows < torch.tensor(VOCAB)).all()


def test_corrupt_bar_cells_only_touch_chosen_attribute():
    ids, attention = make_batch()
    maskable = maskable_positions(ids, attention)
    chosen = choose_bar_positions(ids, maskable, 0.3, torch.Generator().manual_seed(2))
    out, labels, corrupted = corrupt(ids, chosen, VOCAB, MASK_ID, torch.Generator().manual_seed(2))
    assert torch.equal(out[~chosen], ids[~chosen])
    assert (labels[~chosen] == -100).all() and (labels[chosen] == ids[chosen]).all()
    assert corrupted.any() and not (corrupted & ~maskable).any()


def test_mask_for_finetuning():
    ids, attention = make_batch()
    maskable = maskable_positions(ids, attention)
    out, mask = mask_for_finetuning(ids, maskable, 0.3, torch.Generator().manual_seed(0))
    assert (out[mask] == MASK_ID).all() and torch.equal(out[~mask], ids[~mask])
    assert not (mask & ~maskable).any()
    assert not mask_for_finetuning(ids, maskable, 0.0)[1].any()


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="ratio"):
        choose_random_positions(torch.ones(2, 3, dtype=torch.bool), 1.5)
    with pytest.raises(ValueError, match="vocab_sizes"):
        corrupt(torch.full((1, 3, 8), 5), torch.ones(1, 3, dtype=torch.bool), [10] * 7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_with_cpu_generator():
    ids, attention = make_batch()
    ids, attention = ids.cuda(), attention.cuda()
    maskable = maskable_positions(ids, attention)
    g = torch.Generator().manual_seed(0)
    chosen = choose_random_positions(maskable, 0.15, g)
    bar = choose_bar_positions(ids, maskable, 0.15, g)
    out, labels, corrupted = corrupt(ids, chosen, VOCAB, MASK_ID, g)
    assert out.is_cuda and bar.is_cuda and not (chosen & ~maskable).any()


def test_step_seed_keeps_the_seeds_of_earlier_runs():
    """One home for the step's seed (pre-training and fine-tuning steps, the collators' per-batch draws): the values
    are those the runs in results/ were drawn with."""
    import numpy as np

    from adversarial_midibert.masking import step_seed

    assert step_seed(42, 7, 1) == 3160132573540642496  # seed / micro-step / process
    assert step_seed(42, 3, np.array([1], dtype=np.int64).tobytes()) == 2177666688363194632  # seed / epoch / segments
