"""Pieces -> segment rows as one Arrow record batch: the tokenising work of a dataset build, run in worker processes.

:func:`tokenize_pieces` reads, encodes and segments MIDI files and returns their rows (the columns of ARCHITECTURE.md
"Datasets" but ``segment_id``, which the writer adds) with what the build report needs: notes, notes left out,
class counts, and each skipped file with its reason (one bad file never stops a build). The Arrow arrays are built
from flat numpy arrays, with no Python list per row.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import IGNORE_INDEX, NUM_ATTRIBUTES, TOKENIZER_FILE_NAME

__all__ = ["TASK_TYPES", "IGNORE_INDEX", "PieceBatch", "segment_features", "tokenize_pieces"]

TASK_TYPES = ("sequence", "token", "pretrain")

# A token-label function: (symusic score, track_index (N,), note_index (N,)) -> labels (N,) ints, -100 = no label.
TokenLabelFn = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]


def segment_features(task_type: str, label_names: Sequence[str] | None = None, with_segment_id: bool = True):
    """The ``datasets.Features`` of a split's rows (``segment_id`` last).

    Labels are ``ClassLabel`` (sequence) / ``List(ClassLabel)`` (token) when the class names are known, so the names
    travel with the data; -100 (a token without a label, BOS/EOS) is stored as is.
    """
    from datasets import ClassLabel, Features, List, Value

    cols = {
        "input_ids": List(List(Value("int16"), length=NUM_ATTRIBUTES)),
        "attention_mask": List(Value("int8")),
        "piece_id": Value("string"),
    }
    label = ClassLabel(names=[str(n) for n in label_names]) if label_names else None
    if task_type == "sequence":
        cols["labels"] = label or Value("int64")
    elif task_type == "token":
        cols["labels"] = List(label or Value("int16"))
    if with_segment_id:
        cols["segment_id"] = Value("int64")
    return Features(cols)


@dataclass
class PieceBatch:
    """What :func:`tokenize_pieces` returns for a list of pieces.

    Attributes:
        batch: the segments as a ``pyarrow.RecordBatch`` (columns of :func:`segment_features` without
            ``segment_id``), or ``None`` when no piece gave a segment.
        num_segments, num_pieces, num_notes, dropped_notes: counts (notes left out: not representable).
        skipped: ``(piece_id, path, reason)`` of each skipped file.
        class_counts_pieces, class_counts_segments (sequence tasks), class_counts_notes and unlabelled_notes
            (token tasks): per-class counts, lists indexed by class (length ``num_labels``).
    """

    batch: Any
    num_segments: int = 0
    num_pieces: int = 0
    num_notes: int = 0
    dropped_notes: int = 0
    skipped: list = field(default_factory=list)
    class_counts_pieces: list | None = None
    class_counts_segments: list | None = None
    class_counts_notes: list | None = None
    unlabelled_notes: int = 0


_TOKENIZER_CACHE: dict[str, Any] = {}


def tokenizer_from_json(text: str):
    """An ``OctupleTokenizer`` from its ``to_dict()`` as JSON, built once per process."""
    tok = _TOKENIZER_CACHE.get(text)
    if tok is None:
        from ..tokenization_octuple import OctupleTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / TOKENIZER_FILE_NAME).write_text(json.dumps(json.loads(text)))
            tok = OctupleTokenizer.from_pretrained(tmp, warn=False)
        _TOKENIZER_CACHE[text] = tok
    return tok


def tokenize_pieces(
    pieces: Sequence[tuple[str, str, Any]],
    tokenizer_json: str,
    task_type: str,
    token_label_fn: TokenLabelFn | None = None,
    label_names: Sequence[str] | None = None,
) -> PieceBatch:
    """Read, encode and segment MIDI files into one record batch of segment rows.

    Args:
        pieces: ``(path, piece_id, label)`` per file, in output order; ``label`` is the class index for sequence
            tasks (ignored otherwise).
        tokenizer_json: ``json.dumps(tokenizer.to_dict())`` (a string, cheap to send to worker processes).
        task_type: ``"sequence"``, ``"token"`` or ``"pretrain"``.
        token_label_fn: token tasks: ``(score, track_index, note_index) -> labels (N,)``, -100 = no label.
        label_names: class names (sequence and token tasks): the labels' ``ClassLabel`` and the class counts.
    """
    import pyarrow as pa

    num_labels = len(label_names) if label_names else None
    tok = tokenizer_from_json(tokenizer_json)
    result = PieceBatch(batch=None)
    segments: list[np.ndarray] = []
    piece_ids: list[str] = []
    sequence_labels: list[int] = []
    token_labels: list[np.ndarray] = []
    piece_labels: list[int] = []
    for path, piece_id, label in pieces:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                score, _ = tok.load_score(path)
                ids, (track_index, note_index) = tok.encode_score(score, return_note_indices=True)
            dropped = tok.last_report.num_dropped if tok.last_report is not None else 0
            if len(ids) == 0:
                reason = f"no notes ({dropped} notes could not be represented)" if dropped else "no notes"
                result.skipped.append((piece_id, str(path), reason))
                continue
            if task_type == "token":
                labels = np.asarray(token_label_fn(score, track_index, note_index), dtype=np.int64)
                if labels.shape != (len(ids),):
                    raise ValueError(f"token_label_fn returned shape {labels.shape} for {len(ids)} notes")
                piece_segments, cut = tok.segment(ids, note_aligned_arrays=[labels], fill_value=IGNORE_INDEX)
            else:
                piece_segments, cut = tok.segment(ids), None
        except Exception as err:  # one bad file never stops the build: it is reported
            result.skipped.append((piece_id, str(path), f"{type(err).__name__}: {err}"))
            continue
        segments.extend(piece_segments)
        piece_ids.extend([piece_id] * len(piece_segments))
        result.num_pieces += 1
        result.num_notes += len(ids)
        result.dropped_notes += dropped
        if task_type == "sequence":
            sequence_labels.extend([int(label)] * len(piece_segments))
            piece_labels.append(int(label))
        elif task_type == "token":
            token_labels.extend(c[0] for c in cut)

    result.num_segments = len(segments)
    if task_type == "sequence" and num_labels:
        result.class_counts_pieces = np.bincount(piece_labels, minlength=num_labels).tolist()
        result.class_counts_segments = np.bincount(sequence_labels, minlength=num_labels).tolist()
    if not segments:
        if task_type == "token" and num_labels:
            result.class_counts_notes = [0] * num_labels
        return result

    lengths = np.fromiter((len(s) for s in segments), dtype=np.int64, count=len(segments))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    rows = np.concatenate(segments).astype(np.int16)
    columns = {
        "input_ids": pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(rows.reshape(-1), 8)),
        "attention_mask": pa.ListArray.from_arrays(offsets, pa.array(np.ones(len(rows), dtype=np.int8))),
        "piece_id": pa.array(piece_ids, type=pa.string()),
    }
    if task_type == "sequence":
        columns["labels"] = pa.array(np.asarray(sequence_labels, dtype=np.int64))
    elif task_type == "token":
        flat = np.concatenate(token_labels)
        columns["labels"] = pa.ListArray.from_arrays(offsets, pa.array(flat.astype(np.int64 if label_names
                                                                                   else np.int16)))
        valid = flat[flat >= 0]
        if num_labels:
            result.class_counts_notes = np.bincount(valid, minlength=num_labels).tolist()
        result.unlabelled_notes = int(result.num_notes - valid.size)
    schema = segment_features(task_type, label_names, with_segment_id=False).arrow_schema
    result.batch = pa.RecordBatch.from_arrays(list(columns.values()), schema=schema)
    return result
