"""Reading a data set published on the Hub: the repository's snapshot (through ``huggingface_hub``'s cache, offline
once cached) and its Parquet splits. :func:`~adversarial_midibert.data.builder.load_task_dataset` calls these for a
Hub id; :mod:`adversarial_midibert.data.publish` writes such repositories.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..constants import SPLIT_NAMES

__all__ = ["DATA_DIR", "download_task_dataset", "load_parquet_splits"]

DATA_DIR = "data"  # the repository's folder of Parquet splits


def download_task_dataset(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """The local snapshot (cached) of a Hub dataset repository published by
    :func:`~adversarial_midibert.data.publish.push_dataset_to_hub`.

    Raises:
        FileNotFoundError: ``repo_id`` is not a valid id, or (offline / not found) no snapshot can be had.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(f"{repo_id}: no such data set folder, and not a Hub data set id") from None
    try:
        path = snapshot_download(repo_id, repo_type="dataset", revision=revision, token=token,
                                 allow_patterns=[f"{DATA_DIR}/*.parquet", "*.json", "README.md"])
    except OSError as err:  # not found, offline without a cache, HTTP errors
        raise FileNotFoundError(f"{repo_id}: cannot get the Hub data set ({type(err).__name__}: {err})") from err
    return Path(path)


def load_parquet_splits(folder: str | os.PathLike):
    """A ``DatasetDict`` of the ``data/<split>-*.parquet`` files of a (downloaded) dataset repository."""
    from datasets import DatasetDict, load_dataset

    folder = Path(folder)
    files = {split: sorted(str(p) for p in (folder / DATA_DIR).glob(f"{split}-*.parquet")) for split in SPLIT_NAMES}
    files = {split: paths for split, paths in files.items() if paths}
    if not files:
        raise FileNotFoundError(f"{folder}: no data set here (neither a save_to_disk folder nor {DATA_DIR}/*.parquet)")
    return DatasetDict(load_dataset("parquet", data_files=files))
