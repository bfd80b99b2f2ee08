"""Shared fixtures: where the real data lives, and offline Hugging Face settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("ADV_MIDIBERT_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the shared real data (POP909, EMOPIA, Pianist8, POP1K7, splits, reference).

    Set ``ADV_MIDIBERT_DATA`` to point elsewhere. Tests that need it skip with a reason when absent.
    """
    root = _data_root()
    if not (root / "README.md").is_file():
        pytest.skip(f"real data not found at {root} (set ADV_MIDIBERT_DATA to the shared data folder)")
    return root


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def load_script(repo_root):
    """``load_script("demo/app.py", "demo_app")``: a script of the checkout as a module (it is run as a file, not
    imported from a package)."""
    import importlib.util
    import sys

    def load(relative_path: str, name: str):
        spec = importlib.util.spec_from_file_location(name, repo_root / relative_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def lock_holder():
    """``with lock_holder(folder):`` another process holds ``FolderLock(folder)`` inside the block."""
    import contextlib
    import subprocess
    import sys

    from adversarial_midibert import atomic_io

    @contextlib.contextmanager
    def hold(folder):
        holder = subprocess.Popen(  # atomic_io loaded alone: the holder starts fast
            [sys.executable, "-c", "import importlib.util, sys; "
             f"spec = importlib.util.spec_from_file_location('atomic_io', {atomic_io.__file__!r}); "
             "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
             f"lock = m.FolderLock({str(folder)!r}).acquire(); print('held', flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            yield
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)

    return hold
