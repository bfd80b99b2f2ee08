"""--torch_compile and --gradient_checkpointing: the same losses and gradients as the plain eager model."""

from __future__ import annotations

import pytest
import torch

from adversarial_midibert import AdvMidiBertForMaskedLM
from adversarial_midibert.speed_and_memory import apply_acceleration

from tiny_models import random_segment_rows, tiny_config

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
        assert all(layer._compiled_call_impl is not None for layer in model.adv_midibert.encoder.layer)
    loss, grads = _loss_and_grads(model)
    torch.testing.assert_close(loss, expected_loss, atol=1e-6, rtol=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], atol=1e-5, rtol=1e-5, msg=name)
    assert "_orig_mod" not in "".join(model.state_dict())  # compiled in place: saved names unchanged


def test_flags_parse_like_training_arguments():
    from adversarial_midibert.training.setup import TrainingArguments, argument_parser

    parser = argument_parser(TrainingArguments, "test", "")
    args = parser.parse_args(["--gradient_checkpointing", "--torch_compile_mode", "max-autotune"])
    assert args.gradient_checkpointing and args.torch_compile_mode == "max-autotune" and not args.torch_compile
    with pytest.raises(SystemExit):
        parser.parse_args(["--torch_compile_mode", "fastest"])


@pytest.mark.slow
def test_compiled_training_evaluation_and_freezing_without_graph_breaks_and_with_few_compiles():
    """The compiled layers run every pass of a short run (steps with varying batch sizes and lengths, evaluation, the
    freezing pass) in one graph each time (no graph break) and compile a bounded number of times, independent of the
    number of layers and of the lengths met (padded to a multiple of 64)."""
    from torch._dynamo.testing import CompileCounter
    from torch._dynamo.utils import counters

    from adversarial_midibert.data.collators import pad_octuple_batch
    from adversarial_midibert.pretraining import AdversarialMLM, batch_to_device, freezing_pass, step_generator
    from adversarial_midibert.pretraining_evaluation import evaluate_pretraining

    from byte_mask_book import MaskBook

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = AdvMidiBertForMaskedLM(tiny_config(max_position_embeddings=256, num_hidden_layers=3))
    compiles = CompileCounter()  # counts the graphs dynamo hands to the backend (no code generation: cheap)
    apply_acceleration(model, torch_compile_backend=compiles)
    book = MaskBook(16, 256)
    step = AdversarialMLM(model, mask_book=book)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def batch(lengths, first=0):
        return pad_octuple_batch(random_segment_rows(lengths, first_segment_id=first, seed=first),
                                 pad_to_multiple_of=64)

    for i, lengths in enumerate([[40, 70, 100, 90], [250, 30, 200], [130, 150], [20, 33, 60, 63]]):
        out = step(batch_to_device(batch(lengths, 4 * i), "cpu", book), generator=step_generator(0, i))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    evaluate_pretraining(step, [batch([50, 120, 77]), batch([200, 33])])
    freezing_pass(step, [batch([40, 70, 100, 90]), batch([250, 30], 4)], book,
                  generator=torch.Generator().manual_seed(0))
    assert dict(counters["graph_break"]) == {}
    # One compile for training, one for no-grad evaluation and freezing, one for lengths <= 64 (a single block).
    assert compiles.frame_count == 3


def test_slow_bf16_warning_only_for_bf16_on_a_cpu_without_bf16_instructions(monkeypatch):
    from adversarial_midibert.speed_and_memory import slow_bf16_warning

    assert slow_bf16_warning(torch.device("cpu"), "no") is None
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert "slower than in fp32" in slow_bf16_warning(torch.device("cpu"), "bf16")
    assert slow_bf16_warning(torch.device("cuda"), "bf16") is None
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert slow_bf16_warning(torch.device("cpu"), "bf16") is None
