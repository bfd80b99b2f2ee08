"""--torch_compile and --gradient_checkpointing: the same losses and gradients as the plain eager model."""

from __future__ import annotations

import argparse

import pytest
import torch

from adversarial_midibert import AdvMidiBertForMaskedLM
from adversarial_midibert.acceleration import add_acceleration_arguments, apply_acceleration
from tiny_models import tiny_config

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, masker_dropout=0.0)


def _batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randint(4, v, (2, 10), generator=generator) for v in tiny_config().vocab_sizes], -1)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return ids, mask


def _loss_and_grads(model):
    ids, mask = _batch()
    out = model(ids, attention_mask=mask, labels=ids.masked_fill(~mask.bool()[..., None], -100))
    loss = out.loss + out.masker_scores.sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _model(layers: int = 2):
    torch.manual_seed(0)
    return AdvMidiBertForMaskedLM(tiny_config(num_hidden_layers=layers, **NO_DROPOUT)).train()


@pytest.mark.parametrize("switch", ["gradient_checkpointing", "torch_compile"])
def test_switch_gives_the_eager_loss_and_gradients(switch):
    layers = 1 if switch == "torch_compile" else 2  # compile time grows with the layers
    expected_loss, expected_grads = _loss_and_grads(_model(layers))
    model = _model(layers)
    if switch == "gradient_checkpointing":
        apply_acceleration(model, gradient_checkpointing=True)
        assert model.adv_midibert.encoder.gradient_checkpointing
    else:
        torch._dynamo.reset()
        # aot_eager traces the forward and backward graphs as inductor does, without compiling C++ (fast in CI).
        apply_acceleration(model, torch_compile_backend="aot_eager")
        assert model._compiled_call_impl is not None
    loss, grads = _loss_and_grads(model)
    torch.testing.assert_close(loss, expected_loss, atol=1e-6, rtol=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], atol=1e-5, rtol=1e-5, msg=name)
    assert "_orig_mod" not in "".join(model.state_dict())  # compiled in place: saved names unchanged


def test_flags_parse_like_training_arguments():
    parser = argparse.ArgumentParser()
    add_acceleration_arguments(parser)
    args = parser.parse_args(["--gradient_checkpointing", "--torch_compile_mode", "max-autotune"])
    assert args.gradient_checkpointing and args.torch_compile_mode == "max-autotune" and not args.torch_compile
    with pytest.raises(SystemExit):
        parser.parse_args(["--torch_compile_mode", "fastest"])
