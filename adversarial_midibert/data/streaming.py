"""Training from a stream: a built dataset read shard by shard, from a local folder or the Hub, split across processes.

:class:`StreamingDataset` opens a folder written by ``examples/prepare_data.py`` (or such a folder on the Hub, or
the Parquet splits of ``--push_to_hub``) as one ``datasets.IterableDataset`` per split, with its task info,
tokenizer and number of training segments (which sizes the mask book). :class:`StreamingBatches` gives one process
its part of the training split (``split_dataset_by_node``), shuffled per epoch, batched, and resumable mid-epoch;
every process stops an epoch when one of them cannot fill another optimizer step, so that their collective calls
line up.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from ..constants import BUILD_REPORT_NAME, SHARD_INDEX_NAME, TASK_INFO_NAME, TOKENIZER_FILE_NAME
from .shards import check_shard_names, verify_hub_shards, verify_shards

logger = logging.getLogger(__name__)

__all__ = ["StreamingDataset", "StreamingBatches"]


class StreamingDataset:
    """A built dataset (local folder or Hub dataset id) opened for streaming.

    Args:
        source (`str` or `os.PathLike`): a folder written by ``examples/prepare_data.py`` or a Hub dataset id
            (``namespace/name``) whose repository holds such a folder.
        revision (`str`, *optional*): Hub revision.
        token (`str`, *optional*): Hub token (default: ``HF_TOKEN`` or the cached login).
        verify (`bool`): check the shards against ``shards.json`` when opening (size and SHA-256; on the Hub, the
            Hub's size and LFS SHA-256, nothing downloaded).

    Attributes:
        task_info (`dict`), tokenizer (`OctupleTokenizer`), tokenizer_file (`Path`), index (`dict` or `None`:
        ``shards.json``), local (`bool`).
    """

    def __init__(self, source: str | os.PathLike, revision: str | None = None, token: str | None = None,
                 verify: bool = True):
        from ..tokenization_octuple import OctupleTokenizer

        self.source = str(source)
        self.revision, self.token = revision, token
        self.local = Path(self.source).is_dir()
        if not self.local and self.source.count("/") != 1:
            raise FileNotFoundError(f"--dataset {self.source}: not a folder, nor a Hub dataset id (namespace/name)")
        info = self._file(TASK_INFO_NAME)
        if info is None:
            raise FileNotFoundError(f"{self.source}: no {TASK_INFO_NAME}; not a dataset written by "
                                    "examples/prepare_data.py")
        self.task_info = json.loads(info.read_text())
        tokenizer_file = self._file(TOKENIZER_FILE_NAME)
        if tokenizer_file is None:
            raise FileNotFoundError(f"{self.source}: no {TOKENIZER_FILE_NAME}")
        self.tokenizer = OctupleTokenizer.from_pretrained(tokenizer_file.parent)
        self.tokenizer_file = tokenizer_file
        index = self._file(SHARD_INDEX_NAME)
        self.index = json.loads(index.read_text()) if index is not None else None
        if self.index is not None:  # streamed by these names, verified or not
            check_shard_names(self.index, self.source, f"{self.source}/{SHARD_INDEX_NAME}")
        if verify and self.index is not None:  # a damaged or missing shard is named before training reads it
            if self.local:
                verify_shards(self.source)
            else:
                self._verify_hub_shards()

    def _verify_hub_shards(self) -> None:
        """The Hub's sizes and hashes of the shards against ``shards.json``; not possible offline (said in the log)."""
        from huggingface_hub.errors import OfflineModeIsEnabled

        try:
            verify_hub_shards(self.source, self.index, revision=self.revision, token=self.token)
        except OfflineModeIsEnabled:
            logger.warning("%s: the shards were not checked against %s (offline mode)", self.source,
                           SHARD_INDEX_NAME)

    def _file(self, name: str) -> Path | None:
        """A metadata file of the dataset (downloaded from the Hub when needed), or ``None``."""
        if self.local:
            path = Path(self.source) / name
            return path if path.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return Path(hf_hub_download(self.source, name, repo_type="dataset", revision=self.revision,
                                        token=self.token))
        except EntryNotFoundError:
            return None

    def fingerprint(self) -> str:
        """A hash of what identifies the data (its shard index, build report and task info), so that a checkpoint
        made on other data is refused when resuming (hashing a streamed corpus's rows would mean reading it all)."""
        import hashlib

        digest = hashlib.blake2b(digest_size=16)
        for name in (SHARD_INDEX_NAME, BUILD_REPORT_NAME, TASK_INFO_NAME):
            path = self._file(name)
            digest.update(name.encode() + b"\0" + (path.read_bytes() if path is not None else b"-") + b"\0")
        return digest.hexdigest()

    def num_rows(self, split: str) -> int | None:
        """Segments of a split: from the shard index, else from the build report (``None`` when neither says)."""
        if self.index is not None:
            info = self.index["splits"].get(split)
            return None if info is None else int(info["num_rows"])
        report = self._file(BUILD_REPORT_NAME)
        counts = json.loads(report.read_text()).get("splits", {}).get(split) if report is not None else None
        return None if counts is None else int(counts["segments"])

    def split(self, split: str, columns: tuple[str, ...] = ("input_ids", "attention_mask", "segment_id")):
        """A split as a ``datasets.IterableDataset`` with the given columns."""
        from datasets import load_dataset

        # a save_to_disk folder: {split}/*.arrow; a data set published by push_dataset_to_hub: data/{split}-*.parquet
        data_files = {split: [f"{split}/*.arrow"] if self.local else [f"data/{split}-*.parquet"]}
        if self.index is not None:
            if split not in self.index["splits"]:
                raise ValueError(f"{self.source}: no '{split}' split (splits: {list(self.index['splits'])})")
            data_files = {split: [f for f, rows in zip(self.index["splits"][split]["files"],
                                                       self.index["splits"][split]["rows"]) if rows]}
            if not data_files[split]:
                raise ValueError(f"{self.source}: the '{split}' split holds no segments (its shards are empty); "
                                 "build the data set with a share of the pieces in it")
        stream = load_dataset(self.source, data_files=data_files, split=split, streaming=True, revision=self.revision,
                              token=self.token)
        missing = [c for c in columns if c not in (stream.column_names or columns)]
        if missing:
            raise ValueError(f"{self.source}: the '{split}' split has no column(s) {missing}")
        return stream.select_columns(list(columns))

    def head(self, split: str, max_rows: int):
        """The first ``max_rows`` segments of a split as a map-style ``datasets.Dataset`` (validation); ``None`` when
        the split is empty."""
        from datasets import Dataset

        if self.num_rows(split) == 0:  # an empty split (e.g. a tiny corpus without validation pieces): nothing to read
            return None
        rows = list(islice(iter(self.split(split)), max_rows))
        return Dataset.from_list(rows, features=self.split(split).features) if rows else None

    def __repr__(self) -> str:
        where = "folder" if self.local else "Hub dataset"
        return f"StreamingDataset({where} {self.source!r}, splits {list((self.index or {}).get('splits', {}))})"


def _table_rows(table) -> list[dict]:
    """The rows of an Arrow table of segments as dicts of numpy views (no copy, no Python list per row)."""
    import numpy as np

    ids_column = table.column("input_ids").combine_chunks()
    lengths = np.diff(ids_column.offsets.to_numpy())
    starts = np.concatenate([[0], np.cumsum(lengths)])
    ids = ids_column.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, 8)
    mask = table.column("attention_mask").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    segment_ids = table.column("segment_id").to_numpy()
    return [{"input_ids": ids[a:b], "attention_mask": mask[a:b], "segment_id": int(s)}
            for a, b, s in zip(starts[:-1], starts[1:], segment_ids)]


class StreamingBatches:
    """One process's batches of a streamed split, epoch by epoch, resumable mid-epoch.

    Rows are read from the shards in Arrow blocks and shuffled per epoch by ``datasets`` (the shards' order, then a
    buffer), so the seed fixes an epoch's order. ``datasets``' own ``state_dict`` drops the buffer on resume, so the
    saved state is the epoch and the rows consumed: a resumed run reads the epoch again up to that point and goes on
    exactly as the interrupted run would have.

    Args:
        dataset (`datasets.IterableDataset`): the whole split (:meth:`StreamingDataset.split`).
        batch_size (`int`): rows per batch.
        collate_fn (`Callable[[list[dict]], dict]`): rows (dicts of numpy arrays) -> batch of tensors.
        accelerator (`accelerate.Accelerator`, *optional*): for the process's rank and the end-of-epoch agreement.
        seed (`int`): seed of the shuffling (the same on every process).
        shuffle_buffer_size (`int`): rows in the shuffle buffer (0: shards shuffled per epoch, rows in order).
        group_size (`int`): an epoch ends for every process when one cannot deliver another ``group_size`` batches
            (the gradient accumulation steps: an optimizer step is never split across epochs).
        read_size (`int`): rows per block read from the shards.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        collate_fn: Callable[[list], dict],
        accelerator: Any = None,
        seed: int = 0,
        shuffle_buffer_size: int = 1000,
        group_size: int = 1,
        read_size: int = 1024,
    ):
        from datasets.distributed import split_dataset_by_node

        self.accelerator = accelerator
        self.num_processes = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.dataset = split_dataset_by_node(dataset, rank=self.rank, world_size=self.num_processes)
        self.whole_shards = dataset.num_shards % self.num_processes == 0
        self.batch_size, self.collate_fn, self.seed = int(batch_size), collate_fn, int(seed)
        self.shuffle_buffer_size, self.group_size = int(shuffle_buffer_size), max(1, int(group_size))
        self.read_size = int(read_size)
        self.epoch = 0
        self.consumed = 0  # rows of the current epoch delivered in complete groups
        self.exhausted = False
        self._resume: dict | None = None

    def _agree(self, flag: bool) -> bool:
        """True when ``flag`` holds on every process."""
        if self.num_processes <= 1:
            return flag
        value = torch.tensor([int(flag)], device=self.accelerator.device)
        return bool(int(self.accelerator.gather(value).min()))

    def _rows(self, epoch: int, shuffle: bool = True) -> Iterator[dict]:
        """This process's rows of the split in the order of ``epoch``: ``datasets``' own shuffling (the shards, then
        a buffer of rows taken in Arrow blocks, seeded by ``seed`` and the epoch; a buffer of 1 keeps the rows'
        order)."""
        dataset = self.dataset.with_format("arrow")  # first: with_format does not carry the epoch over
        if shuffle:
            dataset = dataset.shuffle(seed=self.seed, buffer_size=max(1, self.shuffle_buffer_size))
            dataset.set_epoch(epoch)
        for table in dataset.iter(batch_size=self.read_size):
            yield from _table_rows(table)

    def epoch_batches(self, epoch: int) -> Iterator[dict]:
        """The batches of ``epoch`` (continuing where a loaded state stopped, if it is this epoch's)."""
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0
        rows = self._rows(epoch)
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == epoch and resume["consumed"] > 0:
            for _ in islice(rows, resume["consumed"]):  # the same order: read up to where the run stopped
                pass
            self.consumed = resume["consumed"]
        self.exhausted = False
        while True:
            group = []
            for _ in range(self.group_size):
                chunk = list(islice(rows, self.batch_size))
                if not chunk:
                    break
                group.append(self.collate_fn(chunk))
            if not self._agree(len(group) == self.group_size):
                self.exhausted = True
                return
            for i, batch in enumerate(group):
                if i == len(group) - 1:  # a checkpoint can only follow a whole group (an optimizer step)
                    self.consumed += sum(len(b["segment_id"]) for b in group)
                yield batch

    def all_batches(self) -> Iterator[dict]:
        """This process's part of the split in its stored order, batched: every row once (the freezing pass, which
        lines the processes up itself)."""
        rows = self._rows(0, shuffle=False)
        while True:
            chunk = list(islice(rows, self.batch_size))
            if not chunk:
                return
            yield self.collate_fn(chunk)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "num_processes": self.num_processes,
                "seed": self.seed, "shuffle_buffer_size": self.shuffle_buffer_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        same = ((state["num_processes"], state["shuffle_buffer_size"], state.get("seed", self.seed))
                == (self.num_processes, self.shuffle_buffer_size, self.seed))
        if not same:
            logger.warning("the checkpoint's stream was read by %d process(es) with a shuffle buffer of %d rows (seed "
                           "%s), this run has %d, %d (seed %d): epoch %d starts over", state["num_processes"],
                           state["shuffle_buffer_size"], state.get("seed"), self.num_processes,
                           self.shuffle_buffer_size, self.seed, state["epoch"])
        self._resume = dict(state, consumed=state["consumed"] if same else 0)
        self.epoch, self.consumed = int(state["epoch"]), 0

    def save(self, folder: str | os.PathLike) -> None:
        """Write this process's state into a checkpoint folder (``streaming_state_rank{i}.json``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"streaming_state_rank{self.rank}.json").write_text(json.dumps(self.state_dict()) + "\n")

    def load(self, folder: str | os.PathLike) -> None:
        """Read this process's state from a checkpoint folder written by :meth:`save`."""
        path = Path(folder) / f"streaming_state_rank{self.rank}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {path.name}; was this checkpoint written by a --streaming run "
                                    "with as many processes?")
        self.load_state_dict(json.loads(path.read_text()))
