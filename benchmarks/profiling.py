"""What a pre-training step costs, worked out without an accelerator: FLOPs per token and peak memory.

Both trace the step's computation without doing it:

- :func:`step_flops_per_token` runs the model on the ``meta`` device (shapes only) under
  ``torch.utils.flop_counter.FlopCounterMode``: the FLOPs of every matrix product of the forward and backward passes
  (what model FLOPs utilisation counts; element-wise work is left out).
- :func:`estimate_step_memory` runs a whole training step (both passes, backward, AdamW step) on fake tensors
  (``torch._subclasses.FakeTensorMode``: no memory is allocated) and records the bytes of every tensor alive at
  each moment, so the peak is that of the real step on an accelerator, up to the caching allocator's rounding and
  fragmentation and the CUDA context (not counted). Mixed precision is traced with ``torch.autocast`` on the CPU,
  whose bf16 policy casts the same operations of this model as the CUDA policy does (matrix products and
  ``scaled_dot_product_attention`` to bf16; losses in fp32; layer norms and softmax run in fp32 here either way).
  With ``attention="sdpa"``, attention is traced as CUDA runs it with an additive bias: the memory-efficient kernel
  (``aten._scaled_dot_product_efficient_attention``; flash attention takes no bias), which keeps the bias but not
  the attention probabilities.

A step is the one of :class:`~adversarial_midibert.pretraining.AdversarialMLM`: for ``masking="adversarial"`` a
masker pass over the uncorrupted batch (encoder + masker head, with gradient; without gradient into the encoder
when ``detach_masker``) and a recoverer pass (encoder + eight MLM heads + loss); one recoverer pass for the
``random`` and ``bar`` baselines, and for the adversary with cached scores (``masker_scores_from="cache"``), whose
recoverer pass also runs the masker head. The masking itself (sorting scores, corrupting ids) works on (batch, length)
tensors and costs nothing next to these.
"""

from __future__ import annotations

import collections
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary

from adversarial_midibert import modeling_adv_midibert as modeling
from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
from adversarial_midibert.speed_and_memory import enable_activation_checkpointing

__all__ = ["count_flops", "step_flops_per_token", "MemoryEstimate", "estimate_step_memory", "STEP_KINDS",
           "count_host_reads", "HOST_READS"]

STEP_KINDS = ("adversarial", "adversarial-detached", "adversarial-cached", "random", "bar")


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matrix products run by ``fn()`` (``FlopCounterMode``'s count: 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# Tensor methods that read values back on the host: on an accelerator each waits for the device (a host sync).
HOST_READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def count_host_reads():
    """Count, per name, the calls made inside the block that read tensor values on the host: the methods of
    ``HOST_READS``, ``torch.nonzero`` / ``torch.unique`` / ``torch.masked_select`` and indexing with a boolean mask
    (their output size depends on the data). On CPU they cost nothing, but each is a host sync on an accelerator, so
    counting them on CPU finds the syncs a GPU run would have (``torch.cuda.set_sync_debug_mode`` sees them on CUDA).

    Yields:
        `collections.Counter`: name -> calls, filled while the block runs.
    """
    calls: collections.Counter = collections.Counter()

    def counted(name, original):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    original_getitem = torch.Tensor.__getitem__

    def getitem(self, index):
        for part in index if isinstance(index, tuple) else (index,):
            if torch.is_tensor(part) and part.dtype == torch.bool:
                calls["boolean index"] += 1
        return original_getitem(self, index)

    with contextlib.ExitStack() as stack:
        for name in HOST_READS:
            stack.enter_context(mock.patch.object(torch.Tensor, name, counted(name, getattr(torch.Tensor, name))))
        for name in ("nonzero", "unique", "masked_select"):
            stack.enter_context(mock.patch.object(torch, name, counted(f"torch.{name}", getattr(torch, name))))
        stack.enter_context(mock.patch.object(torch.Tensor, "__getitem__", getitem))
        yield calls


@contextlib.contextmanager
def _tracing_shapes():
    """The embeddings' id range check reads tensor values, which meta and fake tensors do not have: skip it."""
    with mock.patch.object(modeling.AdvMidiBertEmbeddings, "check_input_ids", lambda self, input_ids: None):
        yield


def _step_kind(masking: str, detach_masker: bool, masker_scores_from: str = "pass") -> str:
    kind = masking
    if masking == "adversarial" and masker_scores_from == "cache":
        kind = "adversarial-cached"
    elif masking == "adversarial" and detach_masker:
        kind = "adversarial-detached"
    if kind not in STEP_KINDS:
        raise ValueError(f"masking must be one of adversarial, random, bar; got {masking!r}")
    return kind


def _run_step(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, kind: str) -> torch.Tensor:
    """The passes of one training step (see the module docstring); returns the loss to back-propagate."""
    loss = 0.0
    if kind == "adversarial-cached":  # one pass: the recoverer's, the masker head on its hidden states
        out = model(input_ids, attention_mask=attention_mask, labels=input_ids, compute_masker=True)
        return out.loss + (out.masker_scores.float() - 1.0).square().mean()
    if kind == "adversarial":
        scores = model(input_ids, attention_mask=attention_mask, compute_logits=False).masker_scores
        loss = (scores.float() - 1.0).square().mean()
    elif kind == "adversarial-detached":
        encoder = model.base_model
        encoder.eval()
        with torch.no_grad():
            hidden = encoder(input_ids, attention_mask=attention_mask).last_hidden_state
        encoder.train()
        loss = (model.masker(hidden).float() - 1.0).square().mean()
    # Labels at every position: the cross-entropy is computed at every position whatever the labels.
    out = model(input_ids, attention_mask=attention_mask, labels=input_ids, compute_masker=False)
    return out.loss + loss


def step_flops_per_token(
    config: AdvMidiBertConfig, seq_len: int, masking: str = "adversarial", detach_masker: bool = False,
    masker_scores_from: str = "pass",
) -> float:
    """Model FLOPs of one training step (forward + backward), per token of the batch.

    Counted on the ``meta`` device with a batch of one full-length segment (FLOPs grow linearly with the batch).

    Args:
        config (`AdvMidiBertConfig`): the model's configuration.
        seq_len (`int`): rows per segment.
        masking (`str`): ``"adversarial"`` (masker pass + recoverer pass), ``"random"`` or ``"bar"`` (one pass).
        detach_masker (`bool`): the masker pass runs the encoder without gradient.
        masker_scores_from (`str`): ``"cache"``: no masker pass, the masker head on the recoverer's pass.
    """
    kind = _step_kind(masking, detach_masker, masker_scores_from)
    with torch.device("meta"), _tracing_shapes():
        model = modeling.AdvMidiBertForMaskedLM(config).train()
        input_ids = torch.zeros(1, seq_len, len(config.vocab_sizes), dtype=torch.long)
        attention_mask = torch.ones(1, seq_len, dtype=torch.long)
        flops = count_flops(lambda: _run_step(model, input_ids, attention_mask, kind).backward())
    return flops / seq_len


class _LiveTensorBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive, and their peak, over everything run under it."""

    def __init__(self):
        super().__init__()
        self._sizes: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.live = 0
        self.peak = 0

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage in self._sizes:
            return
        size = storage.nbytes()
        self._sizes[storage] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, size)

    def _release(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        return out


def _efficient_attention_forward(query, key, value, attention_bias, scaling, dropout=0.0):
    """`sdpa_attention_forward` as CUDA runs it with an additive bias: the memory-efficient kernel."""
    if attention_bias is not None:
        attention_bias = attention_bias.to(query.dtype).expand(query.shape[0], query.shape[1], -1, -1)
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, attention_bias, True, dropout, False, scale=scaling
    )
    return out[0], None


@dataclass
class MemoryEstimate:
    """Peak memory of a training step, in bytes.

    Attributes:
        parameters: the model's weights (fp32, as mixed-precision training keeps them).
        gradients: their gradients.
        optimizer_states: AdamW's two moments.
        peak: the most bytes alive at any moment of the step (all of the above included).
        activations_peak: ``peak`` less the weights, gradients and optimizer states: what the batch costs.
        settings: what was traced (batch, length, dtype, attention, step kind, gradient checkpointing).
    """

    parameters: int
    gradients: int
    optimizer_states: int
    peak: int
    activations_peak: int
    settings: dict

    def format(self, unit: float = 2**30, unit_name: str = "GiB") -> str:
        s = self.settings
        return (f"{s['kind']} step, batch {s['batch_size']} x {s['seq_len']}, {s['dtype']}, {s['attention']} attention"
                f"{', gradient checkpointing' if s['gradient_checkpointing'] else ''}: peak {self.peak / unit:.2f} "
                f"{unit_name} (weights {self.parameters / unit:.2f}, gradients {self.gradients / unit:.2f}, AdamW "
                f"states {self.optimizer_states / unit:.2f}, activations and temporaries "
                f"{self.activations_peak / unit:.2f})")


def estimate_step_memory(
    config: AdvMidiBertConfig,
    batch_size: int,
    seq_len: int,
    dtype: str = "bf16",
    attention: str = "sdpa",
    masking: str = "adversarial",
    detach_masker: bool = False,
    gradient_checkpointing: bool = False,
    masker_scores_from: str = "pass",
) -> MemoryEstimate:
    """Peak memory of one training step (forward, backward, AdamW step), traced on fake tensors.

    Two steps are traced, so that the optimizer states exist during the second, whose peak is reported.

    Args:
        config (`AdvMidiBertConfig`): the model's configuration.
        batch_size (`int`), seq_len (`int`): segments per step and rows per segment (all real rows).
        dtype (`str`): ``"bf16"`` (fp32 weights, bf16 autocast: ``accelerate launch --mixed_precision bf16``) or
            ``"fp32"``.
        attention (`str`): ``"sdpa"`` (the CUDA memory-efficient kernel) or ``"eager"``.
        masking (`str`), detach_masker (`bool`), masker_scores_from (`str`): which step (see
            :func:`step_flops_per_token`).
        gradient_checkpointing (`bool`): recompute each layer in the backward pass instead of keeping its
            activations.
    """
    if dtype not in ("bf16", "fp32"):
        raise ValueError(f"dtype must be 'bf16' or 'fp32', got {dtype!r}")
    if attention not in ("sdpa", "eager"):
        raise ValueError(f"attention must be 'sdpa' or 'eager', got {attention!r}")
    kind = _step_kind(masking, detach_masker, masker_scores_from)
    from torch._subclasses.fake_tensor import FakeTensorMode

    patches = contextlib.ExitStack()
    patches.enter_context(_tracing_shapes())
    if attention == "sdpa":
        patches.enter_context(mock.patch.object(modeling, "sdpa_attention_forward", _efficient_attention_forward))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext())
    with patches, FakeTensorMode():
        model = modeling.AdvMidiBertForMaskedLM(config).train()
        model.set_attn_implementation(attention)
        if gradient_checkpointing:
            enable_activation_checkpointing(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        input_ids = torch.zeros(batch_size, seq_len, len(config.vocab_sizes), dtype=torch.long)
        attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long)
        tracker = _LiveTensorBytes()
        for tensor in (*model.parameters(), *model.buffers(), input_ids, attention_mask):
            tracker.track(tensor)
        parameters = sum(p.numel() * p.element_size() for p in model.parameters())
        with tracker:
            for step in range(2):
                if step == 1:
                    tracker.peak = tracker.live
                with autocast:
                    loss = _run_step(model, input_ids, attention_mask, kind)
                loss.backward()
                del loss
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        states = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                     if isinstance(t, torch.Tensor) and t.dim() > 0)
    return MemoryEstimate(
        parameters=parameters,
        gradients=parameters,
        optimizer_states=states,
        peak=tracker.peak,
        activations_peak=tracker.peak - 2 * parameters - states,
        settings={"batch_size": batch_size, "seq_len": seq_len, "dtype": dtype, "attention": attention,
                  "kind": kind, "gradient_checkpointing": gradient_checkpointing},
    )
