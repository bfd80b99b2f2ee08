"""Files of the example runs: Accelerate checkpoint folders (``step_N`` / ``epoch_N`` in ``--output_dir``) and
result files written whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically: into ``path.part`` first, then renamed over ``path``.

    A reader (or a resumed run checking whether ``path`` exists) never sees a half-written file. NaN and
    infinities are written as ``NaN`` / ``Infinity`` (Python's ``json`` reads them back). Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(obj, indent=indent) + "\n", encoding="utf-8")
    os.replace(part, path)
    return path
