"""FLOPs per token (FlopCounterMode on the meta device) and the fake-tensor peak-memory estimate of a step."""

from __future__ import annotations

import pytest

from benchmarks.profiling import estimate_step_memory, step_flops_per_token

from tiny_models import tiny_config


def _linear_weights(config) -> int:
    h, layers = config.hidden_size, config.num_hidden_layers
    embedding_projection = len(config.vocab_sizes) * config.attribute_embedding_size * h
    per_layer = 4 * h * h + 2 * h * config.intermediate_size
    return embedding_projection + layers * per_layer + h * sum(config.vocab_sizes)


def test_flops_of_a_random_masking_step_match_the_formula():
    """Absolute positions: every multiply-add of the forward is a weight use or a QK^T / AV product; the backward
    does two of each (gradient of the input and of the weight)."""
    config = tiny_config(position_embedding_type="absolute")
    length = 32
    forward = 2 * _linear_weights(config) + 2 * 2 * config.num_hidden_layers * config.hidden_size * length
    per_token_loss = 2 * len(config.vocab_sizes)  # the weighted sum over attributes (an einsum), forward only
    assert step_flops_per_token(config, length, masking="random") == 3 * forward + per_token_loss


def test_adversarial_step_adds_the_masker_pass_and_relative_terms_cost_about_l_squared():
    config = tiny_config()
    h, layers, length = config.hidden_size, config.num_hidden_layers, 40
    random = step_flops_per_token(config, length, masking="random")
    adversarial = step_flops_per_token(config, length, masking="adversarial")
    detached = step_flops_per_token(config, length, masking="adversarial", detach_masker=True)
    lm_heads = 2 * h * sum(config.vocab_sizes)
    masker = 2 * (h * config.masker_hidden_size + config.masker_hidden_size)
    encoder = (random - 2 * len(config.vocab_sizes)) / 3 - lm_heads
    assert adversarial == pytest.approx(random + 3 * (encoder + masker))
    # detached: the encoder's forward only, and no input gradient for the masker's first layer
    assert detached == pytest.approx(random + encoder + 3 * masker - 2 * h * config.masker_hidden_size)
    # cached scores: no masker pass, the masker head (forward and backward) on the recoverer's pass
    cached = step_flops_per_token(config, length, masking="adversarial", masker_scores_from="cache")
    assert cached == pytest.approx(random + 3 * masker)
    # relative_key_query: two terms per layer, each about length * (length + 64) products of head_dim per head
    absolute = step_flops_per_token(tiny_config(position_embedding_type="absolute"), length, masking="random")
    block = min(64, length)
    relative_terms = 3 * layers * 2 * 2 * h * (length + block)
    assert random - absolute == pytest.approx(relative_terms)


def test_memory_estimate_accounts_for_weights_and_shrinks_with_bf16_sdpa_and_checkpointing():
    from adversarial_midibert import AdvMidiBertForMaskedLM

    config = tiny_config()
    n_params = sum(p.numel() for p in AdvMidiBertForMaskedLM(config).parameters())
    plain = estimate_step_memory(config, batch_size=4, seq_len=40, dtype="fp32", attention="eager")
    assert plain.parameters == plain.gradients == 4 * n_params
    assert plain.optimizer_states == 2 * 4 * n_params
    # the (batch, heads, 40, 40) attention tensors alone, kept for the backward pass of both passes, exceed this
    assert plain.activations_peak > 2 * config.num_hidden_layers * 4 * 2 * 40 * 40 * 4
    small = estimate_step_memory(config, 4, 40, dtype="bf16", attention="sdpa", gradient_checkpointing=True)
    assert small.parameters == plain.parameters and small.activations_peak < plain.activations_peak / 2
    assert "gradient checkpointing" in small.format() and small.settings["kind"] == "adversarial"
