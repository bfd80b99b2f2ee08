"""The encoders an embedding benchmark compares, grouped into arms of several seeds.

Shared by ``research/embedding_neighbours.py`` and ``research/matching.py``:

- ``--model ARM/seedN=PATH`` names a model folder and the arm it belongs to (``adversarial/seed0``,
  ``adversarial/seed1``, ``random/seed0`` ...); a name without ``/`` is an arm of one seed;
- :func:`with_random_init` adds the ``random-init`` arm: randomly initialised encoders of the first model's
  configuration, one per ``--init_seed``;
- :func:`compare_arms` turns per-query scores of every model into a per-arm summary and paired differences (each
  pre-trained arm minus ``random-init``, and ``adversarial`` minus ``random`` when both are there), with two-level
  bootstraps (queries and seeds resampled): :func:`adversarial_midibert.confidence_intervals.bootstrap_accuracy` for
  an arm, :func:`~adversarial_midibert.confidence_intervals.paired_bootstrap_difference` for a difference (queries
  resampled in pairs, seeds per arm).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RANDOM_INIT = "random-init"


def named_model(text: str) -> tuple[str, str]:
    """``NAME=PATH`` of ``--model`` as ``(name, path)``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expects NAME=PATH, got {text!r}")
    name, path = text.split("=", 1)
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expects NAME=PATH with both parts, got {text!r}")
    return name, path


def arm_of(name: str) -> str:
    """The arm of a model name: ``adversarial/seed1`` -> ``adversarial``."""
    return name.split("/", 1)[0]


def folder_name(name: str) -> str:
    """A model name as one path component (``adversarial/seed1`` -> ``adversarial-seed1``)."""
    return name.replace("/", "-")


def model_label(name: str, path: str, models: list) -> str:
    """What a results row names as its model: the folder, or for the random initialisation the configuration it
    copies."""
    if arm_of(name) != RANDOM_INIT:
        return path
    pretrained = [n for n, _ in models if arm_of(n) != RANDOM_INIT]
    return "randomly initialised encoder, configuration of " + (pretrained[0] if pretrained else "the tiny default")


def random_init_folder(like: str | None, folder: Path, seed: int) -> Path:
    """A randomly initialised encoder with ``like``'s configuration and tokenizer (or the tiny defaults)."""
    import torch

    from adversarial_midibert import AdvMidiBertConfig, AdvMidiBertModel, OctupleTokenizer
    from adversarial_midibert.presets import preset_config_kwargs

    if like is None:
        sizes = preset_config_kwargs("tiny")
        tokenizer = OctupleTokenizer(max_seq_len=sizes["max_position_embeddings"], warn=False)
        config = AdvMidiBertConfig(vocab_sizes=list(tokenizer.vocab_sizes), **sizes)
    else:
        tokenizer = OctupleTokenizer.from_pretrained(like)
        config = AdvMidiBertConfig.from_pretrained(like)
    torch.manual_seed(seed)
    AdvMidiBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def with_random_init(models: list[tuple[str, str]], init_seeds: list[int], work_dir: Path) -> list[tuple[str, str]]:
    """``models`` preceded by one randomly initialised encoder per seed (``random-init/seedN``), written under
    ``work_dir`` (kept: a resumed run reuses it)."""
    like = models[0][1] if models else None
    added = []
    for seed in init_seeds:
        folder = work_dir / f"{RANDOM_INIT}-model-seed{seed}"
        if not (folder / "config.json").is_file():
            random_init_folder(like, folder, seed)
        added.append((f"{RANDOM_INIT}/seed{seed}", str(folder)))
    return added + list(models)


def compare_arms(scores: dict[str, np.ndarray], total: float, statistic: str) -> dict:
    """Per-arm summaries and paired differences of per-query scores.

    Args:
        scores: model name -> ``(queries,)`` score of every query (the same queries in the same order for every
            model), e.g. hits among the top k, or the reciprocal rank.
        total: the most a query can score (``k`` for hits among the top k, 1 for a reciprocal rank).
        statistic: what ``sum(scores) / (queries * total)`` is, for the results file.

    Returns:
        ``{"arms": {arm: {...}}, "differences": {"A - B": {...}}}``: each arm's seeds, seed-mean and per-seed values
        with the interval of the seed-mean (queries and seeds resampled), and each difference's interval.
    """
    from adversarial_midibert.confidence_intervals import bootstrap_accuracy, paired_bootstrap_difference

    arms: dict[str, list[str]] = {}
    for name in scores:
        arms.setdefault(arm_of(name), []).append(name)
    stacked = {arm: np.stack([scores[n] for n in names]) for arm, names in arms.items()}
    summary = {}
    for arm, values in stacked.items():
        interval = bootstrap_accuracy(values, total)
        summary[arm] = {"models": arms[arm], "seed_values": [round(float(v), 4) for v in values.mean(1) / total],
                        "mean": round(interval.estimate, 4),
                        "interval_95": [round(interval.low, 4), round(interval.high, 4)]}
    pairs = [(arm, RANDOM_INIT) for arm in stacked if arm != RANDOM_INIT and RANDOM_INIT in stacked]
    if "adversarial" in stacked and "random" in stacked:
        pairs.append(("adversarial", "random"))
    differences = {}
    for a, b in pairs:
        interval = paired_bootstrap_difference(stacked[a], total, stacked[b], total)
        differences[f"{a} - {b}"] = {"difference": round(interval.estimate, 4),
                                     "interval_95": [round(interval.low, 4), round(interval.high, 4)],
                                     "excludes_zero": interval.excludes_zero}
    return {"statistic": statistic, "arms": summary, "differences": differences,
            "interval_method": "two-level percentile bootstrap: queries resampled in pairs, seeds per arm "
                               "(adversarial_midibert.confidence_intervals.bootstrap_accuracy for an arm, "
                               "paired_bootstrap_difference for a difference)"}
