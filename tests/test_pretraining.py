"""Unit tests of adversarial pre-training: mask book, attribute weights, k, masker targets, the step, freezing."""

from __future__ import annotations

import pytest
import torch

from adversarial_midibert.constants import BOS_ID, EOS_ID, NUM_ATTRIBUTES, PAD_ID
from adversarial_midibert.mask_book import MaskerScoreCache
from adversarial_midibert.masking import choose_top_scored_positions, maskable_positions, share_mask_counts
from adversarial_midibert.modeling_adv_midibert import AdvMidiBertMaskedLMOutput, scale_gradient
from adversarial_midibert.presets import (
    PRESETS,
    default_finetune_learning_rate,
    parse_config_overrides,
    preset_config_kwargs,
)
from adversarial_midibert.pretraining import (
    AdversarialMLM,
    AttributeWeights,
    TrainingProgress,
    UniformSampler,
    adversarial_mask_counts,
    batch_to_device,
    freezing_pass,
    frozen_recovery_gap,
    masker_loss,
    masker_targets,
    step_generator,
)

from byte_mask_book import MaskBook
from tiny_models import tiny_config

VOCAB = [40, 40, 20, 60, 40, 20, 12, 30]


def tiny_model(seed: int = 0):
    from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM

    torch.manual_seed(seed)
    config = tiny_config(vocab_sizes=VOCAB, num_hidden_layers=1, max_position_embeddings=64)
    return AdvMidiBertForMaskedLM(config)


def make_batch(lengths=(20, 12, 30), seed=0, segment_ids=None):
    """Random segments ``[BOS] + notes + [EOS]`` padded to the longest."""
    g = torch.Generator().manual_seed(seed)
    length = max(lengths) + 2
    ids = torch.full((len(lengths), length, NUM_ATTRIBUTES), PAD_ID, dtype=torch.long)
    mask = torch.zeros(len(lengths), length, dtype=torch.long)
    vocab = torch.tensor(VOCAB)
    for b, n in enumerate(lengths):
        notes = (torch.rand(n, NUM_ATTRIBUTES, generator=g) * (vocab - 4)).long() + 4
        ids[b, 0] = BOS_ID
        ids[b, 1 : n + 1] = notes
        ids[b, n + 1] = EOS_ID
        mask[b, : n + 2] = 1
    seg = torch.arange(len(lengths)) if segment_ids is None else torch.as_tensor(segment_ids)
    return {"input_ids": ids, "attention_mask": mask, "segment_id": seg}


# ---------------------------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------------------------


def test_mask_book_rows_state_and_fraction():
    book = MaskBook(4, 10, segment_lengths=torch.tensor([10, 6, 4, 3]))
    assert book.frozen_fraction() == 0.0
    assert book.rows(torch.tensor([1, 3]), 12).shape == (2, 12)
    assert book.rows(torch.tensor([1, 3]), 12).all()  # padded with ones beyond max_len
    new = torch.ones(1, 10, dtype=torch.bool)
    new[0, 1:5] = False  # freeze 4 of the 8 notes of segment 0
    book.set_rows(torch.tensor([0]), new)
    notes = 8 + 4 + 2 + 1
    assert book.frozen_fraction() == pytest.approx(4 / notes)
    state = book.state_dict()
    other = MaskBook(4, 10)
    other.load_state_dict(state)
    assert torch.equal(other.book, book.book) and other.fingerprint() == book.fingerprint()
    assert other.frozen_fraction() == pytest.approx(4 / notes)
    with pytest.raises(ValueError, match="shape"):
        MaskBook(5, 10).load_state_dict(state)
    with pytest.raises(IndexError, match="segment_id out of range"):
        book.rows(torch.tensor([4]), 10)


def test_attribute_weights_follow_previous_epoch_accuracy():
    w = AttributeWeights()
    assert torch.allclose(w.weights, torch.full((8,), 1 / 8))
    acc = torch.tensor([0.9, 0.5, 0.8, 0.2, 0.4, 0.1, 1.0, 0.0])
    total = torch.full((8,), 100.0)
    w.update((acc * 50).round(), total / 2)  # two steps of counts
    w.update((acc * 50).round(), total / 2)
    assert torch.allclose(w.weights, torch.full((8,), 1 / 8))  # unchanged during the epoch
    epoch_acc = w.end_epoch()
    assert torch.allclose(epoch_acc, acc)
    inv = 1 / acc.clamp_min(1e-3)
    assert torch.allclose(w.weights, inv / inv.sum(), atol=1e-6)
    assert torch.isfinite(w.weights).all() and w.weights.sum() == pytest.approx(1.0)
    assert w.weights.argmax() == 7 and w.weights[6] == w.weights.min()  # hardest attribute weighs most
    # an attribute with no masked token keeps its previous accuracy; counters reset; state round-trips
    w.update(torch.tensor([50.0] * 7 + [0.0]), torch.tensor([100.0] * 7 + [0.0]))
    w.end_epoch()
    assert w.accuracies[7] == pytest.approx(0.0) and w.accuracies[0] == pytest.approx(0.5)
    w2 = AttributeWeights()
    w2.load_state_dict(w.state_dict())
    assert torch.equal(w2.weights, w.weights) and torch.equal(w2.accuracies, w.accuracies)


def test_k_formula():
    book_counts = torch.tensor([100, 100, 10, 40, 0])
    notes = torch.tensor([100, 100, 100, 40, 30])
    u = torch.tensor([0.1, 0.3, 0.3, 0.2, 0.2])
    k = adversarial_mask_counts(book_counts, notes, u)
    # min(round(u * book), round(0.15 * L))
    assert k.tolist() == [10, 15, 3, 6, 0]


def test_masker_targets_per_segment_no_sign_flip():
    loss = torch.tensor(
        [
            [0.0, 5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 99.0],
            [0.0, 6.0, 4.0, 8.0, 2.0, 7.0, 3.0, 9.0, 1.0, 5.0, 99.0],
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 99.0],
        ]
    )
    corrupted = torch.ones_like(loss, dtype=torch.bool)
    corrupted[:, 0] = False
    corrupted[:, 10] = False  # high loss but not corrupted: never a target
    targets, selected = masker_targets(loss, corrupted, 0.3)
    for b in range(3):  # every segment, odd ones included: floor(0.3 * 9) = 2 hardest -> 1, 2 easiest -> 0
        row = loss[b]
        hard = set(torch.topk(row[1:10], 2).indices.add(1).tolist())
        easy = set(torch.topk(-row[1:10], 2).indices.add(1).tolist())
        assert set(torch.nonzero(selected[b] & (targets[b] == 1)).flatten().tolist()) == hard
        assert set(torch.nonzero(selected[b] & (targets[b] == 0)).flatten().tolist()) == easy
        assert not selected[b, 0] and not selected[b, 10]
    # rows with few corrupted positions: floor(0.3 * n) each side, never overlapping
    few = torch.zeros_like(corrupted)
    few[0, 1:3] = True  # n = 2 -> 0 targets
    few[1, 1:5] = True  # n = 4 -> 1 + 1
    targets, selected = masker_targets(loss, few, 0.3)
    assert selected[0].sum() == 0 and selected[1].sum() == 2 and targets[1].sum() == 1
    # loss: perfect scores give 0, and an empty selection still gives a differentiable 0
    scores = targets.clone().requires_grad_(True)
    assert masker_loss(scores, targets, selected).item() == 0.0
    empty = masker_loss(scores, targets, torch.zeros_like(selected))
    empty.backward()
    assert empty.item() == 0.0 and scores.grad is not None


def test_presets_and_overrides():
    assert preset_config_kwargs("tiny")["hidden_size"] == 64
    overridden = preset_config_kwargs("small", "max_position_embeddings=512")  # the fresh model's, both loops
    assert overridden == {**PRESETS["small"], "max_position_embeddings": 512} and PRESETS["small"] != overridden
    assert PRESETS["base"]["hidden_size"] == 768 and PRESETS["base"]["max_position_embeddings"] == 1024
    assert parse_config_overrides("hidden_size=128, hidden_act=relu") == {"hidden_size": 128, "hidden_act": "relu"}
    with pytest.raises(ValueError, match="key=value"):
        parse_config_overrides("hidden_size")
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config_kwargs("huge")
    # Fine-tuning learning rate by width: the CPU presets 5e-4 (measured), BERT-base the paper's 2e-5.
    assert [default_finetune_learning_rate(PRESETS[n]["hidden_size"]) for n in ("tiny", "small", "base")] == \
        [5e-4, 5e-4, 2e-5]


def test_uniform_sampler_and_progress():
    s = UniformSampler(0.1, 0.3)(1000, torch.Generator().manual_seed(0))
    assert 0.1 <= float(s.min()) and float(s.max()) <= 0.3
    assert torch.equal(UniformSampler(0.15, 0.15)(3), torch.full((3,), 0.15))
    p = TrainingProgress()
    p.completed_steps = 7
    q = TrainingProgress()
    q.load_state_dict(p.state_dict())
    assert q.completed_steps == 7


def test_a_resumed_run_counts_the_time_of_its_earlier_stretches():
    """The runtime a run reports adds the stretches before its checkpoint (it was the last stretch's alone)."""
    import json
    import time

    first = TrainingProgress()
    first.start_clock(time.time() - 100)  # 100 s into the first stretch when the checkpoint is saved
    state = json.loads(json.dumps(first.state_dict()))  # as the checkpoint's JSON holds it
    resumed = TrainingProgress()
    resumed.load_state_dict(state)
    resumed.start_clock(time.time() - 5)
    assert 104.9 < resumed.runtime() < 106
    legacy = TrainingProgress()
    legacy.load_state_dict({k: v for k, v in state.items() if k != "runtime_before"})  # older checkpoints
    assert legacy.runtime() < 100


# ---------------------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------------------


def test_share_budget_holds_the_masked_share_as_notes_freeze():
    """mask_budget="share": k = random masking's count of the real notes, taken among the unfrozen ones only."""
    batch = make_batch((40, 21, 30))
    maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
    rows = torch.ones(3, 64, dtype=torch.bool)
    rows[:, 1::2] = False  # half of every segment's notes frozen
    rows[2, 5:] = False  # segment 2: only two notes left (positions 2 and 4), fewer than its share
    book = MaskBook(3, 64)
    book.set_rows(torch.arange(3), rows)
    for masking in ("adversarial", "easiest"):
        step = AdversarialMLM(tiny_model(), mask_book=book, masking=masking, mask_budget="share")
        out = step(batch, generator=step_generator(0, 1), return_details=True)
        share = share_mask_counts(maskable, 0.15)
        assert share.tolist() == [6, 3, 4]
        assert out.num_masked.tolist() == [6, 3, 2]  # segment 2: capped by its two unfrozen notes
        torch.testing.assert_close(out.masked_share[:2], share[:2] / maskable.sum(1)[:2].float())
        assert not (out.chosen & ~rows[:, : maskable.shape[1]]).any()  # never a frozen note
        assert out.chosen[2, [2, 4]].all()



@pytest.mark.parametrize("masking", ["adversarial", "random", "bar"])
def test_step_never_masks_special_positions_and_respects_book(masking):
    model = tiny_model()
    batch = make_batch((60, 50, 12))
    book = MaskBook(3, 64)
    frozen_row = torch.ones(1, 64, dtype=torch.bool)
    frozen_row[0, 1:11] = False  # freeze the first 10 notes of segment 0
    book.set_rows(torch.tensor([0]), frozen_row)
    step = AdversarialMLM(model, mask_book=book, attribute_weights=AttributeWeights(), masking=masking)
    out = step(batch, generator=step_generator(0, 0), return_details=True)
    assert torch.isfinite(out.loss)
    chosen = out.chosen if out.chosen.dim() == 2 else out.chosen.any(-1)
    maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
    assert not (chosen & ~maskable).any()  # never PAD / BOS / EOS
    assert out.attribute_total.sum() > 0
    assert (out.attribute_correct <= out.attribute_total).all()
    out.loss.backward()
    if masking == "adversarial":
        assert not chosen[0, 1:11].any()  # frozen notes are never chosen
        notes = maskable.sum(1)
        allowed = (maskable & book.rows(batch["segment_id"], maskable.shape[1])).sum(1)
        assert (out.num_masked <= torch.round(0.15 * notes)).all()
        assert (out.num_masked <= torch.round(0.3 * allowed)).all()
        assert out.num_masked.sum() > 0
        assert out.frozen_fraction.item() == pytest.approx(10 / int(notes.sum()))
        assert out.masker_scores is not None
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "mask" in n)
    else:
        assert out.masker_loss.item() == 0.0


def test_step_is_deterministic_given_generator_and_reconstruction_term():
    batch = make_batch()
    outs = []
    for _ in range(2):
        model = tiny_model(seed=1)
        model.eval()
        step = AdversarialMLM(model, reconstruction_weight=1.0)
        outs.append(step(batch, generator=step_generator(3, 5), return_details=True))
    assert torch.equal(outs[0].chosen, outs[1].chosen)
    assert outs[0].loss.item() == pytest.approx(outs[1].loss.item())
    assert outs[0].reconstruction_loss.item() > 0


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_masker_grad_scale_scales_the_encoder_gradient_only(scale):
    batch = make_batch()
    grads = {}
    for s in (1.0, scale):
        model = tiny_model(seed=4)
        model.eval()  # no dropout: both passes compute the same values
        step = AdversarialMLM(model, masker_grad_scale=s)
        assert not step.detach_masker
        scores = step._masker_scores(batch["input_ids"], batch["attention_mask"])
        scores.sum().backward()
        grads[s] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    full, scaled = grads[1.0], grads[scale]
    assert set(full) == set(scaled)
    for name in full:
        expected = full[name] if "masker" in name else scale * full[name]
        torch.testing.assert_close(scaled[name], expected, rtol=1e-4, atol=1e-7)
    assert any("masker" not in n and full[n].abs().sum() > 0 for n in full)
    with pytest.raises(ValueError, match="masker_grad_scale"):
        AdversarialMLM(tiny_model(), masker_grad_scale=1.5)


def test_scale_gradient_keeps_values():
    # Bit-exact: with 4096 values, 0.3 * x + 0.7 * x differs from x in about 10 % of them.
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    y = scale_gradient(x, 0.3)
    assert torch.equal(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 0.3))
    assert scale_gradient(x, 1.0) is x and not scale_gradient(x, 0.0).requires_grad


def test_detach_masker_keeps_masker_gradient_out_of_encoder():
    model = tiny_model()
    batch = make_batch()
    model.zero_grad()
    step2 = AdversarialMLM(model, masker_grad_scale=0.0)
    assert step2.detach_masker
    scores = step2._masker_scores(batch["input_ids"], batch["attention_mask"])
    scores.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    masker = [n for n in grads if "masker" in n]
    assert masker and all(grads[n] is not None for n in masker)
    assert all(grads[n] is None or grads[n].abs().sum() == 0 for n in grads if "masker" not in n)
    # the scoring pass runs the encoder without dropout and leaves the model in training mode
    model.train()
    model.masker.eval()  # the head's own dropout is part of its training; switch it off to compare
    with torch.no_grad():
        first = step2._masker_scores(batch["input_ids"], batch["attention_mask"])
        second = step2._masker_scores(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(first, second)
    assert model.base_model.training


def test_freezing_pass_freezes_top_fraction_and_unfreezes():
    model = tiny_model()
    batches = [make_batch((20, 12), seed=0, segment_ids=[0, 1]), make_batch((30,), seed=1, segment_ids=[2])]
    book = MaskBook(3, 64, segment_lengths=torch.tensor([22, 14, 32]))
    frac = freezing_pass(model, batches, book, UniformSampler(0.2, 0.2), UniformSampler(0.0, 0.0),
                         generator=torch.Generator().manual_seed(0))
    assert frac == pytest.approx((4 + 2 + 6) / 62)
    # never frozen outside the notes
    assert book.book[:, 0].all() and book.book[0, 21:].all()
    # the frozen notes are the top-scored ones
    with torch.no_grad():
        model.eval()
        scores = model(batches[1]["input_ids"], attention_mask=batches[1]["attention_mask"],
                       compute_logits=False).masker_scores[0, 1:31]
    frozen = (book.book[2, 1:31] == 0)
    assert scores[frozen].min() >= scores[~frozen].max()
    # a second pass freezes more; unfreezing with p = 1 clears everything
    frac2 = freezing_pass(model, batches, book, UniformSampler(0.2, 0.2), UniformSampler(0.0, 0.0))
    assert frac2 > frac
    frac3 = freezing_pass(model, batches, book, UniformSampler(0.0, 0.0), UniformSampler(1.0, 1.0))
    assert frac3 == 0.0


@pytest.mark.parametrize("masking", ["adversarial", "easiest"])
def test_cached_scores_choose_the_notes_and_the_step_writes_back_its_own(masking):
    batch = make_batch((40, 21))
    maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
    length = maskable.shape[1]
    cache = MaskerScoreCache(2, 64)
    previous = torch.full((1, length), 0.5)
    previous[0, 3:9] = 0.9  # segment 0 was seen: six notes scored hardest, six easiest
    previous[0, 20:26] = 0.1
    cache.set_rows(torch.tensor([0]), previous, maskable[:1])  # segment 1 was never seen
    model = tiny_model()
    passes = []
    model.base_model.register_forward_hook(lambda module, args, output: passes.append(1))
    step = AdversarialMLM(model, masking=masking, mask_budget="share", masker_scores_from="cache", score_cache=cache)
    out = step(batch, generator=step_generator(0, 0), return_details=True)
    assert len(passes) == 1  # one encoder pass: the recoverer's, which also scores
    k = share_mask_counts(maskable, 0.15)
    assert k.tolist() == [6, 3] and out.num_masked.tolist() == [6, 3]
    assert out.chosen[0, 3:9].all() if masking == "adversarial" else out.chosen[0, 20:26].all()
    # the never-seen segment is chosen by uniform scores drawn first from the step's generator
    unseen = torch.rand(maskable.shape, generator=step_generator(0, 0))
    top = choose_top_scored_positions(unseen, maskable, k, largest=masking == "adversarial")
    assert torch.equal(out.chosen[1], top[1])
    # the masker learnt from this pass's scores, which are now the cache's for every real note
    out.loss.backward()
    assert out.masker_loss > 0 and model.masker.out_proj.weight.grad.abs().sum() > 0
    codes = cache.codes(batch["segment_id"], length)
    assert torch.equal(codes[maskable], MaskerScoreCache.encode(out.masker_scores)[maskable])
    assert (codes[~maskable] == MaskerScoreCache.NEVER_SEEN).all()
    # ... and choose at the next visit (looked up on the host by batch_to_device)
    again = step(batch_to_device(batch, "cpu", score_cache=cache), generator=step_generator(0, 1), return_details=True)
    ranked = MaskerScoreCache.decode(codes)[0] * (1 if masking == "adversarial" else -1)
    assert again.num_masked.tolist() == k.tolist()  # the k best by the new scores (ties broken at random)
    lowest_chosen = torch.where(again.chosen, ranked, float("inf")).min(1).values
    assert (lowest_chosen >= torch.where(maskable & ~again.chosen, ranked, -float("inf")).max(1).values).all()
    # validation batches (not the cache's segments) are chosen with a masker pass, and leave the cache alone
    before = cache.codes(torch.arange(2), 64).clone()
    step.eval()(batch, generator=step_generator(0, 2), use_mask_book=False)
    assert torch.equal(cache.codes(torch.arange(2), 64), before) and len(passes) == 4
    # the masker pass instead: two encoder passes, the masker head on the first only
    heads = []
    model.masker.register_forward_hook(lambda module, args, output: heads.append(1))
    AdversarialMLM(model, masking=masking)(batch, generator=step_generator(0, 3))
    assert len(passes) == 6 and len(heads) == 1
    with pytest.raises(ValueError, match="needs a score_cache"):
        AdversarialMLM(model, masker_scores_from="cache")


class FixedScores(torch.nn.Module):
    """A stand-in for the model in a freezing pass: the masker scores are given, ``scores[b, position]``."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = torch.nn.Parameter(scores, requires_grad=False)

    def forward(self, input_ids, attention_mask=None, compute_logits=True):
        return AdvMidiBertMaskedLMOutput(masker_scores=self.scores[: input_ids.shape[0], : input_ids.shape[1]])


def _scored_segments(seed=0):
    batch = make_batch((20, 12, 30), seed=seed)
    scores = torch.rand(3, batch["input_ids"].shape[1], generator=torch.Generator().manual_seed(seed))
    scores[0, 3] = scores[1, 5] = 0.5  # exactly at the threshold: frozen
    return batch, scores


def test_evidence_rule_freezes_exactly_the_notes_scored_above_the_threshold():
    batch, scores = _scored_segments()
    maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
    book = MaskBook(3, 64, segment_lengths=torch.tensor([22, 14, 32]))
    earlier = torch.ones(3, 64, dtype=torch.bool)
    earlier[:, 1:9] = False  # frozen by an earlier pass, whatever their score now
    book.set_rows(torch.arange(3), earlier)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    for threshold in (0.5, 0.7):
        # samplers that would freeze half and unfreeze half under the reference rule: not used
        frac = freezing_pass(FixedScores(scores), [batch], book, UniformSampler(0.5, 0.5), UniformSampler(0.5, 0.5),
                             generator=gen, rule="evidence", score_threshold=threshold)
        frozen = ~book.rows(batch["segment_id"], maskable.shape[1])
        assert torch.equal(frozen, maskable & (scores >= threshold))  # earlier-frozen low scores unfrozen
        assert frac == pytest.approx(int(frozen.sum()) / int(maskable.sum()))
        assert torch.equal(gen.get_state(), state)  # no random draw
    assert frozen[0, 3] == (threshold <= 0.5) and frozen[1, 5] == (threshold <= 0.5)
    # with the share budget's notes kept maskable: every note scores above the threshold, the lowest-scored
    # round(0.15 x notes) of each segment stay unfrozen
    freezing_pass(FixedScores(scores * 0.1 + 0.9), [batch], book, rule="evidence", score_threshold=0.5,
                  keep_unfrozen=0.15)
    unfrozen = book.rows(batch["segment_id"], maskable.shape[1]) & maskable
    assert torch.equal(unfrozen.sum(1), share_mask_counts(maskable, 0.15))
    lowest = choose_top_scored_positions(-scores, maskable, share_mask_counts(maskable, 0.15))
    assert torch.equal(unfrozen, lowest)
    # the scores fall: the notes are unfrozen
    freezing_pass(FixedScores(scores * 0.4), [batch], book, rule="evidence", score_threshold=0.5)
    assert book.frozen_fraction() == 0.0
    with pytest.raises(ValueError, match="freezing rule"):
        freezing_pass(FixedScores(scores), [batch], book, rule="threshold")
    with pytest.raises(ValueError, match="score_threshold"):
        freezing_pass(FixedScores(scores), [batch], book, rule="evidence", score_threshold=1.5)


def test_reference_rule_draws_as_before():
    """The reference rule's freezing, draw by draw from the generator (so that earlier runs reproduce)."""
    batch, scores = _scored_segments(seed=1)
    maskable = maskable_positions(batch["input_ids"], batch["attention_mask"])
    earlier = torch.ones(3, 64, dtype=torch.bool)
    earlier[:, 2:6] = False
    books = []
    for rule in (None, "reference"):
        book = MaskBook(3, 64, segment_lengths=torch.tensor([22, 14, 32]))
        book.set_rows(torch.arange(3), earlier)
        options = {} if rule is None else {"rule": rule}
        freezing_pass(FixedScores(scores), [batch], book, UniformSampler(0.1, 0.3), UniformSampler(0.0, 0.3),
                      generator=torch.Generator().manual_seed(7), **options)
        books.append(book.book.clone())
    # the same draws, in the same order, written out
    gen = torch.Generator().manual_seed(7)
    rows = earlier[:, : maskable.shape[1]]
    allowed = maskable & rows
    n_freeze = torch.round(UniformSampler(0.1, 0.3)(3, gen).double() * allowed.sum(1).double()).long()
    frozen = (maskable & ~rows) | choose_top_scored_positions(scores, allowed, n_freeze, generator=gen)
    p = UniformSampler(0.0, 0.3)(3, gen)
    frozen = frozen & ~(torch.rand(frozen.shape, generator=gen) < p.unsqueeze(1))
    expected = torch.ones(3, 64, dtype=torch.uint8)
    expected[:, : frozen.shape[1]] = (~frozen).to(torch.uint8)
    assert torch.equal(books[0], expected) and torch.equal(books[1], expected)
    assert (expected[:, 2:6] == 1).any() and (expected[:, 6:] == 0).any()  # some unfrozen, some newly frozen


def test_frozen_recovery_gap():
    loss = torch.tensor([[4.0, 2.0, 1.0, 9.0], [3.0, 0.0, 5.0, 7.0]])
    frozen = torch.tensor([[True, False, False, True], [True, False, True, False]])
    measured = torch.tensor([[True, True, True, False], [True, True, True, True]])
    # frozen and measured: 4, 3, 5 (mean 4); unfrozen and measured: 2, 1, 0, 7 (mean 2.5)
    assert frozen_recovery_gap(loss, frozen, measured).item() == pytest.approx(1.5)
    assert frozen_recovery_gap(loss, frozen & False, measured).isnan()


# ---------------------------------------------------------------------------------------------------------
# A tiny adversarial run on real segments
# ---------------------------------------------------------------------------------------------------------


def test_tiny_run_loss_falls_and_masker_learns_hardness(data_root):
    """After a few dozen steps the masker's scores rank held-out tokens by their recovery loss (Spearman > 0).

    With the paper's coupling (no reconstruction term), where the masker shapes the encoder fastest; the default
    coupling is checked over a longer run by ``test_short_adversarial_run_keeps_representations_healthy``."""
    from scipy.stats import spearmanr

    from adversarial_midibert.masking import choose_random_positions, corrupt
    from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM
    from adversarial_midibert.tokenization_octuple import OctupleTokenizer

    files = [data_root / "POP909" / f"{i:03d}" / f"{i:03d}.mid" for i in range(1, 6)]
    if not all(f.is_file() for f in files):
        pytest.skip("POP909 files 001..005 not found")
    tok = OctupleTokenizer(max_seq_len=64)
    train = tok(files[:4], return_tensors="pt")
    held = tok(files[4:], return_tensors="pt")
    torch.manual_seed(0)
    config = tiny_config(vocab_sizes=tok.vocab_sizes, num_hidden_layers=1, max_position_embeddings=64)
    model = AdvMidiBertForMaskedLM(config)
    step = AdversarialMLM(model, masker_grad_scale=1.0, reconstruction_weight=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    losses = []
    for i in range(40):
        idx = torch.randperm(train["input_ids"].shape[0], generator=order)[:16]
        out = step({"input_ids": train["input_ids"][idx], "attention_mask": train["attention_mask"][idx]},
                   generator=step_generator(0, i))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.recoverer_loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:5]) / 5

    model.eval()
    ids, mask = held["input_ids"], held["attention_mask"]
    scores, token_losses = [], []
    with torch.no_grad():
        s = model(ids, attention_mask=mask, compute_logits=False).masker_scores
        for r in range(4):  # recovery loss of randomly masked held-out tokens
            gen = torch.Generator().manual_seed(100 + r)
            chosen = choose_random_positions(maskable_positions(ids, mask), 0.15, gen)
            corrupted_ids, labels, corrupted = corrupt(ids, chosen, tok.vocab_sizes, generator=gen)
            rec = model(corrupted_ids, attention_mask=mask, labels=labels, compute_masker=False)
            scores.append(s[corrupted])
            token_losses.append(rec.per_token_loss[corrupted])
    rho = spearmanr(torch.cat(scores).numpy(), torch.cat(token_losses).numpy()).statistic
    assert rho > 0.1, rho


# ---------------------------------------------------------------------------------------------------------
# Representation health: the default coupling must not collapse the encoder
# ---------------------------------------------------------------------------------------------------------


def test_short_adversarial_run_keeps_representations_healthy(data_root):
    """100 adversarial steps of a tiny model on real POP909 segments, then the validation health figures.

    Measured with this set-up (docs/results.md, "Representation health"): the paper's coupling (full masker gradient, no
    reconstruction term) collapses to a mean token cosine of 0.998 and an effective rank of 2.2; the default
    (reference code's reconstruction term) stays at 0.89 / 12.3, as random-MLM with the same loss (0.89 / 12.3).
    The thresholds sit between the two, and the test checks both sides so that it can fail either way.
    """
    from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM
    from adversarial_midibert.pretraining_evaluation import evaluate_pretraining
    from adversarial_midibert.tokenization_octuple import OctupleTokenizer

    files = [data_root / "POP909" / f"{i:03d}" / f"{i:03d}.mid" for i in range(1, 25)]
    if not all(f.is_file() for f in files):
        pytest.skip("POP909 files 001..024 not found")
    tok = OctupleTokenizer(max_seq_len=64)
    train = tok(files[:20], return_tensors="pt")
    held = tok(files[20:], return_tensors="pt")
    validation = [{"input_ids": held["input_ids"][j:j + 16], "attention_mask": held["attention_mask"][j:j + 16]}
                  for j in range(0, held["input_ids"].shape[0], 16)]

    def health_after_run(**step_kwargs):
        torch.manual_seed(0)
        config = tiny_config(vocab_sizes=tok.vocab_sizes, attribute_embedding_size=16, max_position_embeddings=64,
                             masker_hidden_size=32)
        model = AdvMidiBertForMaskedLM(config)
        step = AdversarialMLM(model, **step_kwargs)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(0)
        for i in range(100):
            idx = torch.randperm(train["input_ids"].shape[0], generator=order)[:16]
            out = step({"input_ids": train["input_ids"][idx], "attention_mask": train["attention_mask"][idx]},
                       generator=step_generator(0, i))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            optimizer.step()
            optimizer.zero_grad()
        return evaluate_pretraining(step, validation)

    default = health_after_run()
    assert default["eval_token_cosine"] < 0.95 and default["eval_effective_rank"] > 8, default
    assert default["eval_masker_spearman"] > 0.2, default  # the masker still learns which notes are hard
    paper = health_after_run(masker_grad_scale=1.0, reconstruction_weight=0.0)
    assert paper["eval_token_cosine"] > 0.95 and paper["eval_effective_rank"] < 8, paper


# ---------------------------------------------------------------------------------------------------------
# The prepared module: every pass through it; no host sync in the step
# ---------------------------------------------------------------------------------------------------------


def guard_inner_calls(step: AdversarialMLM) -> None:
    """Make any call of the model's modules outside the step module's own forward raise, as FSDP's sharded parameters
    would (outside the root's forward they are flat shards): what passes here passes under FSDP."""
    inside = []
    step.register_forward_pre_hook(lambda module, args: inside.append(True))
    step.register_forward_hook(lambda module, args, output: inside.pop() and None)

    def check(module, args):
        if not inside:
            raise AssertionError(f"{type(module).__name__} called outside the prepared step module")

    for module in step.model.modules():
        module.register_forward_pre_hook(check)


def test_step_evaluation_and_freezing_pass_go_through_the_step_module():
    from adversarial_midibert.pretraining_evaluation import evaluate_pretraining

    model = tiny_model()
    book = MaskBook(3, 64)
    step = AdversarialMLM(model, mask_book=book)
    guard_inner_calls(step)
    batch = make_batch()
    step(batch, generator=step_generator(0, 0)).loss.backward()
    results = evaluate_pretraining(step, [batch])
    assert -1 <= results["eval_masker_spearman"] <= 1 and results["eval_token_cosine"] == results["eval_token_cosine"]
    freezing_pass(step, [batch], book, generator=torch.Generator().manual_seed(0))
    assert book.frozen_fraction() > 0
    with pytest.raises(AssertionError, match="outside the prepared step module"):  # the guard itself works
        model.base_model(batch["input_ids"], attention_mask=batch["attention_mask"])


@pytest.mark.parametrize("masking, grad_scale, reads", [
    ("adversarial", 1.0, {}), ("adversarial", 0.5, {}), ("easiest", 1.0, {}), ("random", 1.0, {}),
    # The detached masker pass runs the encoder in eval mode, where the id check reads its verdict on the host.
    ("adversarial", 0.0, {"__bool__": 1}),
])
def test_training_step_reads_nothing_back_on_the_host(masking, grad_scale, reads):
    from adversarial_midibert.pretraining import batch_to_device
    from benchmarks.profiling import count_host_reads

    book = MaskBook(3, 64)
    step = AdversarialMLM(tiny_model(), mask_book=book, masking=masking, masker_grad_scale=grad_scale)
    batch = batch_to_device(make_batch(), "cpu", book)  # the book's rows looked up on the host, before the step
    assert batch["mask_book_rows"].shape == batch["attention_mask"].shape
    with count_host_reads() as calls:
        out = step(batch, generator=step_generator(0, 0))
        out.loss.backward()
    assert dict(calls) == reads
    # ... while the counter does see a read (here the id check of an evaluation, which reads its verdict)
    with count_host_reads() as calls:
        step.eval()(batch, generator=step_generator(0, 0))
    assert calls["__bool__"] >= 1


def test_training_mode_checks_ids_without_a_host_read():
    model = tiny_model()
    batch = make_batch()
    batch["input_ids"][0, 1, 3] = VOCAB[3]  # one id past the pitch vocabulary
    with pytest.raises(RuntimeError, match="outside a vocabulary"):  # training: torch._assert_async
        model.train()(batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match="column 3"):  # inference: the full message
        model.eval()(batch["input_ids"], attention_mask=batch["attention_mask"])


def _distributed_worker(rank: int, port: str, out_dir: str, wrapper: str) -> None:
    """One of two gloo processes: a training step, the evaluation and the freezing pass through the step module
    prepared by the accelerator (DDP) or wrapped by FSDP (parameters sharded over the two processes: a pass that went
    around the wrapper would find flat shards), with every inner call guarded as in the single-process test."""
    import json
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    from accelerate import Accelerator
    from torch.nn.parallel import DistributedDataParallel

    from adversarial_midibert.pretraining import batch_to_device
    from adversarial_midibert.pretraining_evaluation import evaluate_pretraining

    accelerator = Accelerator(cpu=True)
    book = MaskBook(6, 64)
    step = AdversarialMLM(tiny_model(), mask_book=book)
    guard_inner_calls(step)
    if wrapper == "fsdp":  # on CPU the accelerator would choose DDP: wrapped here as its FSDP plugin would
        import functools

        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        from adversarial_midibert.modeling_adv_midibert import AdvMidiBertLayer

        prepared = FullyShardedDataParallel(step, device_id=torch.device("cpu"), use_orig_params=True,
                                            auto_wrap_policy=functools.partial(transformer_auto_wrap_policy,
                                                                               transformer_layer_cls={AdvMidiBertLayer}))
        optimizer = torch.optim.AdamW(prepared.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.AdamW(step.parameters(), lr=1e-3)
        prepared, optimizer = accelerator.prepare(step, optimizer)
        assert isinstance(prepared, DistributedDataParallel)
    batch = make_batch(seed=rank, segment_ids=[3 * rank, 3 * rank + 1, 3 * rank + 2])  # each process its own rows
    out = prepared(batch_to_device(batch, accelerator.device, book), generator=step_generator(0, 0, rank))
    accelerator.backward(out.loss)
    optimizer.step()
    results = evaluate_pretraining(prepared, [make_batch(seed=10 + rank)], accelerator)
    frozen = freezing_pass(prepared, [batch], book, accelerator=accelerator,
                           generator=torch.Generator().manual_seed(rank))
    weights = None if wrapper == "fsdp" else sum(float(p.double().sum()) for p in step.parameters())
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"results": results, "frozen": frozen, "book": book.fingerprint(), "weights": weights}, f)
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    # Leave without the interpreter's teardown: a gloo/FSDP worker thread still being destroyed there aborted a CI
    # run once ("terminate called without an active exception", SIGABRT) after everything above had finished.
    os._exit(0)


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_two_processes_run_step_evaluation_and_freezing_through_the_prepared_module(wrapper, tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port: other runs on the machine may hold a fixed one
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    mp.spawn(_distributed_worker, args=(port, str(tmp_path), wrapper), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0] == ranks[1]  # gathered figures, one synchronised step, one broadcast book
    assert ranks[0]["frozen"] > 0 and 0 <= ranks[0]["results"]["eval_accuracy"] <= 1
