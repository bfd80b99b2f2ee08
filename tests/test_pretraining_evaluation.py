"""Representation health, Spearman correlation and the pre-training yardstick evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM
from adversarial_midibert.pretraining import AdversarialMLM
from adversarial_midibert.pretraining_evaluation import (
    evaluate_pretraining,
    representation_health,
    spearman_correlation,
)

from tiny_models import tiny_config


def test_health_of_collapsed_and_spread_representations():
    torch.manual_seed(0)
    notes = torch.ones(3, 10, dtype=torch.bool)
    notes[2, 6:] = False  # a shorter segment: its padding must not count
    direction = torch.randn(16)
    collapsed = direction.expand(10, 16) * torch.rand(10, 1).add(0.5)  # one direction, several lengths
    orthogonal = torch.cat([torch.eye(10), torch.zeros(10, 6)], dim=1)
    padded = torch.cat([torch.eye(6, 16), torch.full((4, 16), 7.0)])  # the 7.0 rows are padding
    cosine, rank = representation_health(torch.stack([collapsed, orthogonal, padded]), notes)
    assert cosine[0].item() == pytest.approx(1.0, abs=1e-5)
    assert rank[0].item() == pytest.approx(1.0, abs=1e-4)
    assert cosine[1].item() == pytest.approx(0.0, abs=1e-6)
    assert rank[1].item() == pytest.approx(10.0, rel=1e-4)
    assert cosine[2].item() == pytest.approx(0.0, abs=1e-6)
    assert rank[2].item() == pytest.approx(6.0, rel=1e-4)
    # fewer than two notes: no figure rather than a made-up one
    one = torch.zeros(1, 10, dtype=torch.bool)
    one[0, 3] = True
    c, r = representation_health(torch.randn(1, 10, 16), one)
    assert math.isnan(c.item()) and math.isnan(r.item())


def test_spearman_correlation():
    x = torch.arange(20.0)
    assert spearman_correlation(x, x**3) == pytest.approx(1.0)
    assert spearman_correlation(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman_correlation(x[:2], x[:2]))
    scipy_stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(1)
    a, b = torch.randn(200), torch.randn(200)
    b = a + b
    assert spearman_correlation(a, b) == pytest.approx(scipy_stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)


def _batches(vocab, n_batches=3, batch=4, length=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.stack([torch.randint(4, v, (batch, length), generator=g) for v in vocab], dim=-1)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, length - 5:] = 0
        ids[0, length - 5:] = 0
        ids[:, 0] = 1  # BOS
        ids[1:, -1] = 2  # EOS
        ids[0, length - 6] = 2
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def test_yardstick_is_the_same_for_every_masking_method():
    torch.manual_seed(3)
    model = AdvMidiBertForMaskedLM(tiny_config())
    vocab = list(model.config.vocab_sizes)
    batches = _batches(vocab)
    results = {}
    for masking in ("adversarial", "random", "bar"):
        step = AdversarialMLM(model, masking=masking)
        results[masking] = evaluate_pretraining(step, batches, seed=5)
    # One model: the random-15 % yardstick gives identical figures whatever the run's masking was ...
    for key in ("eval_loss", "eval_accuracy", "eval_token_cosine", "eval_effective_rank"):
        assert results["adversarial"][key] == results["random"][key] == results["bar"][key], key
    # ... while the run's own masking differs, and only an adversarial run scores its masker.
    assert results["adversarial"]["eval_run_masking_loss"] != results["random"]["eval_run_masking_loss"]
    assert "eval_masker_spearman" in results["adversarial"] and "eval_masker_spearman" not in results["random"]
    assert -1 <= results["adversarial"]["eval_masker_spearman"] <= 1
    assert 0 < results["random"]["eval_effective_rank"] <= model.config.hidden_size
    # repeatable, and it leaves the module in training mode
    step = AdversarialMLM(model, masking="random")
    step.train()
    assert evaluate_pretraining(step, batches, seed=5) == results["random"]
    assert step.training
