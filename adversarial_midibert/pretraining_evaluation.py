"""Evaluation of pre-training on one yardstick for every variant, and the health of the representations.

Three questions asked of a model on the validation split (:func:`evaluate_pretraining`):

1. How well does it recover masked notes? On the same positions for every run (the *yardstick*: 15 % of the notes
   at random, seeded by ``YARDSTICK_SEED``, corrupted 80/10/10), so that ``eval_loss`` / ``eval_accuracy*`` compare
   variants, seeds and epochs; the run's own masking (``eval_run_masking_*``) only compares epochs of one run.
2. Are the token representations healthy? :func:`representation_health`: the mean cosine between a segment's notes
   (1 = collapse) and the effective rank of its note matrix (Roy & Vetterli 2007).
3. Does the masker know which notes are hard? The Spearman correlation between a note's masker score and its
   recovery loss under the yardstick (``eval_masker_spearman``; near 0: no better than chance).
"""

from __future__ import annotations

from typing import Any

import torch

from .constants import ATTRIBUTE_NAMES
from .masking import maskable_positions

__all__ = ["YARDSTICK_SEED", "representation_health", "spearman_correlation", "spearman_within_rows",
           "evaluate_pretraining"]

# Seed of the yardstick masking: the same for every run, so every variant is scored on the same corrupted positions.
YARDSTICK_SEED = 20240711


@torch.no_grad()
def representation_health(hidden_states: torch.Tensor, note_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine similarity between the notes (``note_mask`` `(B, L)`) of each segment of ``hidden_states``
    `(B, L, H)`, and each segment's effective rank (the exponential of the entropy of its normalised singular values):
    ``(cosine, effective_rank)``, `(B,)` each, NaN below two notes."""
    h = hidden_states.float() * note_mask.unsqueeze(-1)
    n = note_mask.sum(dim=1).float()
    unit = torch.nn.functional.normalize(h, dim=-1)  # zero rows stay zero
    # Sum of all pairwise cosines = |sum of unit vectors|^2; remove the n self-pairs.
    total = unit.sum(dim=1).square().sum(dim=-1)
    cosine = (total - n) / (n * (n - 1)).clamp_min(1.0)
    singular = torch.linalg.svdvals(h)  # zero rows add nothing
    p = singular / singular.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)
    rank = torch.exp(entropy)
    few = n < 2
    nan = torch.full_like(cosine, float("nan"))
    return torch.where(few, nan, cosine), torch.where(few, nan, rank)


def spearman_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-D tensors (ties ranked by order; NaN with fewer than 3 pairs)."""
    return float(spearman_within_rows(x.reshape(1, -1), y.reshape(1, -1))[0])


def spearman_within_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation inside each row of two `(B, L)` tensors, over the positions where both are numbers
    (ties ranked by position): `(B,)` float64, NaN for a row with fewer than 3 pairs or a constant side. Selection
    happens inside a segment, so this says whether the masker ranks a segment's notes well."""
    x, y = x.double(), y.double()
    valid = ~(torch.isnan(x) | torch.isnan(y))
    n = valid.sum(dim=1, keepdim=True).double()

    def ranks(v):
        key = v.masked_fill(~valid, float("inf"))  # invalid entries last
        order = torch.sort(key, dim=1, stable=True).indices
        r = torch.empty_like(order)
        r.scatter_(1, order, torch.arange(v.shape[1], device=v.device).expand_as(order))
        return torch.where(valid, r.double() - (n - 1) / 2, torch.zeros_like(v))

    rx, ry = ranks(x), ranks(y)
    denominator = (rx.square().sum(1) * ry.square().sum(1)).sqrt()
    rho = (rx * ry).sum(1) / denominator.clamp_min(1e-300)
    return torch.where((n.squeeze(1) >= 3) & (denominator > 0), rho, torch.full_like(rho, float("nan")))


def _gather(accelerator, tensors):
    return accelerator.gather_for_metrics(tensors) if accelerator is not None else tensors


@torch.no_grad()
def evaluate_pretraining(
    step_model: Any,
    dataloader,
    accelerator: Any = None,
    seed: int = 0,
    yardstick_seed: int = YARDSTICK_SEED,
    run_masking: str | None = None,
) -> dict[str, float]:
    """Score a pre-training run on the validation batches of ``dataloader`` (unshuffled; see the module docstring).

    Args:
        step_model (`AdversarialMLM`, possibly prepared by the accelerator): every pass goes through its call.
        accelerator (`accelerate.Accelerator`, *optional*): for the device, the process index and the gather.
        seed (`int`): the run's seed (its own masking on validation, the same every epoch).
        yardstick_seed (`int`): seed of the yardstick masking (keep the default to compare runs).
        run_masking (`str`, *optional*): the run's masking method (default: the step module's).

    Returns:
        ``eval_loss``, ``eval_accuracy``, ``eval_accuracy_<attribute>``, the same with ``eval_run_masking_``,
        ``eval_token_cosine``, ``eval_effective_rank`` and, for masker methods, ``eval_masker_spearman`` (pooled over
        the split's corrupted notes) and ``eval_masker_spearman_within`` (per segment, averaged).
    """
    from .pretraining import MASKER_METHODS, step_generator  # pretraining imports nothing from here

    inner = accelerator.unwrap_model(step_model) if accelerator is not None else step_model
    model = inner.model
    run_masking = run_masking or inner.masking
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    process = accelerator.process_index if accelerator is not None else 0
    num_attributes = len(ATTRIBUTE_NAMES)
    uniform = torch.full((num_attributes,), 1.0 / num_attributes, device=device)
    sums = {name: torch.zeros(num_attributes, dtype=torch.float64, device=device)
            for name in ("yard_correct", "yard_total", "run_correct", "run_total")}
    yard_losses, run_losses, cosines, ranks, scores_at, losses_at, within = [], [], [], [], [], [], []

    was_training = step_model.training
    step_model.eval()
    try:
        for i, batch in enumerate(dataloader):
            input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
            batch_size = input_ids.shape[0]
            # 1. the yardstick: random 15 %, the same positions for every run
            gen = step_generator(yardstick_seed, i, process, device)
            yard = step_model(batch, generator=gen, use_mask_book=False, attribute_weights=uniform,
                              masking="random", return_details=True)
            # 2. the run's own masking
            gen = step_generator(seed, 1_000_000_000 + i, process, device)
            own = step_model(batch, generator=gen, use_mask_book=False, attribute_weights=uniform,
                             masking=run_masking)
            # 3. health and masker scores on the uncorrupted segments, through the prepared module as well (FSDP
            # gathers the parameters only inside its own forward)
            scored = step_model(batch, score_only=True)
            hidden = scored.hidden_states[-1]
            notes = maskable_positions(input_ids, attention_mask)
            cosine, rank = representation_health(hidden, notes)
            gathered = _gather(accelerator, (yard.attribute_correct, yard.attribute_total, own.attribute_correct,
                                             own.attribute_total, cosine, rank,
                                             yard.recoverer_loss.float().repeat(batch_size),
                                             own.recoverer_loss.float().repeat(batch_size)))
            for key, value in zip(("yard_correct", "yard_total", "run_correct", "run_total"), gathered[:4]):
                sums[key] += value.sum(0).double()
            cosines.append(gathered[4])
            ranks.append(gathered[5])
            yard_losses.append(gathered[6])
            run_losses.append(gathered[7])
            if run_masking in MASKER_METHODS:
                scores = scored.masker_scores.float()
                at = yard.corrupted & notes
                # Pairs of (score, recovery loss) at the corrupted positions, padded to a fixed width per batch so
                # that every process gathers the same shapes.
                width = at.shape[1]
                s = torch.where(at, scores, torch.full_like(scores, float("nan")))
                loss = torch.where(at, yard.per_token_loss.float(), torch.full_like(scores, float("nan")))
                s, loss = _gather(accelerator, (s.reshape(batch_size, width), loss.reshape(batch_size, width)))
                scores_at.append(s.reshape(-1))
                losses_at.append(loss.reshape(-1))
                within.append(spearman_within_rows(s.reshape(-1, width), loss.reshape(-1, width)))
    finally:
        step_model.train(was_training)

    results: dict[str, float] = {}
    for prefix, correct, total, losses in (
        ("eval", sums["yard_correct"], sums["yard_total"], yard_losses),
        ("eval_run_masking", sums["run_correct"], sums["run_total"], run_losses),
    ):
        results[f"{prefix}_loss"] = float(torch.cat(losses).mean()) if losses else float("nan")
        results[f"{prefix}_accuracy"] = float(correct.sum() / total.sum().clamp_min(1))
        for name, c, t in zip(ATTRIBUTE_NAMES, correct.tolist(), total.tolist()):
            results[f"{prefix}_accuracy_{name}"] = c / t if t > 0 else float("nan")
    if cosines:
        results["eval_token_cosine"] = float(torch.cat(cosines).nanmean())
        results["eval_effective_rank"] = float(torch.cat(ranks).nanmean())
    if scores_at:
        s, loss = torch.cat(scores_at), torch.cat(losses_at)
        keep = ~torch.isnan(s)
        results["eval_masker_spearman"] = spearman_correlation(s[keep], loss[keep])
        results["eval_masker_spearman_within"] = float(torch.cat(within).nanmean())
    return results
