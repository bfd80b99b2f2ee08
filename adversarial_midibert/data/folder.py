"""A user's own data set: a folder of MIDI files and a CSV of labels, split by piece, without writing Python.

What ``adv-midibert prepare --midi_dir DIR --labels FILE.csv`` builds (docs/data.md has the details):

- **sequence tasks**: one CSV row per file, named by ``--id_column`` (its path under ``DIR``, file name or stem)
  with its class in ``--label_column``; ``--split_column`` or ``--splits split.json`` fix the split, otherwise
  80 / 10 / 10 per class;
- **token tasks**: one CSV row per track name (``--track_column``, any case, or a track index) and its class; notes
  of other tracks get no label (-100). A row labels that track in every file, so a column naming files is refused.

Every file under ``DIR`` is a piece (its id: its path without the suffix). Unlabelled files, rows naming no file,
unreadable files and the CSV's repeated rows are listed in ``build_report.json``, never dropped silently; a row
with a missing field, or rows giving one file (or track) two labels, stop the build with an error naming the lines.
Class names are sorted (numerically when all are numbers) unless ``label_names`` gives their order.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .builder import PieceRecord, read_labels_csv, scan_midi_files, unique_labels
from .recipes import RecipeSpec
from .segments import IGNORE_INDEX

__all__ = ["TrackLabels", "build_folder_dataset", "resolve_folder"]


class TrackLabels:
    """Token labels from track names: ``labels(score, track_index, note_index)`` gives each note its track's class.

    Picklable (it is sent to the tokenising processes).

    Args:
        by_track: track name (any case) or index (as a string of digits) -> class id.
    """

    def __init__(self, by_track: dict[str, int]):
        self.by_track = {key.strip().lower(): int(value) for key, value in by_track.items()}

    def __call__(self, score: Any, track_index: np.ndarray, note_index: np.ndarray) -> np.ndarray:
        per_track = [self.by_track.get(t.name.strip().lower(), self.by_track.get(str(i), IGNORE_INDEX))
                     for i, t in enumerate(score.tracks)]
        return np.asarray(per_track or [IGNORE_INDEX], dtype=np.int64)[np.asarray(track_index, dtype=np.int64)]


def _column(path: Path, columns: list[str], name: str | None, what: str, default: str | None) -> str:
    name = name or default
    if name not in columns:
        raise ValueError(f"{path}: {what} {name!r} is not a column (columns: {columns})")
    return name


def _class_names(values: Sequence[str], given: Sequence[str] | None, where: str) -> list[str]:
    present = sorted(set(values), key=lambda v: (0, float(v), "") if re.fullmatch(r"-?\d+(\.\d+)?", v) else (1, 0, v))
    if given is None:
        return present
    unknown = sorted(set(present) - set(given))
    if unknown:
        raise ValueError(f"{where}: label(s) {unknown} are not among label_names {list(given)}")
    return list(given)


def _piece_records(files: Sequence[Path], root: Path) -> list[PieceRecord]:
    """A record per file; its piece id is its path under ``root`` without the suffix, or with it where two files
    differ only by their suffix (``x.mid`` beside ``x.MID`` or ``x.midi``: two pieces, ids ``x.mid``, ``x.MID``)."""
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in files]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    return [PieceRecord(str(p), p.relative_to(root).as_posix() if stem in shared else stem)
            for p, stem in zip(files, stems)]


def _piece_index(records: list[PieceRecord], root: Path) -> tuple[dict[str, str], set[str]]:
    """Every name a CSV may use for a piece -> its piece id; names shared by several pieces are ambiguous."""
    index: dict[str, str] = {}
    ambiguous: set[str] = set()
    for r in records:
        relative = Path(r.path).relative_to(root).as_posix()
        for key in {r.piece_id, relative, Path(r.path).name, Path(r.path).stem}:
            if key in index and index[key] != r.piece_id:
                ambiguous.add(key)
            index.setdefault(key, r.piece_id)
    for key in ambiguous:
        index.pop(key, None)
    return index, ambiguous


def _lookup(index: dict[str, str], ambiguous: set[str], key: str, where: str) -> str | None:
    key = key.strip()
    if key in ambiguous:
        raise ValueError(f"{where}: {key!r} names several files; use the path relative to the MIDI folder")
    return index.get(key)


def _refuse_file_column(labels: Path, lines, columns: Sequence[str], index: dict[str, str], ambiguous: set[str],
                        root: Path) -> None:
    """A token task's row labels a track name in every file: a column naming files would be ignored, and the
    other files' tracks labelled too (nothing per file); refused, naming the column and a file it names."""
    for column in columns:
        named = next((row[column].strip() for _, row in lines
                      if row[column].strip() in index or row[column].strip() in ambiguous), None)
        if named is not None:
            raise ValueError(f"{labels}: column {column!r} names files of {root} ({named!r}), but a token task's "
                             "row labels the tracks of that name in every file: one file's tracks cannot be labelled "
                             "alone; give one row per track name (track,label), or a folder per labelling")


def resolve_folder(
    midi_dir: str | os.PathLike,
    labels: str | os.PathLike,
    task_type: str = "sequence",
    label_column: str | None = None,
    id_column: str | None = None,
    split_column: str | None = None,
    splits: str | os.PathLike | None = None,
    track_column: str | None = None,
    label_names: Sequence[str] | None = None,
    task: str | None = None,
) -> RecipeSpec:
    """Files, labels and split of a user's folder, without tokenising (see the module docstring).

    Args:
        midi_dir: the folder of MIDI files (searched recursively).
        labels: the CSV file of labels.
        task_type: ``"sequence"`` or ``"token"``.
        label_column: the CSV column of the class (default ``label``).
        id_column: sequence tasks: the CSV column naming the file (default: the first column).
        split_column: sequence tasks: the CSV column naming each file's split.
        splits: a JSON file ``{split: [file ids]}`` (ids as in the CSV).
        track_column: token tasks: the CSV column naming the track (default ``track``).
        label_names: the class names in index order (default: sorted).
        task: the task's name (default: the folder's name).

    Raises:
        ValueError: a missing column, an ambiguous file name, ``split_column`` with ``splits``, or a label outside
            ``label_names``. FileNotFoundError: a missing folder, CSV or split file.
    """
    if task_type not in ("sequence", "token"):
        raise ValueError(f"task_type must be 'sequence' or 'token', got {task_type!r}")
    if split_column and splits:
        raise ValueError("give either split_column or splits, not both")
    root, labels = Path(midi_dir), Path(labels)
    files, problems = scan_midi_files(root)
    if not files:
        listed = "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5])
        raise ValueError(f"{root}: no MIDI files found" + (f" ({listed})" if listed else ""))
    records = _piece_records(files, root)
    index, ambiguous = _piece_index(records, root)
    columns, lines, csv_problems = read_labels_csv(labels)
    label_column = _column(labels, columns, label_column, "label_column", "label")
    extra: dict[str, Any] = {"midi_dir": str(root), "labels_file": str(labels), "folder_problems": problems,
                             "labels_csv_problems": csv_problems}

    token_label_fn = None
    split_map: Any = (0.8, 0.1, 0.1)
    if task_type == "sequence":
        id_column = _column(labels, columns, id_column, "id_column", columns[0])
        if split_column:
            split_column = _column(labels, columns, split_column, "split_column", None)
        names = _class_names([row[label_column].strip() for _, row in lines if row[label_column].strip()],
                             label_names, str(labels))
        by_id = {r.piece_id: r for r in records}
        unmatched, entries = [], []
        for line, row in lines:
            piece = _lookup(index, ambiguous, row[id_column], f"{labels} line {line}")
            if piece is None:
                unmatched.append(row[id_column])
                continue
            split = (row[split_column].strip().lower() or "train") if split_column else None
            entries.append((piece, line, (row[label_column].strip(), split)))
        given, repeated = unique_labels(entries, labels, "file")  # rows naming one file by different names too
        csv_problems += repeated
        assignment: dict[str, list[str]] = {}
        for piece, (value, split) in given.items():
            by_id[piece].label = value or None
            if split_column:
                assignment.setdefault(split, []).append(piece)
        if split_column:
            split_map = assignment
        extra["labels_without_file"] = unmatched
    else:
        if split_column:
            raise ValueError("split_column needs a per-file CSV (sequence task); for a token task give --splits")
        track_column = _column(labels, columns, track_column, "track_column", "track")
        _refuse_file_column(labels, lines, [c for c in columns if c not in (track_column, label_column)], index,
                            ambiguous, root)
        entries = []
        for line, row in lines:
            if not row[label_column].strip():  # no class named "": the track's notes stay unlabelled (counted)
                csv_problems.append({"line": line, "problem": f"track {row[track_column]!r} has an empty label, "
                                                              "its notes are left unlabelled"})
                continue
            entries.append((row[track_column].strip().lower(), line, row[label_column].strip()))
        by_track, repeated = unique_labels(entries, labels, "track")
        csv_problems += repeated
        if not by_track:
            raise ValueError(f"{labels}: no row gives a track a label (column {label_column!r})")
        names = _class_names(list(by_track.values()), label_names, str(labels))
        token_label_fn = TrackLabels({track: names.index(value) for track, value in by_track.items()})
        extra["track_labels"] = by_track
    if splits:
        split_file = Path(splits)
        if not split_file.is_file():
            raise FileNotFoundError(f"{split_file}: split file not found")
        data = json.loads(split_file.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{split_file}: expected {{split: [file ids]}}, found {type(data).__name__}")
        split_map = {name: [_lookup(index, ambiguous, str(i), str(split_file)) or str(i) for i in ids]
                     for name, ids in data.items()}
    return RecipeSpec(task or root.resolve().name, task_type, records, split_map, names,
                      token_label_fn=token_label_fn, extra_info=extra)


def build_folder_dataset(
    midi_dir: str | os.PathLike,
    labels: str | os.PathLike,
    task_type: str = "sequence",
    tokenizer: Any = None,
    max_seq_len: int = 1024,
    num_proc: int = 1,
    max_files: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    shard_size: int = 256,
    num_shards: int | None = None,
    overwrite: bool = False,
    **folder_options: Any,
):
    """Build the ``DatasetDict`` of a user's folder (:func:`resolve_folder`'s arguments in ``folder_options``, the
    others as for :func:`~adversarial_midibert.data.recipes.build_recipe`); its build report also lists the CSV rows
    that named no file and, among the skipped entries, what the folder scan left out."""
    spec = resolve_folder(midi_dir, labels, task_type=task_type, **folder_options)
    extra_info = dict(spec.extra_info)
    # what the folder scan left out (unreadable folders, dangling or looping symlinks...), listed with the skipped files
    report_extra = {"labels_without_file": extra_info.pop("labels_without_file", []),
                    "labels_csv_problems": extra_info.pop("labels_csv_problems", []),
                    "skipped": [{"split": None, "piece_id": None, **p} for p in extra_info.pop("folder_problems", [])]}
    return spec.build(tokenizer, max_seq_len, extra_info, seed=seed, num_proc=num_proc, max_files=max_files,
                      cache_dir=cache_dir, output_dir=output_dir, shard_size=shard_size, num_shards=num_shards,
                      overwrite=overwrite, report_extra=report_extra)
