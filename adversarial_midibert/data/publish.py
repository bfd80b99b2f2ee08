"""Sharing a built data set on the Hugging Face Hub: Parquet splits, a dataset card, the task and the tokenizer.

:func:`push_dataset_to_hub` publishes a folder written by :func:`~adversarial_midibert.data.builder.save` as a Hub
*dataset* repository in one commit::

    data/train-00000-of-00001.parquet ...   the splits (labels as ClassLabel: the class names travel with the data)
    README.md                               dataset card: YAML (configs, tags) + what it holds, counts, how to load
    task_info.json  build_report.json       the task (type, classes, hidden attributes) and what the build skipped
    octuple_tokenizer.json                  the tokenizer that made the segments

so that anyone can ``datasets.load_dataset("org/name")``, and ``load_task_dataset("org/name")`` (which the training
examples call on ``--dataset``) gets the task and the tokenizer too (through :mod:`adversarial_midibert.data.download`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from ..constants import BUILD_REPORT_NAME, SPLIT_NAMES, TASK_INFO_NAME, TOKENIZER_FILE_NAME
from .builder import load_task_dataset
from .download import DATA_DIR

__all__ = ["push_dataset_to_hub", "write_dataset_card"]

MAX_SHARD_BYTES = 500 * 2**20  # datasets' own default for push_to_hub
DATASET_TAGS = ("symbolic-music", "midi", "music", "octuple", "adversarial-midibert")


class DatasetPublishError(ValueError):
    """A data set folder or a publishing argument is not fit for upload; the message says what and where."""


def _table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_dataset_card(folder: Union[str, os.PathLike], repo_id: str, dataset, license: Optional[str] = None,
                       command: Optional[str] = None) -> Path:
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
    rows = [[name, counts.get(name, {}).get("pieces", "?"), len(dataset[name]), counts.get(name, {}).get("notes", "?"),
             counts.get(name, {}).get("dropped_notes", 0)] for name in splits]
    class_lines = []
    for name in splits:
        per_class = counts.get(name, {}).get("class_counts_pieces") or counts.get(name, {}).get("class_counts_notes")
        if per_class:
            class_lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in per_class.items()))
    kind = {"sequence": "one label per segment (the label of its piece)", "token": "one label per note row",
            "pretrain": "no labels: pre-training data"}.get(info.get("task_type"), str(info.get("task_type")))
    skipped = report.get("skipped", [])
    text = f"""
# {info.get('task')}: MIDI files as Octuple segments

Built with [adversarial-midibert](https://arxiv.org/abs/2407.08306)'s data pipeline: every MIDI file was tokenised
into rows of eight ids per note (bar, position, program, pitch, duration, velocity, time signature, tempo) and cut
into segments of at most {info.get('tokenizer', {}).get('max_seq_len', '?')} rows (BOS and EOS included). Splits are
made by piece, never by segment. Task type: **{info.get('task_type')}**, {kind}.
{f"Classes: {', '.join(map(str, info['label_names']))} (the `labels` feature is a `ClassLabel`; -100 marks rows without a label)." if info.get('label_names') else ""}
{f"Hidden from the model (MASK in every note row): {', '.join(info['hidden_attributes'])}." if info.get('hidden_attributes') else ""}

{_table(rows, ["split", "pieces", "segments", "notes", "notes left out"])}

{chr(10).join(class_lines)}

Files that could not be read were skipped and are listed with their reason in `build_report.json`
({len(skipped)} here). Notes the vocabulary cannot represent were left out and counted ("notes left out").

## Columns

- `input_ids`: (rows, 8) ids; `attention_mask`: ones (the collators pad);
- `labels`{": absent" if info.get("task_type") == "pretrain" else ": the class (sequence) or one class per row (token)"};
- `piece_id`: the source file (relative path); `segment_id`: the row number within the split.

## How to load

```python
from datasets import load_dataset

data = load_dataset("{repo_id}")      # the splits, with the class names in data["train"].features["labels"]
```

With `pip install adversarial-midibert`, the task and the tokenizer come with it, and the training scripts take the
id directly (`adv-midibert finetune --dataset {repo_id} ...`):

```python
from adversarial_midibert.data import load_task_dataset

data, task_info, tokenizer = load_task_dataset("{repo_id}")
```
{f"## How it was built{chr(10)}{chr(10)}```bash{chr(10)}{command}{chr(10)}```" if command else ""}
"""
    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{text}")
    path = Path(folder) / "README.md"
    path.write_text(str(card), encoding="utf-8")
    return path


def _stage(folder: Path, repo_id: str, staging: Path, license: Optional[str], command: Optional[str]) -> list[str]:
    """Write the repository's files into ``staging``; return their paths in the repository."""
    dataset, _, _ = load_task_dataset(folder)
    names = []
    (staging / DATA_DIR).mkdir(parents=True, exist_ok=True)
    for split in (s for s in SPLIT_NAMES if s in dataset):
        data = dataset[split]
        shards = max(1, math.ceil(data.data.nbytes / MAX_SHARD_BYTES))
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
    folder: Union[str, os.PathLike],
    repo_id: str,
    private: bool = False,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    commit_message: str = "Upload Octuple data set",
    dry_run_dir: Optional[Union[str, os.PathLike]] = None,
    license: Optional[str] = None,
    command: Optional[str] = None,
):
    """Publish a data set folder (written by ``save``) as a Hub dataset repository, in one commit.

    Every check (repo id, token, the folder loads) happens before the first network call; with ``dry_run_dir`` the
    files of the upload are written there instead and nothing is sent.

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

    folder = Path(folder)
    validate_repo_id(repo_id)
    if not folder.is_dir():
        raise DatasetPublishError(f"data set folder {folder} does not exist")
    if dry_run_dir is not None:
        target = Path(dry_run_dir)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise DatasetPublishError(f"--dry_run folder {target} exists and is not empty")
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _stage(folder, repo_id, staging, license, command)
        if target.exists():
            target.rmdir()
        staging.rename(target)
        return target
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
