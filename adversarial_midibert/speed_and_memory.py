"""Speed and memory switches of the training scripts: activation (gradient) checkpointing and ``torch.compile``.

``examples/pretrain.py`` and ``examples/finetune.py`` take the flags of transformers' ``TrainingArguments``
(``--gradient_checkpointing``, ``--torch_compile``, ``--torch_compile_backend``, ``--torch_compile_mode``;
``training.setup.TrainingArguments``) and apply them with :func:`apply_acceleration`.

- Activation checkpointing keeps only each layer's input during the forward pass and recomputes the layer in the
  backward pass: about one more forward pass of compute for a fraction of the activation memory (see
  ``benchmarks/pretrain_step.py --estimate_memory``).
- ``torch.compile`` compiles each encoder layer in place (``nn.Module.compile``: the module, its parameter names and
  its ``save_pretrained`` are unchanged; see :func:`compile_layers`), so every encoder pass is compiled whoever calls
  it, and the method's own code (masking, mask book) stays eager around it.
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
    """Apply the speed and memory flags (``training.setup.TrainingArguments``) to ``model`` (in place) and return it.

    Args:
        model (`nn.Module`): a transformers model of this package.
        gradient_checkpointing (`bool`): see :func:`enable_activation_checkpointing`.
        torch_compile (`bool`): compile the model's encoder layers (:func:`compile_layers`).
        torch_compile_backend (`str`, *optional*): backend of ``torch.compile`` (``inductor`` when not given);
            giving one compiles.
        torch_compile_mode (`str`, *optional*): mode of ``torch.compile``; giving one compiles.
    """
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

    Every pass that runs the encoder is then compiled, whoever calls it: the adversarial step's masker and recoverer
    passes, evaluation, the freezing pass, activation checkpointing's recomputation. The layers share one compiled code
    (their parameters are inputs of the graph, not constants), so a 12-layer model compiles as often as a 1-layer one,
    with symbolic batch size and length (``dynamic=True`` unless given): once per mode (training / no-grad evaluation),
    and once more for lengths of at most 64 rows (a single block of the relative-position scores); pad batches to a
    multiple of 64 rows to keep it there (``--pad_to_multiple_of``). What stays eager (embeddings with the id check, the
    heads, the masking) is a few percent of the FLOPs.
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
    """A warning when bf16 autocast would run on a CPU without bf16 matrix instructions, else ``None``.

    On such a CPU (AVX2 only: no AVX512-BF16 or AMX; oneDNN reports no bf16 support) every bf16 matrix product falls
    back to a slow kernel, so a bf16 step takes several times as long as an fp32 one and saves only activation
    memory (``results/profile-step-small.json``; ``benchmarks/profile_step.py --ops`` times the suspects one by one).
    """
    if str(mixed_precision) != "bf16" or torch.device(device).type != "cpu":
        return None
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return ("bf16 mixed precision on a CPU without bf16 matrix instructions (no AVX512-BF16/AMX): every matrix product "
            "falls back to a slow kernel and a step is several times slower than in fp32; use --mixed_precision no on "
            "this machine")
