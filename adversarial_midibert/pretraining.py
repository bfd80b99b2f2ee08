"""Adversarial masked-LM pre-training (docs/method.md section 3): the run's state, one step, the freezing pass.

One step (:class:`AdversarialMLM`, one ``forward`` so that DDP, gradient accumulation and autocast see one forward and
one backward), for every segment ``b`` of a batch:

1. the *masker* head scores every note of the uncorrupted segment, ``s = masker(x) * maskbook[b]``;
2. ``k = min(round(u * sum(maskbook[b])), round(0.15 * L_b))``, ``u ~ U(0.1, 0.3)``, ``L_b`` the segment's notes
   (other budgets: ``mask_budget``); the ``k`` highest-scored notes are chosen (never padding, BOS or EOS);
3. they are corrupted BERT-style (80% MASK, 10% random, 10% unchanged);
4. the *recoverer* (the masked-LM heads) predicts them, weighted per attribute (:class:`AttributeWeights`);
5. the masker learns which notes were hard: among the corrupted notes the 30% with the highest recovery loss get
   target 1 and the 30% with the lowest target 0, mean squared error against ``s``.

Every few epochs :func:`freezing_pass` freezes (``maskbook = 0``) the notes the masker scores highest. The random and
MusicBERT bar-level baselines go through the same forward. Where the paper and the reference code differ, the fixes of
the reference code's defects and the mechanism's options: docs/method.md sections 7 and 9.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .constants import BOS_ID, EOS_ID, IGNORE_INDEX, MASK_ID, NUM_ATTRIBUTES, NUM_SPECIAL_TOKENS
from .mask_book import MaskerScoreCache, PackedMaskBook
from .masking import (
    choose_bar_positions,
    choose_random_positions,
    choose_top_scored_positions,
    corrupt,
    maskable_positions,
    rank_positions,
    share_mask_counts,
    step_seed,
    uniform_draw,
)

__all__ = ["MASKING_METHODS", "MASKER_METHODS", "MASK_BUDGETS", "MASKER_LOSS_FORMS", "MASKER_SCORE_SOURCES",
           "AttributeWeights", "TrainingProgress", "UniformSampler", "AdversarialMLMOutput", "AdversarialMLM",
           "adversarial_mask_counts", "masker_targets", "masker_loss", "FREEZING_RULES", "freezing_pass",
           "frozen_recovery_gap", "batches_of_every_process", "batch_to_device", "step_generator",
           "DEFAULT_RECONSTRUCTION_WEIGHT", "DEFAULT_MASKER_GRAD_SCALE"]
MASKING_METHODS = ("adversarial", "random", "bar", "easiest")
# Methods that run the masker pass and learn the masker: the method, and its control that masks the notes the masker
# finds *easiest*, which shows whether the masker's choice matters at all.
MASKER_METHODS = ("adversarial", "easiest")
# The options of AdversarialMLM (mask_budget, masker_loss_form, masker_scores_from) and of freezing_pass (rule), each
# described there.
MASK_BUDGETS = ("notes", "padded", "share")
MASKER_LOSS_FORMS = ("pooled", "reference")
MASKER_SCORE_SOURCES = ("pass", "cache")
FREEZING_RULES = ("reference", "evidence")
# Defaults of the coupling between masker and encoder: see docs/results.md, "Representation health".
DEFAULT_RECONSTRUCTION_WEIGHT = 1.0
DEFAULT_MASKER_GRAD_SCALE = 1.0


# ---- Run state: mask book, attribute weights, progress (saved by checkpointing.CheckpointManager) ----------------


class AttributeWeights:
    """Dynamic attribute weights (docs/method.md 3.7): ``w_i = (1 / a_i) / sum_j (1 / a_j)``.

    ``a_i`` is attribute ``i``'s masked-token accuracy over the previous epoch: :meth:`update` adds each step's
    per-attribute correct/total counts, :meth:`end_epoch` sums them over processes and recomputes the weights (all
    ``1 / num_attributes`` in the first epoch). ``a_i`` is floored at ``min_accuracy``; an attribute with no masked
    token in the epoch keeps its previous accuracy.
    """

    def __init__(self, num_attributes: int = NUM_ATTRIBUTES, min_accuracy: float = 1e-3, device="cpu"):
        if not 0 < min_accuracy <= 1:
            raise ValueError(f"min_accuracy must be in (0, 1], got {min_accuracy}")
        self.num_attributes = num_attributes
        self.min_accuracy = min_accuracy
        self.weights = torch.full((num_attributes,), 1.0 / num_attributes, device=device)
        self.accuracies: torch.Tensor | None = None  # of the previous epoch
        self.correct = torch.zeros(num_attributes, dtype=torch.float64, device=device)
        self.total = torch.zeros(num_attributes, dtype=torch.float64, device=device)

    def update(self, correct: torch.Tensor, total: torch.Tensor) -> None:
        """Add counts of shape `(num_attributes,)` or `(B, num_attributes)` (this process's, not reduced)."""
        correct = correct.detach().reshape(-1, self.num_attributes).sum(0)
        total = total.detach().reshape(-1, self.num_attributes).sum(0)
        self.correct += correct.to(self.correct)
        self.total += total.to(self.total)

    def end_epoch(self, accelerator: Any = None) -> torch.Tensor:
        """Reduce the epoch's counts across processes, set the next epoch's weights, reset the counts; return the
        epoch's accuracies `(num_attributes,)` (NaN where an attribute had no masked token)."""
        counts = torch.stack([self.correct, self.total])
        if accelerator is not None and accelerator.num_processes > 1:
            counts = accelerator.reduce(counts.to(accelerator.device), reduction="sum").to(self.correct)
        correct, total = counts[0], counts[1]
        epoch_acc = torch.where(total > 0, correct / total.clamp_min(1), torch.full_like(total, float("nan")))
        self.correct.zero_()
        self.total.zero_()
        return self.set_accuracies(epoch_acc)

    def set_accuracies(self, accuracies) -> torch.Tensor:
        """Set the weights from per-attribute accuracies ``a_i`` (NaN = no masked token: keep the previous one): the
        training counts' (:meth:`end_epoch`) or validation accuracies (the reference code's choice). Returns them."""
        acc = torch.as_tensor(accuracies, dtype=torch.float64, device=self.weights.device).reshape(-1)
        if acc.numel() != self.num_attributes:
            raise ValueError(f"expected {self.num_attributes} accuracies, got {acc.numel()}")
        previous = self.accuracies.to(acc) if self.accuracies is not None else torch.ones_like(acc)
        known = ~torch.isnan(acc)
        kept = torch.where(known, acc, previous)
        self.accuracies = kept.float()
        inv = 1.0 / kept.clamp_min(self.min_accuracy)
        self.weights = (inv / inv.sum()).to(self.weights)
        return acc.float()

    def state_dict(self) -> dict:
        return {
            "weights": self.weights.cpu().clone(),
            "accuracies": None if self.accuracies is None else self.accuracies.cpu().clone(),
            "correct": self.correct.cpu().clone(),
            "total": self.total.cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.weights.device
        self.weights = state["weights"].to(device)
        self.accuracies = None if state.get("accuracies") is None else state["accuracies"].to(device)
        self.correct = state["correct"].to(device=device, dtype=torch.float64)
        self.total = state["total"].to(device=device, dtype=torch.float64)


class TrainingProgress:
    """A run's counters (checkpointed): the epoch in progress (0-based), optimizer steps done (``completed_steps``),
    batches done (``micro_step``, micro-batches included; seeds the next step's randomness) and batches done in this
    epoch (``epoch_micro_step``: what a resumed run skips)."""

    def __init__(self):
        self.epoch = 0
        self.completed_steps = 0
        self.micro_step = 0
        self.epoch_micro_step = 0
        self.runtime_before = 0.0  # seconds of the run's earlier stretches, up to the checkpoint it resumed from
        self.clock_start = time.time()

    def start_clock(self, at: float | None = None) -> None:
        """Time this stretch of the run from ``at`` (default: now)."""
        self.clock_start = time.time() if at is None else at

    def runtime(self) -> float:
        """Wall seconds of the run: this stretch and, when resumed, the earlier ones up to the checkpoint."""
        return self.runtime_before + time.time() - self.clock_start

    def state_dict(self) -> dict:
        return {**{k: v for k, v in vars(self).items() if k != "clock_start"}, "runtime_before": self.runtime()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("epoch", "completed_steps", "micro_step", "epoch_micro_step"):
            setattr(self, key, int(state[key]))
        self.runtime_before = float(state.get("runtime_before", 0.0))  # none in checkpoints of older versions


@dataclass
class UniformSampler:
    """Draws one number per segment uniformly in ``[low, high]`` (``low == high`` gives a constant)."""

    low: float
    high: float

    def __post_init__(self):
        if self.high < self.low:
            raise ValueError(f"UniformSampler needs low <= high, got {self.low}, {self.high}")

    def __call__(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        return self.low + (self.high - self.low) * uniform_draw(n, generator, device)


def step_generator(seed: int, step: int, process_index: int = 0, device="cpu") -> torch.Generator:
    """A generator on ``device`` seeded with :func:`~adversarial_midibert.masking.step_seed` of the run's seed, the
    step (or any integer naming the draw) and the process's rank: a resumed run draws the same masks as an
    uninterrupted one."""
    gen = torch.Generator(device=device)
    gen.manual_seed(step_seed(seed, step, process_index))
    return gen
# ---- Pure tensor pieces of the step ---------------------------------------------------------------------------


def adversarial_mask_counts(
    book_counts: torch.Tensor, num_notes: torch.Tensor, u: torch.Tensor, max_ratio: float = 0.15
) -> torch.Tensor:
    """``k = min(round(u * book_counts), round(max_ratio * num_notes))`` per segment (docs/method.md 3.3): all `(B,)`,
    ``book_counts`` the unfrozen maskable notes, ``u`` the fraction drawn per segment; a `torch.LongTensor`."""
    k_book = torch.round(u.double() * book_counts.double())
    k_cap = torch.round(num_notes.double() * max_ratio)
    return torch.minimum(k_book, k_cap).long()


def masker_targets(
    per_token_loss: torch.Tensor,
    corrupted: torch.Tensor,
    fraction: float = 0.3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the masker loss (docs/method.md 3.6), per segment and without a sign flip.

    In each row, among the ``n_b`` corrupted positions, the ``floor(fraction * n_b)`` with the highest recovery loss
    (``per_token_loss`` `(B, L)`) get target 1 and as many with the lowest target 0; ties are broken with
    ``generator`` (by position without one). ``fraction`` is at most 0.5.

    Returns:
        `(targets, selected)`: float targets `(B, L)` (0 where not selected) and bool `(B, L)` selected.
    """
    if not 0 <= fraction <= 0.5:
        raise ValueError(f"fraction must be in [0, 0.5], got {fraction}")
    ranks = rank_positions(per_token_loss, corrupted, generator)  # one order: the two groups never overlap
    n = corrupted.sum(dim=1, keepdim=True)
    m = torch.floor(n.double() * fraction).long()
    hard = (ranks < m) & corrupted
    easy = (ranks >= n - m) & (ranks < n) & corrupted
    return hard.float(), hard | easy


def masker_loss(
    scores: torch.Tensor, targets: torch.Tensor, selected: torch.Tensor, form: str = "pooled"
) -> torch.Tensor:
    """Mean squared error between masker scores and targets (see :func:`masker_targets`), always connected to
    ``scores``.

    ``form="pooled"``: one mean over every selected position of the batch. ``"reference"``: the reference code's, per
    segment the mean over its hard group plus the mean over its easy group, averaged over segments (about twice).
    """
    if form not in MASKER_LOSS_FORMS:
        raise ValueError(f"masker loss form must be one of {MASKER_LOSS_FORMS}, got {form!r}")
    sel = selected.to(torch.float32)
    err = (scores.float() - targets.float()).square() * sel
    if form == "pooled":
        return err.sum() / sel.sum().clamp_min(1.0)
    hard = sel * targets.float()
    easy = sel - hard
    per_segment = ((err * hard).sum(1) / hard.sum(1).clamp_min(1.0)
                   + (err * easy).sum(1) / easy.sum(1).clamp_min(1.0))
    return per_segment.mean()


# ---- The step -------------------------------------------------------------------------------------------------


@dataclass
class AdversarialMLMOutput:
    """What one step returns.

    Attributes:
        loss (`torch.Tensor`): total loss (recoverer + masker_loss_weight * masker + reconstruction term).
        recoverer_loss, masker_loss, reconstruction_loss (`torch.Tensor`): its terms (0 when not computed).
        attribute_correct, attribute_total (`torch.Tensor` of shape `(B, 8)`): correct predictions and masked
            positions per segment and attribute.
        num_masked (`torch.Tensor` of shape `(B,)`): chosen positions per segment.
        masked_share (`torch.Tensor` of shape `(B,)`): the share of the segment's notes masked (for bar masking, of
            its (note, attribute) cells).
        frozen_fraction (`torch.Tensor`): fraction of the batch's notes frozen in the mask book.
        masker_scores (`torch.Tensor` of shape `(B, L)`, *optional*): the masker's scores (masker methods only): of
            the uncorrupted segment, or with ``masker_scores_from="cache"`` of the corrupted one.
        per_token_loss (`torch.Tensor` of shape `(B, L)`, *optional*): detached recovery loss per token.
        chosen (`torch.Tensor`, *optional*): the chosen positions `(B, L)` (or cells `(B, L, 8)` for bar).
        corrupted (`torch.Tensor`, *optional*): the positions actually corrupted (MASK or random), `(B, L)`.
    """

    loss: torch.Tensor
    recoverer_loss: torch.Tensor
    masker_loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    attribute_correct: torch.Tensor
    attribute_total: torch.Tensor
    num_masked: torch.Tensor
    masked_share: torch.Tensor
    frozen_fraction: torch.Tensor
    masker_scores: torch.Tensor | None = None
    per_token_loss: torch.Tensor | None = None
    chosen: torch.Tensor | None = None
    corrupted: torch.Tensor | None = None


class AdversarialMLM(nn.Module):
    """One whole pre-training step as a module: ``forward(batch)`` returns the loss to back-propagate.

    Args:
        model (`AdvMidiBertForMaskedLM`): the model (embeddings, encoder, masked-LM heads, masker head).
        mask_book (`PackedMaskBook`, *optional*): the run's mask book; without one nothing is frozen.
        attribute_weights (`AttributeWeights`, *optional*): the run's attribute weights; without one all are ``1/8``.
        masking (`str`): ``"adversarial"`` (the method), ``"easiest"`` (its control: the notes the masker scores
            lowest), ``"random"`` (15% of the notes, 80/10/10) or ``"bar"`` (MusicBERT bar-level masking). The two
            baselines skip the masker pass and the masker loss.
        masker_grad_scale (`float`): share of the masker loss's gradient that reaches the shared encoder, in
            ``[0, 1]``: 1 = the reference code; 0 = the masker pass's encoder runs without gradient in eval mode and
            only the masker head learns (cheaper); in between the gradient is scaled (forward values unchanged).
        masker_loss_weight (`float`): weight of the masker loss in the total.
        reconstruction_weight (`float`): weight of the recoverer's cross-entropy over every real token (padding
            excluded): the reference code uses 1, the paper does not mention it (0).
        mask_ratio_range (`tuple[float, float]`): range of ``u`` in ``k = round(u * sum(maskbook[b]))``.
        max_mask_ratio (`float`): cap on ``k`` as a fraction of the notes (0.15), also the baselines' ratio.
        masker_target_fraction (`float`): share of the corrupted positions labelled hard (1) and easy (0).
        mask_prob (`float`), random_prob (`float`): the 80/10/10 corruption split.
        mask_budget (`str`): what ``k`` is counted over: ``"notes"`` (the segment's real notes), ``"padded"`` (the
            reference code: the book counts padding rows up to ``max_position_embeddings`` and the cap is a share of
            that length; padding is still never chosen) or ``"share"`` (no ``u``: ``k`` = ``max_mask_ratio`` of the
            real notes, at most the notes the book allows, so the masked share holds as notes freeze).
        masker_loss_form (`str`): ``"pooled"`` or ``"reference"``, see :func:`masker_loss`.
        masker_scores_from (`str`): ``"pass"``: a masker pass over the uncorrupted segment chooses (the method).
            ``"cache"``: the segment's scores from its previous visit in ``score_cache`` choose (uniform random for a
            segment never seen); the recoverer's pass also runs the masker head, which learns from those scores of
            the corrupted segment, written back to the cache (one encoder pass per step). Validation steps
            (``use_mask_book=False``) choose with a masker pass.
        score_cache (`MaskerScoreCache`, *optional*): the run's score cache (required by ``"cache"``).
    """

    def __init__(
        self,
        model: nn.Module,
        mask_book: PackedMaskBook | None = None,
        attribute_weights: AttributeWeights | None = None,
        masking: str = "adversarial",
        masker_grad_scale: float = DEFAULT_MASKER_GRAD_SCALE,
        masker_loss_weight: float = 1.0,
        reconstruction_weight: float = DEFAULT_RECONSTRUCTION_WEIGHT,
        mask_ratio_range: tuple[float, float] = (0.1, 0.3),
        max_mask_ratio: float = 0.15,
        masker_target_fraction: float = 0.3,
        mask_prob: float = 0.8,
        random_prob: float = 0.1,
        mask_budget: str = "notes",
        masker_loss_form: str = "pooled",
        masker_scores_from: str = "pass",
        score_cache: MaskerScoreCache | None = None,
    ):
        super().__init__()
        for name, value, allowed in (("masker_scores_from", masker_scores_from, MASKER_SCORE_SOURCES),
                                     ("mask_budget", mask_budget, MASK_BUDGETS),
                                     ("masker_loss_form", masker_loss_form, MASKER_LOSS_FORMS),
                                     ("masking", masking, MASKING_METHODS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if masker_scores_from == "cache" and score_cache is None:
            raise ValueError("masker_scores_from='cache' needs a score_cache (MaskerScoreCache of the training split)")
        if not 0.0 <= max_mask_ratio <= 1.0:
            raise ValueError(f"max_mask_ratio must be in [0, 1], got {max_mask_ratio}")
        if reconstruction_weight < 0 or masker_loss_weight < 0:
            raise ValueError("masker_loss_weight and reconstruction_weight must be >= 0")
        if not 0.0 <= masker_grad_scale <= 1.0:
            raise ValueError(f"masker_grad_scale must be in [0, 1], got {masker_grad_scale}")
        self.model = model
        self.mask_book = mask_book
        self.attribute_weights = attribute_weights
        self.masking = masking
        self.masker_grad_scale = float(masker_grad_scale)
        self.masker_loss_weight = masker_loss_weight
        self.reconstruction_weight = reconstruction_weight
        self.mask_ratio = UniformSampler(*mask_ratio_range)
        self.max_mask_ratio = max_mask_ratio
        self.masker_target_fraction = masker_target_fraction
        self.mask_prob = mask_prob
        self.random_prob = random_prob
        self.mask_budget = mask_budget
        self.masker_loss_form = masker_loss_form
        self.masker_scores_from = masker_scores_from
        self.score_cache = score_cache
        config = model.config
        if min(config.vocab_sizes) <= NUM_SPECIAL_TOKENS:  # checked once here, not by `corrupt` at every step
            raise ValueError(f"every vocabulary must have non-special ids (> {NUM_SPECIAL_TOKENS}), got "
                             f"{list(config.vocab_sizes)}")
        self.register_buffer(
            "vocab_sizes", torch.as_tensor(list(config.vocab_sizes), dtype=torch.long), persistent=False
        )
        self.mask_token_id = int(getattr(config, "mask_token_id", MASK_ID))

    # -- pieces -------------------------------------------------------------------------------------------------
    def _weights(self, device) -> torch.Tensor:
        if self.attribute_weights is None:
            return torch.full((len(self.vocab_sizes),), 1.0 / len(self.vocab_sizes), device=device)
        return self.attribute_weights.weights.to(device)

    @property
    def detach_masker(self) -> bool:
        """Whether the masker pass leaves the encoder alone (``masker_grad_scale == 0``)."""
        return self.masker_grad_scale == 0.0

    def _masker_scores(self, input_ids, attention_mask) -> torch.Tensor:
        # Through the model's own call (compiled with it by `--torch_compile`), so the whole encoder pass is compiled.
        if self.detach_masker:
            # Encoder without gradient and without dropout (as in the freezing pass; it also lets sdpa use its fused
            # kernel); only the masker head learns, on these detached features.
            encoder = self.model.base_model
            was_training = encoder.training
            encoder.eval()
            try:
                with torch.no_grad():
                    hidden = self.model(input_ids, attention_mask=attention_mask, compute_logits=False,
                                        compute_masker=False, output_hidden_states=True).hidden_states[-1]
            finally:
                encoder.train(was_training)
            scores = self.model.masker(hidden.detach())
            return scores * attention_mask.to(scores.dtype)
        return self.model(input_ids, attention_mask=attention_mask, compute_logits=False, compute_masker=True,
                          masker_grad_scale=self.masker_grad_scale).masker_scores

    def forward(
        self,
        batch: dict,
        generator: torch.Generator | None = None,
        use_mask_book: bool = True,
        return_details: bool = False,
        attribute_weights: torch.Tensor | None = None,
        masking: str | None = None,
        score_only: bool = False,
    ) -> AdversarialMLMOutput:
        """Run one step (or, with ``score_only``, only score the uncorrupted batch).

        Every pass of the model goes through this call, so that a prepared module (DDP, FSDP, autocast) and a compiled
        model see the training step, the evaluation and the freezing pass alike.

        Args:
            batch (`dict`): ``input_ids`` `(B, L, 8)`, ``attention_mask`` `(B, L)`, and for the mask book and the score
                cache ``segment_id`` `(B,)` or the rows :func:`batch_to_device` looked up (``mask_book_rows``,
                ``masker_score_codes``); the score cache also needs ``segment_id`` to write the new scores.
            generator (`torch.Generator`, *optional*): randomness of the masking (see :func:`step_generator`).
            use_mask_book (`bool`): use the mask book and the score cache (training); ``False`` for validation.
            return_details (`bool`): also return scores, per-token loss and chosen positions.
            attribute_weights (`torch.Tensor` of shape `(8,)`, *optional*): instead of the run's (e.g. uniform, for a
                validation loss comparable across epochs).
            masking (`str`, *optional*): instead of the run's (validation: ``"random"``, one yardstick for all).
            score_only (`bool`): return the model's output on the uncorrupted batch (``masker_scores`` and every
                layer's ``hidden_states``, no logits): the freezing pass and the evaluation's health figures.
        """
        if score_only:
            return self.model(batch["input_ids"], attention_mask=batch.get("attention_mask"), compute_logits=False,
                              compute_masker=True, output_hidden_states=True)
        masking = self.masking if masking is None else masking
        if masking not in MASKING_METHODS:
            raise ValueError(f"masking must be one of {MASKING_METHODS}, got {masking!r}")
        input_ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape[:2], dtype=torch.long, device=input_ids.device)
        device = input_ids.device
        weights = self._weights(device) if attribute_weights is None else attribute_weights.to(device)
        maskable = maskable_positions(input_ids, attention_mask)
        num_notes = maskable.sum(dim=1)
        zero = torch.zeros((), device=device)

        book_rows = None
        if use_mask_book and self.mask_book is not None and masking in MASKER_METHODS:
            if "mask_book_rows" in batch:
                book_rows = batch["mask_book_rows"].to(device=device, dtype=torch.bool)
            elif "segment_id" in batch:
                book_rows = self.mask_book.rows(batch["segment_id"], input_ids.shape[1]).to(device)
            else:
                raise KeyError("batch has no 'segment_id' column: the mask book needs it (see docs/data.md)")
            frozen = ((~book_rows) & maskable).sum().float() / num_notes.sum().clamp_min(1).float()
        else:
            frozen = zero

        scores = None
        cached = use_mask_book and masking in MASKER_METHODS and self.masker_scores_from == "cache"
        if masking in MASKER_METHODS:
            # (1) masker on the uncorrupted segment (or the scores of the segment's previous visit), (2) k under the
            # mask book, top-k by score (bottom-k for the easiest-first control), ties broken at random.
            if cached:
                codes = batch.get("masker_score_codes")
                if codes is None:
                    if "segment_id" not in batch:
                        raise KeyError("batch has no 'segment_id' column: the score cache needs it (see docs/data.md)")
                    codes = self.score_cache.codes(batch["segment_id"], input_ids.shape[1])
                previous, seen = MaskerScoreCache.decode(codes.to(device))
                unseen = uniform_draw(previous.shape, generator, device)
                choice_scores = torch.where(seen, previous, unseen)
            else:
                scores = choice_scores = self._masker_scores(input_ids, attention_mask)
            allowed = maskable if book_rows is None else (maskable & book_rows)
            s = choice_scores if book_rows is None else choice_scores * book_rows.to(choice_scores.dtype)
            if self.mask_budget == "share":  # the choice takes at most the notes the book allows
                k = share_mask_counts(maskable, self.max_mask_ratio)
            else:
                u = self.mask_ratio(input_ids.shape[0], generator, device)
                book_counts, budget_length = allowed.sum(dim=1), num_notes
                if self.mask_budget == "padded":
                    padded_length = int(getattr(self.model.config, "max_position_embeddings", input_ids.shape[1]))
                    padding_rows = padded_length - attention_mask.sum(dim=1)
                    book_counts = book_counts + padding_rows
                    budget_length = torch.full_like(num_notes, padded_length)
                k = adversarial_mask_counts(book_counts, budget_length, u, self.max_mask_ratio)
            chosen = choose_top_scored_positions(s, allowed, k, generator=generator, largest=masking == "adversarial")
        elif masking == "random":
            chosen = choose_random_positions(maskable, self.max_mask_ratio, generator)
        else:
            chosen = choose_bar_positions(input_ids, maskable, self.max_mask_ratio, generator)

        # (3) corruption, (4) recoverer pass.
        corrupted_ids, labels, corrupted = corrupt(
            input_ids, chosen, self.vocab_sizes, self.mask_token_id, generator, self.mask_prob, self.random_prob
        )
        out = self.model(
            corrupted_ids,
            attention_mask=attention_mask,
            labels=labels,
            attribute_weights=weights,
            compute_masker=cached,
            masker_grad_scale=self.masker_grad_scale,
        )
        recoverer_loss = out.loss
        per_token_loss = out.per_token_loss.detach()
        if cached:  # the masker head's scores of this pass: learnt from below, and kept for the segment's next visit
            scores = out.masker_scores
            self.score_cache.set_rows(batch["segment_id"], scores, maskable)

        reconstruction = zero
        if self.reconstruction_weight > 0:
            real = attention_mask.bool()
            full_labels = input_ids.masked_fill(~real.unsqueeze(-1), IGNORE_INDEX)
            _, _, token_loss = self.model.masked_lm_loss(out.logits, full_labels, weights)  # float32
            reconstruction = (token_loss * real).sum() / real.sum().clamp_min(1)

        # (5) masker loss.
        m_loss = zero
        if scores is not None:
            targets, selected = masker_targets(per_token_loss, corrupted, self.masker_target_fraction, generator)
            m_loss = masker_loss(scores, targets, selected, self.masker_loss_form)

        loss = recoverer_loss + self.masker_loss_weight * m_loss + self.reconstruction_weight * reconstruction

        with torch.no_grad():
            has_label = labels != IGNORE_INDEX  # (B, L, 8)
            preds = torch.stack([logit.argmax(-1) for logit in out.logits], dim=-1)
            correct = ((preds == labels) & has_label).sum(dim=1)
            total = has_label.sum(dim=1)
            num_masked = chosen.reshape(chosen.shape[0], chosen.shape[1], -1).any(-1).sum(dim=1)
            # share of the notes' attribute cells: for token masking the share of notes; for bar masking the share
            # of (note, attribute) cells (a note with one masked attribute is one eighth masked)
            cells = chosen.reshape(chosen.shape[0], chosen.shape[1], -1)
            masked_share = cells.float().mean(-1).sum(1) / num_notes.clamp_min(1).float()

        return AdversarialMLMOutput(
            loss=loss,
            recoverer_loss=recoverer_loss.detach(),
            masker_loss=m_loss.detach(),
            reconstruction_loss=reconstruction.detach(),
            attribute_correct=correct,
            attribute_total=total,
            num_masked=num_masked,
            masked_share=masked_share,
            frozen_fraction=frozen.detach(),
            masker_scores=scores.detach() if (return_details and scores is not None) else None,
            per_token_loss=per_token_loss if return_details else None,
            chosen=chosen if return_details else None,
            corrupted=corrupted if return_details else None,
        )


# ---- Freezing -------------------------------------------------------------------------------------------------


def batches_of_every_process(dataloader, accelerator: Any = None) -> Iterator[dict | None]:
    """This process's batches, then ``None`` while another process still has batches, so that collective calls in
    the loop line up (without a distributed ``accelerator`` this is ``iter(dataloader)``)."""
    distributed = accelerator is not None and accelerator.num_processes > 1
    iterator = iter(dataloader)
    while True:
        batch = next(iterator, None)
        if distributed:
            more = torch.tensor([0 if batch is None else 1], device=accelerator.device)
            if int(accelerator.gather(more).max()) == 0:
                return
        elif batch is None:
            return
        yield batch


def batch_to_device(batch: dict, device, mask_book: PackedMaskBook | None = None,
                    score_cache: MaskerScoreCache | None = None) -> dict:
    """A host batch on ``device`` without a host sync: the mask book's rows (``mask_book_rows`` `(B, L)` bool) and the
    score cache's codes (``masker_score_codes`` `(B, L)` uint8) are looked up on the host first, then every tensor is
    copied with ``non_blocking``. :class:`AdversarialMLM` reads these keys instead of the segment ids."""
    batch = dict(batch)
    pin = torch.device(device).type == "cuda"
    for store, key, look_up in ((mask_book, "mask_book_rows", "rows"), (score_cache, "masker_score_codes", "codes")):
        if store is not None and "segment_id" in batch and key not in batch:
            rows = getattr(store, look_up)(batch["segment_id"], batch["input_ids"].shape[1])
            batch[key] = rows.pin_memory() if pin else rows
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def freezing_pass(
    model: nn.Module,
    dataloader,
    mask_book: PackedMaskBook,
    fraction_sampler: Callable = UniformSampler(0.1, 0.3),
    unfreeze_sampler: Callable = UniformSampler(0.0, 0.1),
    accelerator: Any = None,
    generator: torch.Generator | None = None,
    rule: str = "reference",
    score_threshold: float = 0.5,
    keep_unfrozen: float = 0.0,
) -> float:
    """Score every training segment and freeze its highest-scored notes (docs/method.md 3.8).

    ``rule="reference"`` (the reference code): per segment, the fraction ``fraction_sampler`` of its still-maskable
    notes with the highest masker score get ``maskbook = 0``, then every frozen note of the segment is unfrozen with
    probability ``p ~ unfreeze_sampler``. ``rule="evidence"``: every real note is rescored and frozen iff its masker
    score is at least ``score_threshold`` (0.5: found harder more often than easier). Every process ends with the same
    book (a process out of batches joins the gathers until all are done).

    Args:
        model (`AdversarialMLM` as prepared by the accelerator, or an `AdvMidiBertForMaskedLM`): scores the segments;
            the prepared step module's ``score_only`` call goes through DDP/FSDP, autocast and compilation.
        dataloader: the *unshuffled* training loader, batches with ``input_ids``, ``attention_mask``, ``segment_id``.
        mask_book (`PackedMaskBook`): updated in place.
        fraction_sampler, unfreeze_sampler (`Callable[[int, torch.Generator, device], torch.Tensor]`): per segment,
            the fraction to freeze and the unfreeze probability (``"reference"``).
        accelerator (`accelerate.Accelerator`, *optional*): for the gather and the broadcast.
        generator (`torch.Generator`, *optional*): randomness (seed it identically for a reproducible run).
        rule (`str`): one of ``FREEZING_RULES``.
        score_threshold (`float`): ``"evidence"``: the masker score from which a note is frozen, in ``[0, 1]``.
        keep_unfrozen (`float`): ``"evidence"``: the share of every segment's notes never frozen (its lowest-scored),
            so that the ``"share"`` budget can always mask its ``max_mask_ratio``. 0 = no limit.

    Returns:
        The book's frozen fraction afterwards.
    """
    if rule not in FREEZING_RULES:
        raise ValueError(f"freezing rule must be one of {FREEZING_RULES}, got {rule!r}")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    was_training = model.training
    model.eval()
    distributed = accelerator is not None and accelerator.num_processes > 1
    model_device = next(model.parameters()).device
    inner = model
    while not isinstance(inner, AdversarialMLM) and isinstance(getattr(inner, "module", None), nn.Module):
        inner = inner.module  # DDP, FSDP (prepared by the accelerator or not)

    def masker_scores(input_ids, attention_mask):
        if isinstance(inner, AdversarialMLM):
            return model({"input_ids": input_ids, "attention_mask": attention_mask}, score_only=True).masker_scores
        return model(input_ids, attention_mask=attention_mask, compute_logits=False).masker_scores

    try:
        for batch in batches_of_every_process(dataloader, accelerator):
            if batch is None:  # this process is done, another is not: take part in the gathers only
                # A sharded model (FSDP) gathers its parameters in every forward, a collective call: join it.
                ends = torch.tensor([[BOS_ID] * NUM_ATTRIBUTES, [EOS_ID] * NUM_ATTRIBUTES], device=model_device)
                masker_scores(ends.unsqueeze(0), torch.ones(1, 2, dtype=torch.long, device=model_device))
                seg = torch.empty(0, dtype=torch.long, device=model_device)
                full = torch.empty(0, mask_book.max_len, dtype=torch.uint8, device=model_device)
                notes = torch.empty(0, dtype=torch.long, device=model_device)
            else:
                input_ids = batch["input_ids"].to(model_device)
                attention_mask = batch["attention_mask"].to(model_device)
                device = input_ids.device
                gen = generator  # on any device: the numbers are drawn on the generator's device and moved
                maskable = maskable_positions(input_ids, attention_mask)
                rows = mask_book.rows(batch["segment_id"], input_ids.shape[1]).to(device)
                allowed = maskable & rows
                scores = masker_scores(input_ids, attention_mask)
                batch_size = input_ids.shape[0]
                if rule == "evidence":
                    frozen = maskable & (scores.float() >= score_threshold)
                    if keep_unfrozen > 0:  # the highest-scored of them, leaving the budget's notes maskable
                        limit = maskable.sum(dim=1) - share_mask_counts(maskable, keep_unfrozen)
                        frozen = choose_top_scored_positions(scores.float(), frozen,
                                                             torch.minimum(frozen.sum(dim=1), limit))
                else:
                    frac = fraction_sampler(batch_size, gen, device)
                    n_freeze = torch.round(frac.double() * allowed.sum(dim=1).double()).long()
                    to_freeze = choose_top_scored_positions(scores.float(), allowed, n_freeze, generator=gen)
                    frozen = (maskable & ~rows) | to_freeze
                    p = unfreeze_sampler(batch_size, gen, device)
                    draw = uniform_draw(frozen.shape, gen, device)
                    frozen = frozen & ~(draw < p.unsqueeze(1))
                new_rows = (~frozen).to(torch.uint8)
                # Full-width rows so that every process gathers tensors of one shape.
                full = torch.ones(batch_size, mask_book.max_len, dtype=torch.uint8, device=device)
                full[:, : new_rows.shape[1]] = new_rows[:, : mask_book.max_len]
                seg = batch["segment_id"].to(device=device, dtype=torch.long)
                notes = maskable.sum(dim=1)
            if distributed:
                # Batches of different sizes (the last ones of an unprepared loader) are padded with segment -1.
                seg = accelerator.pad_across_processes(seg, dim=0, pad_index=-1)
                full = accelerator.pad_across_processes(full, dim=0, pad_index=1)
                notes = accelerator.pad_across_processes(notes, dim=0, pad_index=0)
                seg, full, notes = accelerator.gather((seg, full, notes))
                keep = seg >= 0
                seg, full, notes = seg[keep], full[keep], notes[keep]
            mask_book.set_rows(seg, full, notes=notes)
    finally:
        model.train(was_training)
    mask_book.broadcast(accelerator)
    return mask_book.frozen_fraction()


def frozen_recovery_gap(per_token_loss: torch.Tensor, frozen: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """Mean recovery loss of the frozen notes minus that of the unfrozen ones, over the ``measured`` notes (all
    `(B, L)`): a freezing rule that follows the evidence gives a clear positive gap. A float32 0-dim tensor, NaN when
    either group is empty."""
    loss = per_token_loss.detach().float()
    frozen, measured = frozen.bool(), measured.bool()
    means = [torch.where(group, loss, 0.0).sum() / group.sum() for group in (frozen & measured, ~frozen & measured)]
    return means[0] - means[1]
