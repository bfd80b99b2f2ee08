"""Tests that pin the adversarial step to the method (docs/method.md): each fails on a one-line change of the code
it guards (choosing the lowest scores, building the masker targets from the chosen notes, ignoring the attribute
weights, counting padding in the reconstruction term, ...), plus the study's options (reference budget, reference
masker loss, within-segment Spearman, the easiest-first control) and the float32 ranking under bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_pretraining import make_batch, tiny_model

from adversarial_midibert.constants import IGNORE_INDEX, NUM_ATTRIBUTES, PAD_ID
from adversarial_midibert.masking import choose_top_scored_positions, maskable_positions
from adversarial_midibert.pretraining import (
    AdversarialMLM,
    UniformSampler,
    freezing_pass,
    masker_loss,
    masker_targets,
    step_generator,
)
from adversarial_midibert.pretraining_evaluation import spearman_within_rows

from byte_mask_book import MaskBook


def step(masking="adversarial", seed=0, **kwargs):
    model = tiny_model(seed)
    module = AdversarialMLM(model, masking=masking, **kwargs)
    module.eval()  # no dropout: two calls with one generator give the same step
    return module


# ------------------------------------------------------------------------------------------------ the choice
@pytest.mark.parametrize("masking,largest", [("adversarial", True), ("easiest", False)])
def test_chosen_notes_are_the_top_k_of_the_masker_scores(masking, largest):
    module = step(masking)
    batch = make_batch((40, 25, 33))
    out = module(batch, generator=step_generator(0, 0), return_details=True)
    maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
    scores = out.masker_scores
    for b in range(scores.shape[0]):
        chosen = scores[b][out.chosen[b]]
        others = scores[b][maskable[b] & ~out.chosen[b]]
        assert chosen.numel() == int(out.num_masked[b]) > 0
        if largest:  # every chosen note scores at least as high as every note left
            assert chosen.min() >= others.max()
        else:
            assert chosen.max() <= others.min()
    assert not (out.chosen & ~maskable).any()


def test_masker_targets_come_from_the_corrupted_notes():
    # Half of the chosen notes stay unchanged (mask_prob 0.5, no random ids): the masker learns only from the
    # notes that were actually corrupted.
    module = step(mask_prob=0.5, random_prob=0.0, mask_ratio_range=(0.5, 0.5), max_mask_ratio=0.5)
    batch = make_batch((60, 56, 50))
    out = module(batch, generator=step_generator(3, 1), return_details=True)
    assert (out.chosen & ~out.corrupted).any() and float(out.masker_loss) > 0
    expected = []
    for b in range(out.chosen.shape[0]):  # hand-written, one segment at a time
        where = torch.nonzero(out.corrupted[b]).squeeze(1)
        losses = out.per_token_loss[b, where]
        m = int(np.floor(0.3 * where.numel()))
        order = torch.argsort(losses, descending=True)
        hard, easy = where[order[:m]], where[order[where.numel() - m:]]
        expected.append((hard, easy))
    scores = out.masker_scores
    errors = torch.cat([(scores[b, h] - 1).square() for b, (h, _) in enumerate(expected)]
                       + [scores[b, e].square() for b, (_, e) in enumerate(expected)])
    assert float(out.masker_loss) == pytest.approx(float(errors.mean()), rel=1e-5)


def test_recoverer_loss_is_the_attribute_weighted_cross_entropy():
    module = step()
    weights = torch.tensor([0.3, 0.02, 0.1, 0.25, 0.05, 0.08, 0.1, 0.1])
    captured = {}

    def record(_, args, kwargs, output):
        if kwargs.get("labels") is not None:  # the recoverer pass (the masker pass has no labels)
            captured.update(ids=args[0], labels=kwargs["labels"], logits=output.logits)

    handle = module.model.register_forward_hook(record, with_kwargs=True)
    try:
        out = module(make_batch(), generator=step_generator(0, 2), attribute_weights=weights)
    finally:
        handle.remove()
    labels = captured["labels"]
    per_attribute = []
    for i, logits in enumerate(captured["logits"]):
        keep = labels[..., i] != IGNORE_INDEX
        per_attribute.append(F.cross_entropy(logits[keep].float(), labels[..., i][keep]))
    expected = float((weights * torch.stack(per_attribute)).sum().detach())
    assert float(out.recoverer_loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_reconstruction_term_does_not_change_when_padding_is_added():
    # Deterministic corruption (all MASK) and a constant u: the same notes are chosen with or without extra padding.
    module = step(mask_prob=1.0, random_prob=0.0, mask_ratio_range=(0.2, 0.2))
    batch = make_batch((20, 12, 30))
    padded = {key: value.clone() for key, value in batch.items()}
    extra = 9
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.full((3, extra, NUM_ATTRIBUTES), PAD_ID)], dim=1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(3, extra, dtype=torch.long)], dim=1)
    a = module(batch, generator=step_generator(0, 0), return_details=True)
    b = module(padded, generator=step_generator(0, 0), return_details=True)
    assert torch.equal(a.chosen, b.chosen[:, : a.chosen.shape[1]])
    assert float(a.reconstruction_loss) > 0
    assert float(b.reconstruction_loss) == pytest.approx(float(a.reconstruction_loss), rel=1e-5)


def test_freezing_pass_freezes_exactly_the_top_fraction_of_each_segment():
    model = tiny_model(1)
    batch = make_batch((40, 21, 33))
    book = MaskBook(3, batch["input_ids"].shape[1])
    freezing_pass(model, [batch], book, fraction_sampler=UniformSampler(0.25, 0.25),
                  unfreeze_sampler=UniformSampler(0.0, 0.0), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        scores = model(batch["input_ids"], attention_mask=batch["attention_mask"], compute_logits=False).masker_scores
    maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
    rows = book.rows(batch["segment_id"], batch["input_ids"].shape[1])
    for b in range(3):
        frozen = maskable[b] & ~rows[b]
        assert int(frozen.sum()) == round(0.25 * int(maskable[b].sum()))
        assert scores[b][frozen].min() >= scores[b][maskable[b] & rows[b]].max()


# ------------------------------------------------------------------------------------- choose_top_scored_positions
def test_nan_is_chosen_after_numbers_but_before_unmaskable_positions():
    scores = torch.tensor([[0.0, float("nan"), 0.5]])
    chosen = choose_top_scored_positions(scores, torch.tensor([[False, True, False]]), 1)
    assert chosen.tolist() == [[False, True, False]]
    chosen = choose_top_scored_positions(torch.tensor([[float("nan"), -float("inf"), 0.1]]),
                                         torch.ones(1, 3, dtype=torch.bool), 2)
    assert chosen.tolist() == [[False, True, True]]  # NaN ranks after -inf


def test_k_zero_and_all_frozen_segments_choose_nothing():
    scores = torch.rand(2, 6)
    assert not choose_top_scored_positions(scores, torch.ones(2, 6, dtype=torch.bool), 0).any()
    maskable = torch.ones(2, 6, dtype=torch.bool)
    maskable[1] = False  # every note of the second segment frozen
    chosen = choose_top_scored_positions(scores, maskable, torch.tensor([3, 3]))
    assert chosen[0].sum() == 3 and not chosen[1].any()


def test_ties_are_broken_at_random_with_a_generator_and_by_position_without():
    scores = torch.zeros(1, 8)  # eight tied scores
    maskable = torch.ones(1, 8, dtype=torch.bool)
    assert choose_top_scored_positions(scores, maskable, 2).tolist() == [[True, True] + [False] * 6]
    counts = torch.zeros(8)
    for seed in range(400):
        counts += choose_top_scored_positions(scores, maskable, 2, generator=torch.Generator().manual_seed(seed))[0]
    assert counts.sum() == 800
    assert counts.min() > 60 and counts.max() < 140  # about 100 each: no position is favoured


# ------------------------------------------------------------------------------------------------ the options
def test_padded_budget_counts_padding_rows_as_the_reference_book_does():
    batch = make_batch((20, 12, 30))  # padded to 32 rows; the model's max_seq_len is 64
    notes = maskable_positions(batch["input_ids"], batch["attention_mask"]).sum(1)
    for budget, expected in (
        ("notes", torch.minimum(torch.round(0.3 * notes), torch.round(0.15 * notes))),
        ("padded", torch.minimum(torch.round(0.3 * (notes + 64 - (notes + 2))), torch.full_like(notes,
                                                                                                round(0.15 * 64)))),
    ):
        module = step(mask_ratio_range=(0.3, 0.3), mask_budget=budget)
        out = module(batch, generator=step_generator(0, 0))
        assert out.num_masked.tolist() == torch.minimum(expected.long(), notes).tolist(), budget
        assert torch.allclose(out.masked_share, out.num_masked / notes)


def test_reference_masker_loss_is_the_sum_of_the_group_means_averaged_over_segments():
    scores = torch.tensor([[0.9, 0.2, 0.4, 0.7, 0.0], [0.1, 0.5, 0.3, 0.8, 0.6]])
    targets = torch.tensor([[1.0, 0, 0, 1.0, 0], [0, 1.0, 0, 0, 0]])
    selected = torch.tensor([[True, True, False, True, True], [True, True, True, False, False]])
    first = ((0.9 - 1) ** 2 + (0.7 - 1) ** 2) / 2 + (0.2 ** 2 + 0.0 ** 2) / 2
    second = (0.5 - 1) ** 2 + (0.1 ** 2 + 0.3 ** 2) / 2
    assert float(masker_loss(scores, targets, selected, "reference")) == pytest.approx((first + second) / 2)
    pooled = ((0.9 - 1) ** 2 + (0.7 - 1) ** 2 + 0.2 ** 2 + 0 + (0.5 - 1) ** 2 + 0.1 ** 2 + 0.3 ** 2) / 7
    assert float(masker_loss(scores, targets, selected, "pooled")) == pytest.approx(pooled)
    with pytest.raises(ValueError, match="masker loss form"):
        masker_loss(scores, targets, selected, "mean")


def test_masker_target_groups_never_overlap_even_when_every_loss_ties():
    loss = torch.zeros(2, 10)
    corrupted = torch.ones(2, 10, dtype=torch.bool)
    targets, selected = masker_targets(loss, corrupted, 0.5, generator=torch.Generator().manual_seed(0))
    assert int(targets.sum()) == 10 and int(selected.sum()) == 20  # 5 hard + 5 easy per row, disjoint


def test_within_segment_spearman_matches_scipy_per_row():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 12, generator=g)
    y = x * torch.tensor([[1.0], [-1.0], [0.0], [1.0]]) + 0.3 * torch.rand(4, 12, generator=g)
    x[0, 3:] = float("nan")  # row 0: three pairs; row 3: two pairs -> NaN
    y[3, 2:] = float("nan")
    rho = spearman_within_rows(x, y)
    for b in range(3):
        keep = ~(torch.isnan(x[b]) | torch.isnan(y[b]))
        assert float(rho[b]) == pytest.approx(spearmanr(x[b][keep], y[b][keep]).statistic, abs=1e-9)
    assert torch.isnan(rho[3])


# ------------------------------------------------------------------------------------------------ precision
def test_bf16_autocast_chooses_the_fp32_notes_without_positional_bias():
    module = step(mask_ratio_range=(0.15, 0.15))
    batch = make_batch((60, 60, 60, 60, 60, 60), seed=4)
    fp32 = module(batch, generator=step_generator(0, 0), return_details=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = module(batch, generator=step_generator(0, 0), return_details=True)
    assert bf16.masker_scores.dtype == torch.float32 and bf16.per_token_loss.dtype == torch.float32
    distinct = [len(set(row[m].tolist())) for row, m in zip(bf16.masker_scores, bf16.chosen | fp32.chosen)]
    assert min(distinct) > 0.9 * min(int(m.sum()) for m in bf16.chosen | fp32.chosen)  # scores hardly ever tie
    agree = float((bf16.chosen & fp32.chosen).sum() / fp32.chosen.sum())
    assert agree > 0.85
    position = torch.arange(batch["input_ids"].shape[1]).float()
    mean_position = lambda out: float((position * out.chosen).sum() / out.chosen.sum())  # noqa: E731
    assert abs(mean_position(bf16) - mean_position(fp32)) < 3.0


def test_bar_masking_masked_share_counts_attribute_cells():
    out = step("bar")(make_batch((60, 50, 40)), generator=step_generator(0, 0), return_details=True)
    notes_touched = out.chosen.any(-1).sum(1).float() / out.num_masked.new_tensor([60, 50, 40]).float()
    assert torch.all(out.masked_share < notes_touched)
    assert torch.all((out.masked_share > 0.1) & (out.masked_share < 0.3))  # 15 % of the cells, one bar of overshoot
