"""A dataset written as it is built: Arrow shards per split, resumable, parallel over files, memory bounded.

Layout of a built folder::

    shards.json                              index: per split, the shard files, rows, sizes and SHA-256
    train/shard-00000-of-00040.arrow         Arrow IPC stream files (memory-mapped by ``Dataset.from_file``)
    .build/plan.json                         what is being built (inputs and settings), to resume safely
    .build/train/shard-00000-of-00040.json   each shard's counts and skipped files

Worker processes tokenise whole shards of ``shard_size`` pieces; the main process numbers their rows
(``segment_id``) and writes each shard aside, then renames it into place, the side file last. At most
``2 * num_proc`` shards are in flight, so memory is bounded by the shard size. Building again into the same folder
with the same inputs resumes: complete shards are kept, a damaged one is rebuilt with a warning, a folder holding
another build is refused. The folder is also a ``save_to_disk`` folder whose data files are the shards, so
``datasets.load_from_disk`` reads it as it is (:func:`load_sharded`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import TMP_PREFIX, FolderLock, atomic_write_json, file_sha256, fsync_path, remove_path
from ..constants import SHARD_INDEX_NAME
from ..output_folders import resolves_inside
from .segments import PieceBatch, segment_features, tokenize_pieces

logger = logging.getLogger(__name__)

__all__ = ["SHARD_INDEX_NAME", "BUILD_PLAN_NAME", "plan_shards", "write_shards", "load_sharded", "shard_files",
           "verify_shards"]

BUILD_STATE_DIR = ".build"
BUILD_PLAN_NAME = f"{BUILD_STATE_DIR}/plan.json"
FORMAT_NAME = "adversarial-midibert-shards"
FORMAT_VERSION = 1


def plan_shards(num_pieces: int, shard_size: int = 256, num_shards: int | None = None) -> list[tuple[int, int]]:
    """Cut ``num_pieces`` consecutive pieces into shards: ``(start, stop)`` per shard, sizes differing by one at most.

    Args:
        num_pieces: pieces of the split.
        shard_size: at most this many pieces per shard.
        num_shards: exactly this many shards instead (at most one per piece), e.g. a multiple of the number of
            training processes, so that ``split_dataset_by_node`` gives each process whole shards.
    """
    if num_pieces == 0:
        return []
    if num_shards is None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        num_shards = -(-num_pieces // shard_size)
    elif num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    num_shards = min(num_shards, num_pieces)
    bounds = np.linspace(0, num_pieces, num_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def shard_files(directory: Path, split: str, index: int, count: int) -> tuple[Path, Path]:
    """The data file and side file of shard ``index`` of ``count`` of a split."""
    name = f"shard-{index:05d}-of-{count:05d}"
    return directory / split / f"{name}.arrow", directory / BUILD_STATE_DIR / split / f"{name}.json"


def shard_problem(path: Path, rows: int, size: int | None, sha256: str | None) -> str | None:
    """What is wrong with a shard file against what was recorded when it was written (``None``: nothing).

    ``size`` and ``sha256`` are checked when the index recorded them (older builds did not); the rows are counted
    otherwise."""
    import pyarrow as pa

    if not path.is_file():
        return f"shard {path} is missing"
    if size is not None and path.stat().st_size != size:
        return f"shard {path} has {path.stat().st_size} bytes, {size} were written (truncated or changed)"
    if sha256 is not None:
        if file_sha256(path) != sha256:
            return f"shard {path} is not what was written (its SHA-256 differs from the recorded one)"
        return None
    try:
        with pa.memory_map(str(path)) as source:
            found = sum(batch.num_rows for batch in pa.ipc.open_stream(source))
    except (OSError, pa.ArrowInvalid) as error:
        return f"shard {path} is not a readable Arrow stream ({error})"
    if found != rows:
        return f"shard {path} holds {found} rows, {rows} were written (truncated)"
    return None


def _complete_prefix(directory: Path, split: str, count: int) -> int:
    """How many shards at the start of a split are complete: data and side file both in place, and the data file
    as the side file recorded it (a damaged shard is rebuilt, with a warning naming it)."""
    for i in range(count):
        data, side_path = shard_files(directory, split, i, count)
        if not (data.is_file() and side_path.is_file()):
            return i
        try:
            side = json.loads(side_path.read_text())
            problem = shard_problem(data, int(side["rows"]), side.get("bytes"), side.get("sha256"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            problem = f"side file {side_path} is unreadable ({error})"
        if problem:
            logger.warning("%s; rebuilding it and the shards after it", problem)
            return i
    return count


def _clear_stale(directory: Path, split: str, keep: set[str]) -> None:
    """Remove every file of a split's data and side folders but ``keep`` (names)."""
    for folder in (directory / split, directory / BUILD_STATE_DIR / split):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name not in keep:
                    path.unlink()


def _run(task: tuple) -> PieceBatch:
    return tokenize_pieces(*task)


def _ordered_results(tasks: list[tuple], num_proc: int) -> Iterator[PieceBatch]:
    """Results of ``tokenize_pieces`` over ``tasks``, in order, with at most ``2 * num_proc`` tasks in flight."""
    if num_proc <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run(task)
        return
    with multiprocessing.get_context().Pool(min(num_proc, len(tasks))) as pool:
        pending: deque = deque()
        queue = iter(tasks)
        for task in queue:
            pending.append(pool.apply_async(_run, (task,)))
            if len(pending) >= 2 * num_proc:
                break
        while pending:
            result = pending.popleft().get()
            for task in queue:
                pending.append(pool.apply_async(_run, (task,)))
                break
            yield result


def _write_shard(path: Path, batch, first_segment_id: int, schema) -> dict:
    """Write a shard aside and rename it into place; return its ``bytes`` and ``sha256`` for the side file."""
    import pyarrow as pa

    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        if batch is not None and batch.num_rows:
            ids = pa.array(np.arange(first_segment_id, first_segment_id + batch.num_rows, dtype=np.int64))
            writer.write_batch(pa.RecordBatch.from_arrays([*batch.columns, ids], schema=schema))
    fsync_path(tmp)
    written = {"bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}
    os.replace(tmp, path)
    return written


def write_shards(
    directory: str | os.PathLike,
    split_pieces: Mapping[str, Sequence[tuple[str, str, Any]]],
    tokenizer_json: str,
    task_type: str,
    plan_key: Any,
    token_label_fn: Callable | None = None,
    label_names: Sequence[str] | None = None,
    num_proc: int = 1,
    shard_size: int = 256,
    num_shards: int | None = None,
    overwrite: bool = False,
    description: str = "",
) -> dict[str, dict]:
    """Tokenise every split into shard files under ``directory`` (see the module docstring); resume a killed build.

    Args:
        directory: the output folder (created if needed).
        split_pieces: split name -> ``(path, piece_id, label)`` per piece, in output order.
        tokenizer_json, task_type, token_label_fn, label_names: see
            :func:`~adversarial_midibert.data.segments.tokenize_pieces`.
        plan_key: everything else that decides the output (JSON-able); with ``split_pieces`` and the settings it
            makes the plan's fingerprint, which a resumed build must match.
        num_proc: tokenising processes.
        shard_size: pieces per shard.
        num_shards: exact number of shards of the ``train`` split (the others keep about as many pieces per shard).
        overwrite: replace a folder holding another build instead of refusing it.
        description: the ``DatasetInfo.description`` of every split (``dataset_info.json``).

    Returns:
        split -> ``{"files", "rows"`` (per shard; files relative to ``directory``), ``"num_rows", "pieces",
        "notes", "dropped_notes", "skipped"`` (``{"piece_id", "path", "reason"}`` each) and the class counts ``}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    per_shard = shard_size
    if num_shards is not None and split_pieces.get("train"):
        per_shard = -(-len(split_pieces["train"]) // num_shards)  # the other splits: about as many pieces per shard
    plans = {split: plan_shards(len(pieces), per_shard, num_shards if split == "train" else None)
             for split, pieces in split_pieces.items()}
    digest = hashlib.sha256(json.dumps(
        [plan_key, task_type, tokenizer_json, list(label_names or []),
         getattr(token_label_fn, "__qualname__", None),
         {split: [[str(path), piece_id, label] for path, piece_id, label in pieces]
          for split, pieces in split_pieces.items()}, plans],
        sort_keys=True, default=str).encode()).hexdigest()[:24]
    with FolderLock(directory):  # one writer per folder (its lock is beside it; a process may take it again)
        _start_or_resume(directory, digest, plans, overwrite)
        schema = segment_features(task_type, label_names).arrow_schema
        summary = {split: _write_split(directory, split, pieces, plans[split], schema, num_proc,
                                       (tokenizer_json, task_type, token_label_fn, label_names))
                   for split, pieces in split_pieces.items()}
        _write_datasets_layout(directory, summary, segment_features(task_type, label_names), description)
        atomic_write_json(directory / SHARD_INDEX_NAME, {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "task_type": task_type,
            "label_names": list(label_names) if label_names else None,
            "splits": {split: {"files": info["files"], "rows": info["rows"], "num_rows": info["num_rows"],
                               "bytes": info["bytes"], "sha256": info["sha256"]}
                       for split, info in summary.items()},
        })
    return summary


def _start_or_resume(directory: Path, digest: str, plans: Mapping[str, Any], overwrite: bool) -> None:
    """Keep the folder when it holds a build of the same plan (``digest``), else start it afresh (refused for a
    folder holding anything else unless ``overwrite``); the completion markers go until this build is complete."""
    plan_path = directory / BUILD_PLAN_NAME
    previous = json.loads(plan_path.read_text()).get("fingerprint") if plan_path.is_file() else None
    if previous != digest:
        content = sorted(p.name for p in directory.iterdir())
        if content and not overwrite:
            raise ValueError(f"{directory}: holds another build (other inputs or settings) or other files "
                             f"({', '.join(content[:4])}); build into an empty folder or overwrite it "
                             "(overwrite=True, --overwrite_output_dir)")
        remove_path(directory)
        (directory / BUILD_STATE_DIR).mkdir(parents=True)
        atomic_write_json(plan_path, {"fingerprint": digest, "shards": {s: len(p) for s, p in plans.items()}})
    for marker in (SHARD_INDEX_NAME, "dataset_dict.json"):  # written again when this build is complete
        (directory / marker).unlink(missing_ok=True)


def _write_split(directory: Path, split: str, pieces: Sequence[tuple[str, str, Any]], plan: Sequence[tuple[int, int]],
                 schema, num_proc: int, tokenize_args: tuple) -> dict:
    """Tokenise one split's shards that are not finished yet (workers), write each with its side file, in order;
    return the split's merged counts (:func:`_merge_sides`)."""
    count = len(plan)
    (directory / split).mkdir(exist_ok=True)
    (directory / BUILD_STATE_DIR / split).mkdir(exist_ok=True)
    kept = _complete_prefix(directory, split, count)
    _clear_stale(directory, split, {p.name for i in range(kept) for p in shard_files(directory, split, i, count)})
    if kept:
        logger.info("%s: %d of %d shards of %s already built, kept", directory, kept, count, split)
    sides = [json.loads(shard_files(directory, split, i, count)[1].read_text()) for i in range(kept)]
    next_id = sum(side["rows"] for side in sides)
    tasks = [([tuple(p) for p in pieces[a:b]], *tokenize_args) for a, b in plan[kept:]]
    for i, result in enumerate(_ordered_results(tasks, num_proc), start=kept):
        data, side_path = shard_files(directory, split, i, count)
        written = _write_shard(data, result.batch, next_id, schema)
        side = {"file": f"{split}/{data.name}", "rows": result.num_segments, **written,
                "first_segment_id": next_id, "pieces": result.num_pieces, "notes": result.num_notes,
                "skipped": [{"piece_id": p, "path": path, "reason": r} for p, path, r in result.skipped],
                **{key: getattr(result, key) for key in (*_CLASS_COUNTS, "dropped_notes", "unlabelled_notes")}}
        atomic_write_json(side_path, side)
        sides.append(side)
        next_id += result.num_segments
    return _merge_sides(sides)


def _write_datasets_layout(directory: Path, summary: Mapping[str, dict], features, description: str) -> None:
    """The files of ``Dataset.save_to_disk``'s layout around the shards (``dataset_dict.json``, and per split
    ``state.json`` naming the shards and ``dataset_info.json``), so that ``datasets.load_from_disk`` reads the
    folder as it is: no copy. Splits without rows are left out, as ``save`` leaves them out."""
    from datasets import DatasetInfo

    splits = [split for split, info in summary.items() if info["num_rows"]]
    info = DatasetInfo(description=description, features=features)
    for split in splits:
        files = [Path(f).name for f, rows in zip(summary[split]["files"], summary[split]["rows"]) if rows]
        digest = hashlib.sha256(json.dumps([split, files, summary[split]["rows"]]).encode()).hexdigest()[:16]
        atomic_write_json(directory / split / "state.json", {
            "_data_files": [{"filename": name} for name in files], "_fingerprint": digest, "_format_columns": None,
            "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": split})
        info.write_to_directory(str(directory / split))
    atomic_write_json(directory / "dataset_dict.json", {"splits": splits})


_CLASS_COUNTS = ("class_counts_pieces", "class_counts_segments", "class_counts_notes")


def _merge_sides(sides: list[dict]) -> dict:
    def add(key):
        present = [s[key] for s in sides if s.get(key) is not None]
        return np.sum(present, axis=0).astype(int).tolist() if present else None

    merged = {key: [s.get(key) for s in sides] for key in ("rows", "bytes", "sha256")}
    merged["files"] = [s["file"] for s in sides]
    merged["num_rows"] = int(sum(merged["rows"]))
    merged.update({key: int(sum(s.get(key, 0) for s in sides))
                   for key in ("pieces", "notes", "dropped_notes", "unlabelled_notes")})
    merged["skipped"] = [entry for s in sides for entry in s["skipped"]]
    return merged | {key: add(key) for key in _CLASS_COUNTS}


def read_shard_index(directory: str | os.PathLike) -> dict:
    """The ``shards.json`` of a built folder; every shard it names must lie inside the folder."""
    path = Path(directory) / SHARD_INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {SHARD_INDEX_NAME}; not a folder written by a sharded build "
                                "(or the build did not finish: run it again to resume)")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not an {FORMAT_NAME} index (format {index.get('format')!r})")
    check_shard_names(index, directory, path)
    return index


def check_shard_names(index: dict, directory: str | os.PathLike, where: str | os.PathLike) -> None:
    """Refuse a ``shards.json`` naming a shard outside its folder (absolute, ``..``, a link out): checking or
    streaming it would read another file."""
    for name, *_ in _recorded_shards(index):
        if not resolves_inside(directory, name):
            raise ValueError(f"{where}: shard {name!r} lies outside the folder {directory}; refusing to read it")


def _recorded_shards(index: dict) -> Iterator[tuple[str, int, int | None, str | None]]:
    """``(file name, rows, bytes, sha256)`` of every shard a ``shards.json`` lists (bytes and hash ``None`` where an
    older build recorded none)."""
    for info in index["splits"].values():
        count = len(info["files"])
        sizes, hashes = info.get("bytes") or [None] * count, info.get("sha256") or [None] * count
        yield from zip(info["files"], (int(rows) for rows in info["rows"]), sizes, hashes)


def verify_shards(directory: str | os.PathLike) -> None:
    """Check every shard of a built folder against ``shards.json`` (size and SHA-256; the row count where an older
    build recorded no hash); raise ``ValueError`` naming the first damaged shard and how to repair it."""
    directory = Path(directory)
    for name, rows, size, sha256 in _recorded_shards(read_shard_index(directory)):
        problem = shard_problem(directory / name, rows, size, sha256)
        if problem:
            raise ValueError(f"{problem}: the data set in {directory} is damaged; run the same build (prepare "
                             "command) again to rebuild the damaged shards")


def verify_hub_shards(repo_id: str, index: dict, revision: str | None = None, token: str | bool | None = None) -> None:
    """Check the shards of a built folder uploaded to a Hub dataset repository against its ``shards.json`` without
    downloading them: the Hub knows each file's size and, for a file stored with LFS, its SHA-256, which is what the
    build recorded. Raise ``ValueError`` naming the first shard that is missing or differs.

    Streaming reads the shards over HTTP with no hash check of its own; this catches a repository whose shards and
    index disagree (a damaged folder uploaded, or an upload cut between shards) before training reads them.
    """
    from huggingface_hub import HfApi

    recorded = {name: (size, sha256) for name, _rows, size, sha256 in _recorded_shards(index)}
    on_hub = {entry.path: entry for entry in HfApi(token=token).get_paths_info(
        repo_id, list(recorded), repo_type="dataset", revision=revision)}
    where = f"the Hub dataset {repo_id}" + (f" (revision {revision})" if revision else "")
    for name, (size, sha256) in recorded.items():
        entry = on_hub.get(name)
        if entry is None or getattr(entry, "size", None) is None:
            problem = f"shard {name} is listed in {SHARD_INDEX_NAME} but missing"
        elif size is not None and entry.size != size:
            problem = f"shard {name} has {entry.size} bytes, {size} were written (truncated or changed)"
        elif sha256 is not None and entry.lfs is not None and entry.lfs.sha256 != sha256:
            problem = f"shard {name} is not what was written (its SHA-256 differs from the recorded one)"
        else:
            continue
        raise ValueError(f"{problem} in {where}; upload the built folder again (the local build verifies itself "
                         "when opened)")


def load_sharded(directory: str | os.PathLike):
    """A built folder as a ``DatasetDict`` of memory-mapped shards (``datasets.load_from_disk``; splits without rows
    are left out)."""
    from datasets import load_from_disk

    index = read_shard_index(directory)  # a finished build
    for split, info in index["splits"].items():  # load_from_disk reads state.json: it must name the checked shards
        state_path = Path(directory) / split / "state.json"
        if not state_path.is_file():
            continue
        listed = [entry.get("filename") for entry in json.loads(state_path.read_text()).get("_data_files", [])]
        checked = [Path(name).name for name, rows in zip(info["files"], info["rows"]) if rows]
        if listed != checked:
            raise ValueError(f"{state_path}: lists the shards {listed}, but {SHARD_INDEX_NAME} checked {checked}; the "
                             "folder was changed after the build: run the same build (prepare command) again")
    return load_from_disk(str(directory))
