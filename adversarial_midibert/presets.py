"""Model size presets: plain data, one dict of ``AdvMidiBertConfig`` arguments per name: ``tiny`` (tests, seconds on a
CPU), ``small`` (the default of ``examples/pretrain.py``, minutes on a CPU) and ``base`` (the paper's BERT-base)."""

from __future__ import annotations

import ast
from typing import Any

__all__ = ["PRESETS", "preset_config_kwargs", "parse_config_overrides", "default_finetune_learning_rate"]

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        attribute_embedding_size=32,
        max_position_embeddings=128,
    ),
    "small": dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        attribute_embedding_size=64,
        max_position_embeddings=256,
    ),
    "base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        attribute_embedding_size=256,
        max_position_embeddings=1024,
    ),
}


# Fine-tuning learning rate by model width: the paper's 2e-5 for BERT-base; the narrow CPU presets learn far too slowly
# with it (results/finetune-learning-rate.json).
NARROW_FINETUNE_LEARNING_RATE = 5e-4
PAPER_FINETUNE_LEARNING_RATE = 2e-5


def default_finetune_learning_rate(hidden_size: int) -> float:
    """The fine-tuning learning rate for a model of this width: 5e-4 up to the ``small`` preset's width (256), the
    paper's 2e-5 above it."""
    if hidden_size <= PRESETS["small"]["hidden_size"]:
        return NARROW_FINETUNE_LEARNING_RATE
    return PAPER_FINETUNE_LEARNING_RATE


def preset_config_kwargs(name: str, config_overrides: str | None = None) -> dict[str, Any]:
    """A copy of the config arguments of preset ``name`` (one of ``tiny``, ``small``, ``base``), with
    ``config_overrides`` applied (``key=value,...``, see `parse_config_overrides`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    return {**PRESETS[name], **parse_config_overrides(config_overrides)}


def parse_config_overrides(text: str | None) -> dict[str, Any]:
    """Parse ``"key=value,key=value"`` (values as Python literals, else strings) into a dict.

    Args:
        text (`str`, *optional*): the overrides; empty or ``None`` gives ``{}``.
    """
    out: dict[str, Any] = {}
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--config_overrides: {item!r} is not of the form key=value (in {text!r})")
        key, value = (part.strip() for part in item.split("=", 1))
        if not key.isidentifier():
            raise ValueError(f"--config_overrides: {key!r} is not a valid config attribute name")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
