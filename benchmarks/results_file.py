"""A benchmark's results file (``--output FILE.json``): what it printed, with the settings, the date, the machine's
load at start and end, the library versions and the command as typed from the repository root.

Shared by ``benchmarks/attention.py``, ``build.py``, ``scale.py``, ``pretrain_step.py``, ``tokenizer_speed.py`` and
``predict_file.py``::

    results = ResultsFile(args.output, settings=vars(args))   # at start: date and load average
    ...
    results.write(rows=rows, ratio=ratio)                        # at the end: load average again, then the file

The file is written aside and renamed into place (``adversarial_midibert.atomic_io.atomic_write_json``), so a
killed benchmark leaves the previous file or none. The figures of docs/ are copied from these files, never from a
terminal.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from adversarial_midibert.command_line import command_line

ROOT = Path(__file__).resolve().parents[1]


def typed_command(argv: list[str] | None = None) -> str:
    """``python -m benchmarks.x ARGS`` as typed from the repository root (no path of this machine: an absolute path
    argument is written relative to the repository root, e.g. ``../runs/gate``)."""
    argv = sys.argv if argv is None else argv
    argv = [argv[0], *(os.path.relpath(a, ROOT) if os.path.isabs(a) else a for a in argv[1:])]
    script = Path(argv[0]).resolve()
    try:
        module = ".".join(script.relative_to(ROOT).with_suffix("").parts)
    except ValueError:
        module = script.stem
    return command_line(f"python -m {module}", argv[1:])


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "datasets", "symusic", "miditok"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _git_commit() -> dict[str, Any]:
    """The checkout's commit and how many tracked files differed from it (results files aside)."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if not line[3:].startswith("results/")]
    return {"commit": git("rev-parse", "HEAD") or None, "modified_files": len(changed)}


def _cpu() -> dict[str, Any]:
    """What sets a CPU's speed here: its model, torch's vector capability (AVX2, AVX512...) and whether oneDNN has bf16
    matrix kernels on it (bf16 autocast was several times slower without them, faster with them)."""
    import torch

    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (info.read_text().splitlines() if info.is_file() else [])
             if line.startswith("model name")]
    return {"model": names[0] if names else platform.processor(), "capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class ResultsFile:
    """Collects a benchmark's context when it starts; :meth:`write` adds the results and writes the file.

    Args:
        path: the JSON file to write; ``None`` (no ``--output``) makes :meth:`write` a no-op.
        settings: the benchmark's arguments (``vars(args)``); ``output`` and arguments set to ``None`` are left out.
    """

    def __init__(self, path: str | os.PathLike | None, settings: dict[str, Any]):
        self.path = Path(path) if path else None
        self.settings = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in settings.items()
                         if k != "output" and v is not None}
        self.command = typed_command()
        self.started = datetime.datetime.now().astimezone()
        self.load_start = _load()
        self.git = _git_commit()  # the code that runs: as it is now, not when the benchmark ends

    def write(self, **results: Any) -> Path | None:
        if self.path is None:
            return None
        from adversarial_midibert.atomic_io import atomic_write_json

        ended = datetime.datetime.now().astimezone()
        payload = {
            "command": self.command,
            "date": self.started.date().isoformat(),
            "started": self.started.isoformat(timespec="seconds"),
            "ended": ended.isoformat(timespec="seconds"),
            "load_average": {"start": self.load_start, "end": _load(),
                             "note": "1, 5 and 15 minute load averages (os.getloadavg)"},
            "cpus": os.cpu_count(),
            "cpu": _cpu(),
            "versions": _versions(),
            "git": self.git,
            "settings": self.settings,
            **results,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, payload)
        print(f"results written to {self.path}")
        return self.path
