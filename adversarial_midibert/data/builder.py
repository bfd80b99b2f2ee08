"""Generic dataset builder: MIDI files (+ labels) -> a ``datasets.DatasetDict`` of Octuple segments, split by piece.

``files -> records (path, piece_id, label) -> split by piece -> shards written by worker processes
(:mod:`~adversarial_midibert.data.shards`) -> DatasetDict``, as :class:`BuildOptions` says. The columns are those of
ARCHITECTURE.md "Datasets": ``input_ids`` (length, 8), ``attention_mask``, ``labels`` (an int per segment, or one
per row with -100 at BOS/EOS and unlabelled notes; absent for pre-training), ``piece_id`` and ``segment_id`` (the
row index within the split, the key of the mask book). A file that cannot be read or has no notes is skipped and
listed with its reason in ``build_report.json``; :func:`save` also writes ``task_info.json`` (task, labels, hidden
attributes, tokenizer settings) and the tokenizer file, and :func:`load_task_dataset` reads it all back.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import atomic_write_json
from ..constants import (
    ATTRIBUTE_NAMES,
    BUILD_REPORT_NAME,
    MIDI_SUFFIXES,
    SHARD_INDEX_NAME,
    SPLIT_NAMES,
    TASK_INFO_NAME,
    TOKENIZER_FILE_NAME,
)
from ..output_folders import check_output_folder
from .download import download_task_dataset, load_parquet_splits
from .segments import TASK_TYPES, TokenLabelFn, segment_features
from .shards import BUILD_PLAN_NAME, load_sharded, verify_shards, write_shards

logger = logging.getLogger(__name__)

__all__ = ["BuildOptions", "PieceRecord", "SPLIT_NAMES", "MIDI_SUFFIXES", "build_dataset", "check_dataset_folder",
           "is_dataset_folder", "save", "load_task_dataset", "describe_task", "task_info_from_dataset",
           "format_summary", "list_midi_files", "scan_midi_files", "split_pieces"]

_SPLIT_ALIASES = {"train": "train", "valid": "validation", "val": "validation", "validation": "validation",
                  "dev": "validation", "test": "test"}


@dataclass
class PieceRecord:
    """One input piece: a MIDI file, its id (unique, the unit of splitting) and its label (sequence tasks)."""

    path: str
    piece_id: str
    label: int | str | None = None


# ----------------------------------------------------------------------------------------------- records
def scan_midi_files(folder: str | os.PathLike) -> tuple[list[Path], list[dict[str, str]]]:
    """All MIDI files under ``folder`` (recursive, following symlinked subfolders), sorted, and what was left out.

    Returns:
        ``(files, problems)``: ``problems`` lists ``{"path", "reason"}`` for every entry with a MIDI name or a folder
        that could not be used: unreadable folders, dangling symlinks, symlink loops, folders named like MIDI files,
        and files reached a second time through a symlink (kept once).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    files: list[Path] = []
    problems: list[dict[str, str]] = []
    seen_files: dict[str, Path] = {}

    def walk(directory: Path, ancestors: frozenset) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            problems.append({"path": str(directory), "reason": f"unreadable folder: {error.strerror or error}"})
            return
        for entry in entries:
            path = Path(entry.path)
            is_midi_name = path.suffix.lower() in MIDI_SUFFIXES
            try:
                is_dir = entry.is_dir()  # follows symlinks
                is_file = entry.is_file()
            except OSError as error:  # e.g. a symlink loop a -> b -> a
                problems.append({"path": str(path), "reason": f"unusable symlink: {error.strerror or error}"})
                continue
            if entry.is_symlink() and not (is_dir or is_file):
                if is_midi_name or not os.path.exists(path):
                    reason = "dangling symlink" if not os.path.exists(path) else "symlink to a special file"
                    problems.append({"path": str(path), "reason": f"{reason} (to {os.readlink(path)})"})
                continue
            if is_dir:
                real = os.path.realpath(path)
                if real in ancestors:
                    problems.append({"path": str(path), "reason": "symlink loop: points to an enclosing folder"})
                elif is_midi_name:
                    problems.append({"path": str(path), "reason": "a folder, not a MIDI file"})
                    walk(path, ancestors | {real})
                else:
                    walk(path, ancestors | {real})
            elif is_file and is_midi_name:
                real = os.path.realpath(path)
                if real in seen_files:
                    problems.append({"path": str(path), "reason": f"same file as {seen_files[real]} (reached "
                                                                  "again through a symlink); kept once"})
                    continue
                seen_files[real] = path
                files.append(path)

    walk(folder, frozenset({os.path.realpath(folder)}))
    return sorted(files), problems


def list_midi_files(folder: str | os.PathLike) -> list[Path]:
    """All MIDI files under ``folder`` (recursive, following symlinked subfolders), sorted; see
    :func:`scan_midi_files` for what is left out and why."""
    return scan_midi_files(folder)[0]


def read_labels_csv(path: str | os.PathLike) -> tuple[list[str], list[tuple[int, dict[str, str]]],
                                                               list[dict[str, Any]]]:
    """Read a labels CSV strictly: ``(columns, [(line, row)], problems)``.

    A row with fewer or more fields than the header stops the read with a ``ValueError`` naming its line; a repeated
    header row is left out and listed in ``problems`` (``{"line", "problem"}``, for the build report).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    rows, problems = [], []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        if not columns:
            raise ValueError(f"{path}: empty CSV (a header row is needed)")
        for row in reader:
            line = reader.line_num
            if None in row or None in row.values():
                found = len(row.get(None) or []) + sum(v is not None for k, v in row.items() if k is not None)
                raise ValueError(f"{path} line {line}: {found} field(s), {len(columns)} expected (columns: {columns})")
            if [row[c].strip() for c in columns] == [c.strip() for c in columns]:
                problems.append({"line": line, "problem": "repeated header row, left out"})
                continue
            rows.append((line, row))
    return columns, rows, problems


def unique_labels(entries: Sequence[tuple[Any, int, Any]], path: str | os.PathLike, what: str
                  ) -> tuple[dict[Any, Any], list[dict[str, Any]]]:
    """One value per key from ``(key, line, value)`` CSV entries: ``({key: value}, problems)``.

    A key given again with the same value is kept once and listed in ``problems``; with another value, a
    ``ValueError`` names both lines (which label is right cannot be guessed)."""
    values: dict[Any, Any] = {}
    first_line: dict[Any, int] = {}
    problems = []
    for key, line, value in entries:
        if key not in values:
            values[key], first_line[key] = value, line
        elif values[key] == value:
            problems.append({"line": line, "problem": f"{what} {key!r} repeats line {first_line[key]}, left out"})
        else:
            raise ValueError(f"{path} line {line}: {what} {key!r} has {value!r}, but line {first_line[key]} gives "
                             f"{values[key]!r}; give each {what} one label")
    return values, problems


def _read_label_csv(csv_path: Path, label_column: str | None, id_column: str | None
                    ) -> tuple[dict[str, tuple[int, str]], list[dict[str, Any]]]:
    """``{id: (line, label)}`` of a labels CSV, and its problems (see :func:`read_labels_csv`)."""
    columns, rows, problems = read_labels_csv(csv_path)
    if label_column is None or label_column not in columns:
        raise ValueError(f"{csv_path}: label_column {label_column!r} not among the columns {columns}")
    id_column = id_column or columns[0]
    if id_column not in columns:
        raise ValueError(f"{csv_path}: id_column {id_column!r} not among the columns {columns}")
    values, duplicates = unique_labels([(row[id_column], line, row[label_column]) for line, row in rows], csv_path,
                                       "file")
    lines = {}
    for line, row in rows:
        lines.setdefault(row[id_column], line)
    return {key: (lines[key], value) for key, value in values.items()}, problems + duplicates


def _make_records(
    source: str | os.PathLike | Sequence[Any],
    labels: Any,
    label_column: str | None,
    id_column: str | None,
) -> tuple[list[PieceRecord], list[dict[str, str]], list[dict[str, Any]]]:
    """Turn the ``source``/``labels`` arguments of :func:`build_dataset` into records, the folder entries that
    were left out (see :func:`scan_midi_files`) and the problems of a labels CSV (:func:`read_labels_csv`)."""
    problems: list[dict[str, str]] = []
    csv_problems: list[dict[str, Any]] = []
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        files, problems = scan_midi_files(root)
        if not files:
            listed = "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5])
            raise ValueError(f"{root}: no MIDI files ({', '.join(MIDI_SUFFIXES)}) found" + (f" ({listed})" if listed
                                                                                            else ""))
        records = [PieceRecord(str(p), p.relative_to(root).with_suffix("").as_posix()) for p in files]
    else:
        items = list(source)
        if items and all(isinstance(x, (PieceRecord, Mapping)) for x in items):
            records = [x if isinstance(x, PieceRecord) else PieceRecord(**x) for x in items]
        else:
            paths = [Path(x) for x in items]
            if not paths:
                raise ValueError("source: empty list of files")
            root = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
            records = [PieceRecord(str(p), p.resolve().relative_to(root).with_suffix("").as_posix()) for p in paths]
    if isinstance(labels, str) and labels == "folder":
        for r in records:
            r.label = Path(r.path).parent.name
    elif isinstance(labels, (str, os.PathLike)):
        table, csv_problems = _read_label_csv(Path(labels), label_column, id_column)
        for r in records:
            found = {key: table[key] for key in dict.fromkeys((r.piece_id, Path(r.path).name, Path(r.path).stem))
                     if key in table}
            if len({label for _, label in found.values()}) > 1:
                given = ", ".join(f"line {line} ({key!r}): {label!r}" for key, (line, label) in found.items())
                raise ValueError(f"{labels}: {r.path} is labelled differently by several rows ({given}); give each "
                                 "file one label")
            if found:
                r.label = next(iter(found.values()))[1]
    elif isinstance(labels, Mapping):
        for r in records:
            r.label = labels.get(r.piece_id, labels.get(r.path))
    elif callable(labels):
        for r in records:
            r.label = labels(r.path)
    elif labels is not None:
        raise TypeError("labels must be None, 'folder', a CSV path, a mapping or a callable, got "
                        f"{type(labels).__name__}")
    ids = [r.piece_id for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"source: piece ids must be unique, duplicated: {dup}")
    return records, problems, csv_problems


def split_pieces(
    piece_ids: Sequence[str],
    splits: Mapping[str, Any] | Sequence[float] | None,
    labels: Sequence[Any] | None = None,
    seed: int = 0,
) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Assign pieces to splits.

    Args:
        piece_ids: all piece ids.
        splits: a mapping split name (``train``, ``valid``/``val``/``validation``, ``test``) -> piece ids, or ratios
            (a mapping split -> fraction, or ``(train, validation, test)``); ``None`` means ``(0.8, 0.1, 0.1)``.
        labels: one label per piece; with ratios the split is stratified by label (every class keeps a piece in
            train).
        seed: seed of the shuffle for ratio splits.

    Returns:
        ``(assignment, not_in_split, missing)``: split -> piece ids (sorted), the pieces left in no split, and the
        piece ids named by a split mapping that are not among ``piece_ids``.
    """
    known = set(piece_ids)
    if splits is None:
        splits = (0.8, 0.1, 0.1)
    if isinstance(splits, Mapping) and splits and all(not isinstance(v, (int, float)) for v in splits.values()):
        assignment = {name: [] for name in SPLIT_NAMES}
        seen: dict[str, str] = {}
        missing: list[str] = []
        for name, members in splits.items():
            key = _SPLIT_ALIASES.get(str(name).lower())
            if key is None:
                raise ValueError(f"splits: unknown split name {name!r} (expected one of {sorted(_SPLIT_ALIASES)})")
            for pid in members:
                pid = str(pid)
                if pid in seen and seen[pid] != key:
                    raise ValueError(f"splits: piece {pid!r} is in both {seen[pid]} and {key}")
                seen[pid] = key
                if pid in known:
                    assignment[key].append(pid)
                else:
                    missing.append(pid)
        not_in = sorted(known - set(seen))
        return {k: sorted(set(v)) for k, v in assignment.items()}, not_in, sorted(missing)
    if isinstance(splits, Mapping):
        ratios = [float(splits.get(name, splits.get({"validation": "valid"}.get(name, name), 0.0)))
                  for name in SPLIT_NAMES]
    else:
        ratios = [float(x) for x in splits]
        if len(ratios) != 3:
            raise ValueError(f"splits: expected 3 ratios (train, validation, test), got {ratios}")
    if any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"splits: ratios must be >= 0 with a positive sum, got {ratios}")
    total = sum(ratios)
    ratios = [r / total for r in ratios]
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[str]] = {}
    for i, pid in enumerate(piece_ids):
        groups.setdefault(None if labels is None else labels[i], []).append(pid)
    assignment = {name: [] for name in SPLIT_NAMES}
    for key in sorted(groups, key=str):
        members = sorted(groups[key])
        order = [members[i] for i in rng.permutation(len(members))]
        n = len(order)
        n_val = int(round(ratios[1] * n))
        n_test = int(round(ratios[2] * n))
        if ratios[0] > 0:  # keep at least one piece of every class in train
            while n_val + n_test > n - 1 and (n_val or n_test):
                if n_test >= n_val and n_test:
                    n_test -= 1
                else:
                    n_val -= 1
        assignment["validation"] += order[:n_val]
        assignment["test"] += order[n_val:n_val + n_test]
        assignment["train"] += order[n_val + n_test:]
    return {k: sorted(v) for k, v in assignment.items()}, [], []


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


# ------------------------------------------------------------------------------------------------ build
@dataclass
class BuildOptions:
    """How :func:`build_dataset` labels, splits, tokenises and writes the pieces (checked when made).

    Attributes:
        labels: piece labels for sequence tasks: ``None`` (records carry them, or no labels), ``"folder"`` (the
            parent folder name), a CSV path (``label_column``; ``id_column``, default the first, matched against
            the piece id, the file name or its stem), a mapping piece id -> label, or a callable path -> label.
        task_type: ``"sequence"`` (one label per segment, the piece's), ``"token"`` (one label per note, from
            ``token_label_fn``) or ``"pretrain"`` (no labels).
        token_label_fn: token tasks: a picklable ``(score, track_index, note_index) -> labels (N,)``; -100 marks a
            note without a label.
        splits: a mapping split name -> piece ids, or ratios (see :func:`split_pieces`); always by piece.
        seed: seed of ratio splits and of the ``max_files`` choice.
        tokenizer: an :class:`~adversarial_midibert.tokenization_octuple.OctupleTokenizer` (default one if None).
        num_proc: tokenising processes (each tokenises whole shards).
        max_files: tokenise at most this many pieces, spread over the splits in proportion (quick tests).
        cache_dir: without ``output_dir``: build into ``cache_dir/build-<fingerprint of the inputs>``.
        label_column: CSV labels: the column holding the label.
        id_column: CSV labels: the column holding the piece id / file name.
        label_names: class names in label-index order; default: the sorted distinct labels (integers kept).
        hidden_attributes: attribute names (e.g. ``["velocity"]``) the fine-tuned model must never see (recorded in
            ``task_info``; the model's ``config.hidden_attributes``).
        task: task name recorded in ``task_info``.
        extra_info: more entries for ``task_info`` (e.g. the split source, velocity bin edges).
        output_dir: write the dataset into this folder as it is built (resumable); see :func:`build_dataset`.
        shard_size: pieces per shard.
        num_shards: exact number of shards of the train split instead (e.g. a multiple of the training processes).
        overwrite: with ``output_dir``: replace a folder holding a build of other inputs (refused otherwise).
        report_extra: more entries for the build report; its ``skipped`` entries come before the build's own.
    """

    labels: Any = None
    task_type: str = "sequence"
    token_label_fn: TokenLabelFn | None = None
    splits: Mapping[str, Any] | Sequence[float] | None = None
    seed: int = 0
    tokenizer: Any = None
    num_proc: int = 1
    max_files: int | None = None
    cache_dir: str | os.PathLike | None = None
    label_column: str | None = None
    id_column: str | None = None
    label_names: Sequence[str] | None = None
    hidden_attributes: Sequence[str] = ()
    task: str | None = None
    extra_info: Mapping[str, Any] | None = None
    output_dir: str | os.PathLike | None = None
    shard_size: int = 256
    num_shards: int | None = None
    overwrite: bool = False
    report_extra: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {self.task_type!r}")
        if self.task_type == "token" and self.token_label_fn is None:
            raise ValueError("task_type='token' needs a token_label_fn")
        unknown = [a for a in self.hidden_attributes if a not in ATTRIBUTE_NAMES]
        if unknown:
            raise ValueError(f"hidden_attributes: unknown attribute(s) {unknown}; expected names in {ATTRIBUTE_NAMES}")
        if self.max_files is not None and int(self.max_files) < 1:
            raise ValueError(f"max_files must be >= 1 (or None for all files), got {self.max_files}")


def build_dataset(source: str | os.PathLike | Sequence[Any], options: BuildOptions | None = None, **fields):
    """Build a ``DatasetDict`` (``train``, ``validation``, ``test``) of Octuple segments from MIDI files.

    The segments are written as they are made, in shards (:mod:`~adversarial_midibert.data.shards`): into
    ``output_dir``, which is then the saved dataset (a killed build resumes there), else into ``cache_dir`` (reused
    by a second build of the same inputs) or a temporary folder.

    Args:
        source: a folder (all MIDI files under it, piece id = path relative to it without suffix), a list of
            MIDI paths, or a list of :class:`PieceRecord` / dicts ``{path, piece_id, label}``.
        options: a :class:`BuildOptions`.
        **fields: :class:`BuildOptions` fields given directly, over ``options``.

    Returns:
        a ``datasets.DatasetDict`` of all three splits (memory-mapped from the shards) with attributes
        ``build_report``, ``task_info`` and ``tokenizer``, used by :func:`save`.
    """
    from datasets import Dataset, DatasetDict

    options = dataclasses.replace(options, **fields) if options is not None else BuildOptions(**fields)
    tokenizer = options.tokenizer
    if tokenizer is None:
        from ..tokenization_octuple import OctupleTokenizer

        tokenizer = OctupleTokenizer()
    records, scan_problems, csv_problems = _make_records(source, options.labels, options.label_column,
                                                         options.id_column)
    records, label_names, unlabelled = _label_records(records, options.task_type, options.label_names)
    by_id = {r.piece_id: r for r in records}
    assignment, not_in_split, missing = split_pieces(
        [r.piece_id for r in records], options.splits,
        [r.label for r in records] if options.task_type == "sequence" else None, options.seed,
    )
    if options.max_files is not None:
        assignment = _limit(assignment, int(options.max_files), options.seed)
    report = _start_report(options, scan_problems, csv_problems, unlabelled, not_in_split, missing)
    split_pieces_ = {split: [(by_id[p].path, p, by_id[p].label if by_id[p].label is not None else -1)
                             for p in assignment[split]] for split in SPLIT_NAMES}
    # Key order matters: miditok builds the time-signature vocabulary in the order of ``time_signature_range``'s
    # keys, so sorting them would give the workers another TimeSig id mapping than the tokenizer saved with the data.
    tokenizer_json = json.dumps(tokenizer.to_dict())
    if options.output_dir is not None:
        directory = check_dataset_folder(options.output_dir, options.overwrite)
    elif options.cache_dir is not None:
        key = _fingerprint(split_pieces_, tokenizer_json, options.task_type, list(options.hidden_attributes),
                           getattr(options.token_label_fn, "__qualname__", None), options.shard_size,
                           options.num_shards)
        directory = Path(options.cache_dir) / f"build-{key}"
    else:
        directory = _temporary_folder()
    task_info = {
        "task": options.task,
        "task_type": options.task_type,
        "label_names": label_names,
        "num_labels": len(label_names) if label_names else None,
        "hidden_attributes": list(options.hidden_attributes),
        "attribute_names": list(ATTRIBUTE_NAMES),
        "tokenizer_file": TOKENIZER_FILE_NAME,
        "tokenizer": {"max_seq_len": tokenizer.max_seq_len, "vocab_sizes": list(tokenizer.vocab_sizes)},
        "split_seed": options.seed,
        **(options.extra_info or {}),
    }
    summary = write_shards(
        directory, split_pieces_, tokenizer_json, options.task_type, {"version": 1},
        token_label_fn=options.token_label_fn, label_names=label_names,
        num_proc=max(1, int(options.num_proc or 1)), shard_size=options.shard_size, num_shards=options.num_shards,
        overwrite=options.overwrite,
        description=describe_task(task_info),  # the task travels in the data set's own info (dataset_info.json)
    )
    for split, info in summary.items():
        report["skipped"] += [{"split": split, **entry} for entry in info["skipped"]]
        report["splits"][split] = _split_counts(info, options.task_type, label_names)
    if report["skipped"]:
        logger.warning("%d file(s) or folder(s) skipped: %s", len(report["skipped"]),
                       "; ".join(f"{s['path']}: {s['reason']}" for s in report["skipped"][:5]))
    _write_metadata(directory, report, task_info, tokenizer)
    out = load_sharded(directory)
    empty = segment_features(options.task_type, label_names)
    for split in SPLIT_NAMES:
        if split not in out:
            out[split] = Dataset.from_dict({k: [] for k in empty}, features=empty)
            out[split].info.description = describe_task(task_info)
    out = DatasetDict({split: out[split] for split in SPLIT_NAMES})
    out.build_report = report
    out.task_info = task_info
    out.tokenizer = tokenizer
    return out


def _label_records(records: list[PieceRecord], task_type: str, label_names: Sequence[str] | None
                   ) -> tuple[list[PieceRecord], list[str] | None, list[str]]:
    """Sequence tasks: each record's label as a class index (records without a known label are left out and listed);
    other tasks: no labels. Returns the records, the class names and the unlabelled piece ids."""
    label_index: dict[Any, int] = {}
    unlabelled: list[str] = []
    if task_type == "sequence":
        present = [r.label for r in records if r.label is not None]
        if label_names is None:
            if present and all(isinstance(x, (int, np.integer)) for x in present):
                label_names = [str(i) for i in range(int(max(present)) + 1)]
                label_index = {i: i for i in range(len(label_names))}
            else:
                label_names = sorted({str(x) for x in present})
        if not label_index:
            label_index = {name: i for i, name in enumerate(label_names)}
            label_index.update({i: i for i in range(len(label_names))})
        kept = []
        for r in records:
            key = r.label if isinstance(r.label, (int, np.integer)) else (None if r.label is None else str(r.label))
            if key is None or key not in label_index:
                unlabelled.append(r.piece_id)
                continue
            r.label = int(label_index[key])
            kept.append(r)
        if not kept:
            raise ValueError("no piece has a usable label (check labels / label_column / label_names)")
        records = kept
    else:
        for r in records:
            r.label = None
    label_names = list(label_names) if label_names is not None else None
    if label_names is not None and len(set(map(str, label_names))) != len(label_names):
        duplicated = sorted({str(n) for n in label_names if list(map(str, label_names)).count(str(n)) > 1})
        raise ValueError("label_names must be distinct (they become the data set's ClassLabel), duplicated: "
                         f"{duplicated}")
    return records, label_names, unlabelled


def _start_report(options: BuildOptions, scan_problems, csv_problems, unlabelled, not_in_split, missing) -> dict:
    """The build report before the shards are written: what the scan, the labels and the split left out."""
    report: dict[str, Any] = {"task": options.task, "task_type": options.task_type,
                              "skipped": [{"split": None, "piece_id": None, **p} for p in scan_problems], "splits": {},
                              "unlabelled_pieces": unlabelled, "pieces_in_no_split": not_in_split,
                              "split_pieces_without_file": missing}
    if csv_problems:
        report["labels_csv_problems"] = csv_problems
    if options.max_files is not None:
        report["max_files"] = int(options.max_files)
    for key, value in (options.report_extra or {}).items():
        if key == "skipped":  # entries skipped before the build (e.g. by a folder scan) come first
            report["skipped"][:0] = list(value)
        else:
            report[key] = value
    return report


def _temporary_folder() -> Path:
    """A folder removed when the interpreter exits (the returned dataset is memory-mapped from it until then)."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="adversarial_midibert_build_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _limit(assignment: dict[str, list[str]], max_files: int, seed: int) -> dict[str, list[str]]:
    total = sum(len(v) for v in assignment.values())
    if max_files >= total:
        return assignment
    rng = np.random.default_rng(seed)
    limited = {}
    for name, members in assignment.items():
        n = min(len(members), max(1 if members else 0, int(math.floor(max_files * len(members) / total))))
        limited[name] = sorted(members[i] for i in rng.permutation(len(members))[:n])
    return limited


def _split_counts(info: Mapping[str, Any], task_type: str, label_names: Sequence[str] | None) -> dict[str, Any]:
    """A split's entry of the build report from the merged shard summaries of :func:`write_shards`."""
    counts: dict[str, Any] = {
        "pieces": info["pieces"],
        "segments": info["num_rows"],
        "notes": info["notes"],
        "dropped_notes": info["dropped_notes"],
        "skipped_files": len(info["skipped"]),
    }
    if task_type == "sequence" and info["num_rows"]:
        counts["class_counts_pieces"] = dict(zip(label_names, info["class_counts_pieces"]))
        counts["class_counts_segments"] = dict(zip(label_names, info["class_counts_segments"]))
    elif task_type == "token" and info["num_rows"]:
        counts["class_counts_notes"] = dict(zip(label_names, info["class_counts_notes"]))
        counts["unlabelled_notes"] = info["unlabelled_notes"]
    return counts


# ------------------------------------------------------------------------------------------ save / load
def check_dataset_folder(output_dir: str | os.PathLike, overwrite: bool = False,
                         inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Fail before a long build when :func:`save` would refuse ``output_dir``
    (:func:`~adversarial_midibert.output_folders.check_output_folder`); return it as an absolute path."""
    return check_output_folder(output_dir, "dataset", _is_dataset, inputs=inputs, overwrite=overwrite)


def is_dataset_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a dataset written by :func:`save`."""
    folder = Path(folder)
    return folder.is_dir() and _is_dataset(folder, {p.name for p in folder.iterdir()})


def _is_dataset(folder: Path, names: set[str]) -> bool:
    """Written by :func:`save` or :func:`build_dataset` (a killed build written as it goes resumes into it)."""
    return (TASK_INFO_NAME in names and ("dataset_dict.json" in names or SHARD_INDEX_NAME in names)
            or (folder / BUILD_PLAN_NAME).is_file())


def save(dataset, output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a built dataset into ``output_dir`` and return it: ``save_to_disk``, ``build_report.json``,
    ``task_info.json``, ``octuple_tokenizer.json``.

    The folder is written aside and swapped in when complete, under a lock
    (:class:`~adversarial_midibert.atomic_io.FolderBusyError` for a second writer). An existing dataset folder is
    replaced; a folder holding anything else only with ``overwrite=True``. ``dataset``: the result of
    :func:`build_dataset` or a recipe.
    """
    for attr in ("build_report", "task_info", "tokenizer"):
        if not hasattr(dataset, attr):
            raise ValueError(f"dataset has no '{attr}' attribute: save() expects the result of build_dataset()")
    from datasets import DatasetDict

    from ..atomic_io import FolderLock, write_folder_aside

    output_dir = Path(output_dir)
    with FolderLock(output_dir):
        check_dataset_folder(output_dir, overwrite)
        with write_folder_aside(output_dir) as tmp:
            # An empty split (the pre-training sets have no test split) cannot be read back by load_from_disk: leave
            # it out; the build report still lists it with zero pieces.
            DatasetDict({name: split for name, split in dataset.items() if len(split)}).save_to_disk(str(tmp))
            (tmp / BUILD_REPORT_NAME).write_text(json.dumps(dataset.build_report, indent=1) + "\n")
            (tmp / TASK_INFO_NAME).write_text(json.dumps(dataset.task_info, indent=1) + "\n")
            dataset.tokenizer.save_pretrained(tmp, include_code=False)
    return output_dir


_TASK_INFO_MARKER = "adversarial_midibert task_info: "


def describe_task(task_info: Mapping[str, Any]) -> str:
    """The ``DatasetInfo.description`` of a built split: a sentence for people, then the task info as JSON, so that
    ``load_from_disk`` alone gives the task (:func:`task_info_from_dataset`)."""
    kind = {"sequence": "one label per segment (its piece's)", "token": "one label per note",
            "pretrain": "no labels (pre-training)"}.get(task_info.get("task_type"), str(task_info.get("task_type")))
    text = (f"Octuple segments of MIDI files for the task {task_info.get('task')!r}, {kind}; built with "
            "adversarial-midibert (one row of 8 ids per note: bar, position, program, pitch, duration, velocity, "
            "time signature, tempo).")
    if task_info.get("label_names"):
        text += f" Classes: {', '.join(map(str, task_info['label_names']))}."
    if task_info.get("hidden_attributes"):
        text += f" Hidden from the model (its config's hidden_attributes): {', '.join(task_info['hidden_attributes'])}."
    return text + "\n" + _TASK_INFO_MARKER + json.dumps(dict(task_info), sort_keys=True)


def task_info_from_dataset(dataset) -> dict[str, Any]:
    """The task info of a built ``Dataset`` / ``DatasetDict`` read back without ``task_info.json``.

    From the info's description written by :func:`build_dataset`; else (a data set from elsewhere) from its features:
    ``ClassLabel`` labels give a sequence task and its class names, ``List(ClassLabel)`` a token task, no ``labels``
    column a pre-training set.
    """
    from datasets import ClassLabel

    split = next(iter(dataset.values())) if hasattr(dataset, "values") else dataset
    for line in (split.info.description or "").splitlines():
        if line.startswith(_TASK_INFO_MARKER):
            return json.loads(line[len(_TASK_INFO_MARKER):])
    labels = split.features.get("labels")
    inner = getattr(labels, "feature", None)
    if labels is None:
        task_type, names = "pretrain", None
    elif isinstance(labels, ClassLabel):
        task_type, names = "sequence", list(labels.names)
    elif isinstance(inner, ClassLabel):
        task_type, names = "token", list(inner.names)
    else:
        task_type, names = ("token" if inner is not None else "sequence"), None
    return {"task": split.info.dataset_name or None, "task_type": task_type, "label_names": names,
            "num_labels": len(names) if names else None, "hidden_attributes": [],
            "attribute_names": list(ATTRIBUTE_NAMES), "tokenizer_file": TOKENIZER_FILE_NAME}


def _write_metadata(output_dir: Path, build_report: dict, task_info: dict, tokenizer) -> None:
    """``build_report.json``, ``task_info.json`` and the tokenizer file of a dataset folder, each written atomically."""
    atomic_write_json(output_dir / BUILD_REPORT_NAME, build_report)
    atomic_write_json(output_dir / TASK_INFO_NAME, task_info)
    tokenizer.save_pretrained(output_dir, include_code=False)


def load_task_dataset(directory: str | os.PathLike, revision: str | None = None, token: str | None = None,
                      verify: bool = True):
    """Load a data set written by :func:`save` or as it was built (``build_dataset(output_dir=...)``), from a folder,
    or one published by ``push_dataset_to_hub``, from a Hub id (cached by ``snapshot_download``, offline once cached).

    Args:
        directory: the folder, or a Hub data set id.
        revision: Hub revision (branch, tag or commit) of a Hub id.
        token: Hub token for a private data set.
        verify: check every shard of a sharded folder against its ``shards.json`` (size and SHA-256) first.

    Returns:
        ``(DatasetDict, task_info, tokenizer)``; the DatasetDict also carries ``build_report``, ``task_info`` and
        ``tokenizer`` attributes.

    Raises:
        FileNotFoundError: neither a data set folder nor a Hub data set (the message says which was tried).
    """
    from datasets import load_from_disk

    from ..tokenization_octuple import OctupleTokenizer

    directory = Path(directory)
    if not directory.exists():
        directory = download_task_dataset(str(directory), revision=revision, token=token)
    if (directory / "dataset_dict.json").is_file():  # save(), or written as it was built (build_dataset(output_dir))
        if (directory / SHARD_INDEX_NAME).is_file():
            if verify:
                verify_shards(directory)  # a truncated or changed shard is named, never read as fewer rows
            dataset = load_sharded(directory)  # the shards of shards.json, and no other
        else:
            dataset = load_from_disk(str(directory))
    else:
        dataset = load_parquet_splits(directory)
    info_path = directory / TASK_INFO_NAME
    task_info = json.loads(info_path.read_text()) if info_path.is_file() else task_info_from_dataset(dataset)
    if not (directory / TOKENIZER_FILE_NAME).is_file():
        raise FileNotFoundError(f"{directory}: no {TOKENIZER_FILE_NAME}; not a data set written by "
                                "adversarial_midibert")
    tokenizer = OctupleTokenizer.from_pretrained(directory)
    report_path = directory / BUILD_REPORT_NAME
    dataset.build_report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    dataset.task_info = task_info
    dataset.tokenizer = tokenizer
    return dataset, task_info, tokenizer


# --------------------------------------------------------------------------------------------- summary
def format_summary(dataset_or_report: Any, max_skipped: int = 10) -> str:
    """A short text summary of a built / loaded ``DatasetDict`` or its ``build_report``: pieces, segments, notes and
    class counts per split, and the skipped files (``max_skipped`` of them by name)."""
    report = getattr(dataset_or_report, "build_report", dataset_or_report)
    lines = [f"task {report.get('task')} ({report.get('task_type')})"]
    for split, c in report.get("splits", {}).items():
        line = f"  {split:<10} pieces {c['pieces']:>5}  segments {c['segments']:>6}  notes {c['notes']:>9}"
        if c.get("dropped_notes"):
            line += f"  notes left out {c['dropped_notes']}"
        lines.append(line)
        for key in ("class_counts_pieces", "class_counts_notes"):
            if key in c:
                what = "pieces" if key.endswith("pieces") else "notes"
                lines.append(f"             {what} per class: " + ", ".join(f"{k} {v}" for k, v in c[key].items()))
        if c.get("unlabelled_notes"):
            lines.append(f"             unlabelled notes (label -100): {c['unlabelled_notes']}")
    skipped = report.get("skipped", [])
    lines.append(f"  skipped files: {len(skipped)}")
    for s in skipped[:max_skipped]:
        lines.append(f"    {s['path']}: {s['reason']}")
    if len(skipped) > max_skipped:
        lines.append(f"    ... {len(skipped) - max_skipped} more in {BUILD_REPORT_NAME}")
    for key, what in (("unlabelled_pieces", "pieces without a label"), ("pieces_in_no_split", "pieces in no split"),
                      ("split_pieces_without_file", "split entries without a file")):
        if report.get(key):
            lines.append(f"  {what}: {len(report[key])} (e.g. {', '.join(report[key][:3])})")
    return "\n".join(lines)
