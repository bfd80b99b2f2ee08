"""The environment of the example scripts run as subprocesses by the tests: this checkout's code first, offline,
one thread, CPU, no mixed precision."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def script_env(repo_root: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo_root) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               ACCELERATE_USE_CPU="1", TOKENIZERS_PARALLELISM="false")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def free_port() -> str:
    """A TCP port free now, for ``torch.distributed.run --master_port``: other runs on the machine may hold a
    fixed one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])
