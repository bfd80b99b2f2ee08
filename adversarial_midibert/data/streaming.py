"""Training from a stream: a built dataset read shard by shard, from a local folder or the Hub, split across processes.

``examples/pretrain.py --streaming`` never loads the training split as a whole:

- :class:`StreamingDataset` opens a dataset folder written by ``examples/prepare_data.py`` (the Arrow shards of
  :mod:`~adversarial_midibert.data.shards`, or a ``save_to_disk`` folder) or a Hub dataset repository holding such a
  folder (``huggingface_hub.upload_folder(..., repo_type="dataset")``), as a ``datasets.IterableDataset`` per split
  (``load_dataset(..., streaming=True)``: one shard read at a time), with its ``task_info.json``, tokenizer and
  shard index (the number of training segments, which sizes the mask book).
- :class:`StreamingBatches` gives one process its part of the training split
  (``datasets.distributed.split_dataset_by_node``: whole shards per process when their number is a multiple of the
  number of processes, otherwise every process reads all and keeps one example in N), shuffled per epoch
  (shards, then a buffer), batched, and resumable mid-epoch: its state (epoch, examples consumed, the iterable's
  ``state_dict()``) is saved with every checkpoint. Processes may hold different numbers of examples; every process
  stops an epoch when one of them cannot fill another optimizer step, so that their collective calls line up.
"""

from __future__ import annotations

import json
import logging
import os
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch

from ..constants import TOKENIZER_FILE_NAME

logger = logging.getLogger(__name__)

__all__ = ["StreamingDataset", "StreamingBatches"]

TASK_INFO_NAME = "task_info.json"
SHARD_INDEX_NAME = "shards.json"


class StreamingDataset:
    """A built dataset (local folder or Hub dataset id) opened for streaming.

    Args:
        source (`str` or `os.PathLike`): a folder written by ``examples/prepare_data.py`` or a Hub dataset id
            (``namespace/name``) whose repository holds such a folder.
        revision (`str`, *optional*): Hub revision.
        token (`str`, *optional*): Hub token (default: ``HF_TOKEN`` or the cached login).

    Attributes:
        task_info (`dict`), tokenizer (`OctupleTokenizer`), tokenizer_file (`Path`), index (`dict` or `None`:
        ``shards.json``), local (`bool`).
    """

    def __init__(self, source: Union[str, os.PathLike], revision: Optional[str] = None, token: Optional[str] = None):
        from ..tokenization_octuple import OctupleTokenizer  # noqa: PLC0415

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

    def _file(self, name: str) -> Optional[Path]:
        """A metadata file of the dataset (downloaded from the Hub when needed), or ``None``."""
        if self.local:
            path = Path(self.source) / name
            return path if path.is_file() else None
        from huggingface_hub import hf_hub_download  # noqa: PLC0415
        from huggingface_hub.errors import EntryNotFoundError  # noqa: PLC0415

        try:
            return Path(hf_hub_download(self.source, name, repo_type="dataset", revision=self.revision,
                                        token=self.token))
        except EntryNotFoundError:
            return None

    def fingerprint(self) -> str:
        """A hash of what identifies the data (its shard index, build report and task info), so that a checkpoint
        made on other data is refused when resuming (hashing a streamed corpus's rows would mean reading it all)."""
        import hashlib  # noqa: PLC0415

        digest = hashlib.blake2b(digest_size=16)
        for name in (SHARD_INDEX_NAME, "build_report.json", TASK_INFO_NAME):
            path = self._file(name)
            digest.update(name.encode() + b"\0" + (path.read_bytes() if path is not None else b"-") + b"\0")
        return digest.hexdigest()

    def num_rows(self, split: str) -> Optional[int]:
        """Segments of a split, from the shard index (``None`` when the dataset has none)."""
        if self.index is None:
            return None
        info = self.index["splits"].get(split)
        return None if info is None else int(info["num_rows"])

    def split(self, split: str, columns: tuple[str, ...] = ("input_ids", "attention_mask", "segment_id")):
        """A split as a ``datasets.IterableDataset`` of numpy rows with the given columns."""
        from datasets import load_dataset  # noqa: PLC0415

        data_files = {split: [f"{split}/*.arrow"]}
        if self.index is not None:
            if split not in self.index["splits"]:
                raise ValueError(f"{self.source}: no '{split}' split (splits: {list(self.index['splits'])})")
            data_files = {split: [f for f, rows in zip(self.index["splits"][split]["files"],
                                                       self.index["splits"][split]["rows"]) if rows]}
        stream = load_dataset(self.source, data_files=data_files, split=split, streaming=True, revision=self.revision,
                              token=self.token)
        missing = [c for c in columns if c not in (stream.column_names or columns)]
        if missing:
            raise ValueError(f"{self.source}: the '{split}' split has no column(s) {missing}")
        return stream.select_columns(list(columns)).with_format("numpy")

    def head(self, split: str, max_rows: int):
        """The first ``max_rows`` segments of a split as a map-style ``datasets.Dataset`` (validation)."""
        from datasets import Dataset  # noqa: PLC0415

        rows = list(islice(iter(self.split(split)), max_rows))
        return Dataset.from_list(rows).with_format("numpy") if rows else None

    def __repr__(self) -> str:
        where = "folder" if self.local else "Hub dataset"
        return f"StreamingDataset({where} {self.source!r}, splits {list((self.index or {}).get('splits', {}))})"


class StreamingBatches:
    """One process's batches of a streamed split, epoch by epoch, resumable mid-epoch.

    Args:
        dataset (`datasets.IterableDataset`): the whole split (:meth:`StreamingDataset.split`).
        batch_size (`int`): rows per batch.
        collate_fn (`Callable[[list[dict]], dict]`): rows -> batch of tensors.
        accelerator (`accelerate.Accelerator`, *optional*): for the process's rank and the end-of-epoch agreement.
        seed (`int`): seed of the shuffling (the same on every process).
        shuffle_buffer_size (`int`): rows in the shuffle buffer (0: shards shuffled per epoch, rows in order).
        group_size (`int`): an epoch ends for every process when one cannot deliver another ``group_size`` batches
            (the gradient accumulation steps: an optimizer step is never split across epochs).
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
    ):
        from datasets.distributed import split_dataset_by_node  # noqa: PLC0415

        self.accelerator = accelerator
        self.num_processes = accelerator.num_processes if accelerator is not None else 1
        rank = accelerator.process_index if accelerator is not None else 0
        node = split_dataset_by_node(dataset, rank=rank, world_size=self.num_processes)
        if shuffle_buffer_size > 0:
            node = node.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        self.dataset = node
        self.whole_shards = dataset.num_shards % self.num_processes == 0
        self.batch_size, self.collate_fn = int(batch_size), collate_fn
        self.shuffle_buffer_size, self.group_size = int(shuffle_buffer_size), max(1, int(group_size))
        self.epoch = 0
        self.consumed = 0  # rows of the current epoch delivered in complete groups
        self.exhausted = False
        self._dataset_state: Optional[dict] = None
        self._resume: Optional[dict] = None

    def _agree(self, flag: bool) -> bool:
        """True when ``flag`` holds on every process."""
        if self.num_processes <= 1:
            return flag
        value = torch.tensor([int(flag)], device=self.accelerator.device)
        return bool(int(self.accelerator.gather(value).min()))

    def epoch_batches(self, epoch: int) -> Iterator[dict]:
        """The batches of ``epoch`` (continuing where a loaded state stopped, if it is this epoch's)."""
        if epoch != self.epoch:
            self.epoch, self.consumed, self._dataset_state = epoch, 0, None
        self.dataset.set_epoch(epoch)
        skip = 0
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == epoch and resume["consumed"] > 0:
            if self.shuffle_buffer_size == 0 and resume.get("dataset_state") is not None:
                self.dataset.load_state_dict(resume["dataset_state"])  # exact without a buffer, and no re-reading
            else:
                skip = resume["consumed"]  # exact replay of the epoch's order up to where it stopped
            self.consumed = resume["consumed"]
        rows = iter(self.dataset)
        if skip:
            for _ in islice(rows, skip):
                pass
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
            state = self.dataset.state_dict()
            for i, batch in enumerate(group):
                if i == len(group) - 1:  # the state is that of the end of the group
                    self.consumed += sum(len(b["segment_id"]) for b in group)
                    self._dataset_state = state
                yield batch

    def all_batches(self) -> Iterator[dict]:
        """This process's part of the split in its stored order, batched: every row once (the freezing pass, which
        lines the processes up itself)."""
        self.dataset.set_epoch(0)
        rows = iter(self.dataset)
        while True:
            chunk = list(islice(rows, self.batch_size))
            if not chunk:
                return
            yield self.collate_fn(chunk)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "dataset_state": self._dataset_state,
                "num_processes": self.num_processes, "shuffle_buffer_size": self.shuffle_buffer_size,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        same = (state["num_processes"], state["shuffle_buffer_size"]) == (self.num_processes, self.shuffle_buffer_size)
        if not same:
            logger.warning("the checkpoint's stream was read by %d process(es) with a shuffle buffer of %d rows, this "
                           "run has %d and %d: epoch %d starts over", state["num_processes"],
                           state["shuffle_buffer_size"], self.num_processes, self.shuffle_buffer_size, state["epoch"])
        self._resume = dict(state, consumed=state["consumed"] if same else 0)
        self.epoch, self.consumed = int(state["epoch"]), 0

    def save(self, folder: Union[str, os.PathLike]) -> None:
        """Write this process's state into a checkpoint folder (``streaming_state_rank{i}.json``)."""
        rank = self.accelerator.process_index if self.accelerator is not None else 0
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"streaming_state_rank{rank}.json").write_text(json.dumps(self.state_dict()) + "\n")

    def load(self, folder: Union[str, os.PathLike]) -> None:
        """Read this process's state from a checkpoint folder written by :meth:`save`."""
        rank = self.accelerator.process_index if self.accelerator is not None else 0
        path = Path(folder) / f"streaming_state_rank{rank}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {path.name}; was this checkpoint written by a --streaming run "
                                    "with as many processes?")
        self.load_state_dict(json.loads(path.read_text()))
