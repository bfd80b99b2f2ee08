"""Accelerate checkpoint folders of the example training loops (``step_N`` / ``epoch_N`` in ``--output_dir``)."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_PREFIXES = ("step", "epoch")


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The most recently written ``step_*`` / ``epoch_*`` folder of ``output_dir`` (``--resume_from_checkpoint latest``).

    Returns ``None`` when there is none (or ``output_dir`` does not exist).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = [p for p in output_dir.iterdir() if p.is_dir() and p.name.split("_")[0] in CHECKPOINT_PREFIXES]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
