"""Speed and memory switches of the training loops, as transformers' ``TrainingArguments`` names them
(``--gradient_checkpointing``, ``--torch_compile``, ``--torch_compile_backend``, ``--torch_compile_mode``), applied by
:func:`apply_acceleration`: activation checkpointing recomputes each layer in the backward pass (about one more
forward pass of compute for a fraction of the activation memory); ``torch.compile`` compiles each encoder layer in
place (:func:`compile_layers`), leaving the method's own code (masking, mask book) eager around it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["apply_acceleration", "compile_layers", "enable_activation_checkpointing", "slow_bf16_warning"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Turn on (non-reentrant) activation checkpointing of every encoder layer of a transformers model."""
    if hasattr(model, "activation_checkpointing_enable"):  # the name in recent transformers releases
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def apply_acceleration(
    model: nn.Module,
    gradient_checkpointing: bool = False,
    torch_compile: bool = False,
    torch_compile_backend: str | None = None,
    torch_compile_mode: str | None = None,
) -> nn.Module:
    """Apply the speed and memory flags to ``model`` (a transformers model of this package) in place and return it:
    activation checkpointing, and compilation of the encoder layers when any of the ``torch_compile*`` arguments is
    given (backend ``inductor`` unless given)."""
    if gradient_checkpointing:
        enable_activation_checkpointing(model)
    if torch_compile or torch_compile_backend or torch_compile_mode:
        kwargs = {"backend": torch_compile_backend or "inductor"}
        if torch_compile_mode and torch_compile_mode != "default":
            kwargs["mode"] = torch_compile_mode
        compile_layers(model, **kwargs)
    return model


def compile_layers(model: nn.Module, **compile_kwargs) -> int:
    """Compile every encoder layer of ``model`` in place (regional compilation); returns how many.

    Every pass that runs the encoder is then compiled, whoever calls it. The layers share one compiled code, with
    symbolic batch size and length (``dynamic=True`` unless given), compiled once per mode and once more for lengths
    of at most 64 rows; batches padded to a multiple of 64 rows (``--pad_to_multiple_of``) compile no more.
    """
    from .modeling_adv_midibert import AdvMidiBertLayer

    layers = [module for module in model.modules() if isinstance(module, AdvMidiBertLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no AdvMidiBertLayer to compile")
    compile_kwargs.setdefault("dynamic", True)  # batch size and length vary: symbolic from the first compile
    for layer in layers:
        layer.compile(**compile_kwargs)
    return len(layers)


def slow_bf16_warning(device: torch.device, mixed_precision: str) -> str | None:
    """A warning when bf16 autocast would run on a CPU without bf16 matrix instructions (no AVX512-BF16 or AMX), where
    every bf16 matrix product falls back to a slow kernel; else ``None``."""
    if str(mixed_precision) != "bf16" or torch.device(device).type != "cpu":
        return None
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return ("bf16 mixed precision on a CPU without bf16 matrix instructions (no AVX512-BF16/AMX): every matrix product "
            "falls back to a slow kernel and a step is several times slower than in fp32; use --mixed_precision no on "
            "this machine")
