"""Sharing a built data set on the Hugging Face Hub: Parquet splits, a dataset card, the task and the tokenizer.

:func:`push_dataset_to_hub` publishes a folder written by :func:`~adversarial_midibert.data.builder.save` as a Hub
*dataset* repository in one commit::

    data/train-00000-of-00001.parquet ...   the splits (labels as ClassLabel: the class names travel with the data)
    README.md                               dataset card: YAML (configs, tags) + what it holds, counts, how to load
    task_info.json  build_report.json       the task (type, classes, hidden attributes) and what the build skipped
    octuple_tokenizer.json                  the tokenizer that made the segments

so that ``datasets.load_dataset("org/name")`` works, and ``load_task_dataset("org/name")`` (the training
scripts' ``--dataset``) gets the task and the tokenizer too.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from ..constants import BUILD_REPORT_NAME, SPLIT_NAMES, TASK_INFO_NAME, TOKENIZER_FILE_NAME
from .builder import load_task_dataset
from .download import DATA_DIR

__all__ = ["push_dataset_to_hub", "write_dataset_card"]

TEMPLATE_PATH = Path(__file__).resolve().parent / "dataset_card_template.md"
DATASET_TAGS = ("symbolic-music", "midi", "music", "octuple", "adversarial-midibert")


class DatasetPublishError(ValueError):
    """A data set folder or a publishing argument is not fit for upload; the message says what and where."""


def write_dataset_card(folder: str | os.PathLike, repo_id: str, dataset, license: str | None = None,
                       command: str | None = None) -> Path:
    """Write ``README.md`` (Hub dataset card) into ``folder`` for a loaded task data set.

    Args:
        folder: where to write (the staging folder of an upload).
        repo_id: the Hub id shown in the loading examples.
        dataset: a ``DatasetDict`` from :func:`~adversarial_midibert.data.builder.load_task_dataset`.
        license: license id of the data, when known (the MIDI files' own licences apply otherwise).
        command: the command that built the data set, shown verbatim.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    info, report = dataset.task_info, dataset.build_report or {}
    splits = [name for name in SPLIT_NAMES if name in dataset]
    card_data = DatasetCardData(
        license=license,
        tags=list(dict.fromkeys([*DATASET_TAGS, str(info.get("task"))])),
        pretty_name=f"{info.get('task')} (Octuple segments)",
        configs=[{"config_name": "default",
                  "data_files": [{"split": name, "path": f"{DATA_DIR}/{name}-*.parquet"} for name in splits]}],
    )
    counts = report.get("splits", {})
    card = DatasetCard.from_template(
        card_data, template_path=str(TEMPLATE_PATH), repo_id=repo_id, command=command, task=info.get("task"),
        task_type=info.get("task_type"), label_names=info.get("label_names"),
        hidden_attributes=info.get("hidden_attributes"), num_skipped=len(report.get("skipped", [])),
        max_seq_len=info.get("tokenizer", {}).get("max_seq_len", "?"),
        kind={"sequence": "one label per segment (the label of its piece)", "token": "one label per note row",
              "pretrain": "no labels: pre-training data"}.get(info.get("task_type"), str(info.get("task_type"))),
        rows=[[name, counts.get(name, {}).get("pieces", "?"), len(dataset[name]), counts.get(name, {}).get("notes",
                                                                                                           "?"),
               counts.get(name, {}).get("dropped_notes", 0)] for name in splits],
        class_counts=[(name, per_class) for name in splits
                      if (per_class := counts.get(name, {}).get("class_counts_pieces")
                          or counts.get(name, {}).get("class_counts_notes"))],
    )
    path = Path(folder) / "README.md"
    path.write_text(str(card), encoding="utf-8")
    return path


def _stage(folder: Path, repo_id: str, staging: Path, license: str | None, command: str | None) -> list[str]:
    """Write the repository's files into ``staging``; return their paths in the repository."""
    import datasets
    from datasets.utils.py_utils import convert_file_size_to_int

    dataset, _, _ = load_task_dataset(folder)
    names = []
    (staging / DATA_DIR).mkdir(parents=True, exist_ok=True)
    for split in (s for s in SPLIT_NAMES if s in dataset):
        data = dataset[split]
        # Sharded here, not by DatasetDict.push_to_hub(max_shard_size=): that makes its own commits and card, with no
        # dry run, while the task, tokenizer and card must land in the same one commit as the splits.
        shards = max(1, math.ceil(data.data.nbytes / convert_file_size_to_int(datasets.config.MAX_SHARD_SIZE)))
        for index in range(shards):
            name = f"{DATA_DIR}/{split}-{index:05d}-of-{shards:05d}.parquet"
            data.shard(num_shards=shards, index=index, contiguous=True).to_parquet(str(staging / name))
            names.append(name)
    for name in (TASK_INFO_NAME, BUILD_REPORT_NAME, TOKENIZER_FILE_NAME):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, staging / name)
            names.append(name)
    write_dataset_card(staging, repo_id, dataset, license=license, command=command)
    return sorted([*names, "README.md"])


def push_dataset_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload Octuple data set",
    dry_run_dir: str | os.PathLike | None = None,
    license: str | None = None,
    command: str | None = None,
):
    """Publish a data set folder (written by ``save``) as a Hub dataset repository, in one commit.

    Every check (repo id, token, the folder loads) happens before the first network call.

    Args:
        folder: the data set folder.
        repo_id: ``"org/name"`` of the dataset repository.
        private: create it as private.
        revision: branch to commit to (created if missing).
        token: Hub token (default ``HF_TOKEN`` or the cached login).
        commit_message: the commit's message.
        dry_run_dir: a new or empty folder to write the upload's files to instead of uploading.
        license: license id for the card, when known.
        command: the build command, for the card.

    Returns:
        The ``CommitInfo``, or the ``dry_run_dir`` path.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from ..hub import resolve_token, validate_repo_id
    from ..hub._common import dry_run_folder

    folder = Path(folder)
    validate_repo_id(repo_id)
    if not folder.is_dir():
        raise DatasetPublishError(f"data set folder {folder} does not exist")
    if dry_run_dir is not None:
        with dry_run_folder(Path(dry_run_dir)) as staging:
            _stage(folder, repo_id, staging, license, command)
        return Path(dry_run_dir)
    token = resolve_token(token)
    with tempfile.TemporaryDirectory(prefix="adv-midibert-dataset-") as tmp:
        names = _stage(folder, repo_id, Path(tmp), license, command)
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True, token=token)
        if revision is not None:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True, token=token)
        operations = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(Path(tmp) / n)) for n in names]
        return api.create_commit(repo_id, repo_type="dataset", operations=operations, commit_message=commit_message,
                                 revision=revision, token=token)
