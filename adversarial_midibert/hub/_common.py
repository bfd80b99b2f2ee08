"""What the Hub modules share: their error type and reading a folder's JSON files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..atomic_io import write_folder_aside
from ..output_folders import resolves_inside

CONFIG_NAME = "config.json"
MODEL_CARD_NAME = "README.md"
RESULTS_NAME = "all_results.json"


class HubPublishError(ValueError):
    """A model folder or a publishing argument is not fit for upload; the message says what and where."""


def read_json(path: Path, what: str) -> dict:
    """Read a JSON object, or raise :class:`HubPublishError` naming the file and what is wrong."""
    if not path.is_file():
        raise HubPublishError(f"{what} file missing: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubPublishError(f"{what} file {path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise HubPublishError(f"{what} file {path} must hold a JSON object, found {type(data).__name__}")
    return data


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, refusing any name that resolves outside ``folder`` (``..``, absolute, a symlink out)."""
    if not resolves_inside(folder, name):
        raise HubPublishError(f"{what} {name!r} lies outside the model folder {folder}; refusing to publish it")
    return folder / name


@contextmanager
def dry_run_folder(target: Path) -> Iterator[Path]:
    """Write a dry run's files aside and swap them into ``target``, which must be a new or empty real folder."""
    if target.is_symlink():
        raise HubPublishError(f"--dry_run folder {target} is a symbolic link; give a real (new or empty) folder")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise HubPublishError(f"--dry_run folder {target} exists and is not empty")
    with write_folder_aside(target) as staging:
        yield staging
