"""The environment of the scripts the tests run as subprocesses: this checkout's code first, offline, one thread, CPU,
no mixed precision; a free port; model folders served as Hub ids from an offline Hub cache."""

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


def as_cached_hub_repo(folder: Path, hub_cache: Path, repo_id: str) -> None:
    """The files of ``folder`` as a Hub snapshot: HF_HUB_CACHE/models--org--name/{refs/main, snapshots/<commit>/...}
    (sub-folders, such as a training run's logs, are not part of a model repository)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "snapshots" / revision).mkdir(parents=True)
    for file in folder.iterdir():
        if file.is_file():
            (repo / "snapshots" / revision / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
