"""Seeded random samples of a built data set: rows, or whole pieces drawn source by source.

A split lists its rows in piece order and the ``pretrain`` recipe's piece ids begin with their source folder
(``EMOPIA/...``, ``POP909/...``), so "the first N rows" would be the first sources only: every subset the training
loops and the studies take is drawn here, with a seed (:func:`sample_rows`, :func:`sample_pieces` within every
source, :func:`select_pieces`), and :func:`pieces_and_segments` counts what was used per source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = ["piece_source", "sample_rows", "sample_pieces", "select_pieces", "pieces_and_segments"]


def piece_source(piece_id: str) -> str:
    """The source of a piece: the first folder of its id (``"POP909/001"`` -> ``"POP909"``; an id without a folder
    is its own source)."""
    return str(piece_id).split("/", 1)[0]


def sample_rows(dataset, max_rows: int, seed: int):
    """``max_rows`` rows of ``dataset`` drawn at random without replacement (all of them when it has fewer).

    ``datasets``' ``shuffle(seed).select``: an indices mapping over the memory-mapped table, nothing copied.
    """
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    if max_rows >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_rows))


def sample_pieces(
    piece_ids: Iterable[str],
    per_group: int | float,
    seed: int,
    group: Callable[[str], str] | None = piece_source,
) -> list[str]:
    """A seeded random sample of distinct piece ids, drawn within every group; returned sorted.

    Args:
        piece_ids: piece ids (repeats, e.g. one per segment, count once).
        per_group: an ``int`` draws that many pieces of every group (all of a smaller group); a ``float`` in
            ``(0, 1]`` draws that share of every group, rounded, at least one piece.
        seed: seed of ``numpy.random.default_rng``; the groups are drawn in sorted order from one generator.
        group: a piece's group (default: its source, :func:`piece_source`); ``None``: one group.
    """
    if isinstance(per_group, float) and not 0.0 < per_group <= 1.0:
        raise ValueError(f"per_group as a share must be in (0, 1], got {per_group}")
    if isinstance(per_group, int) and per_group < 0:
        raise ValueError(f"per_group as a count must be >= 0, got {per_group}")
    groups: dict[str, list[str]] = {}
    for piece in dict.fromkeys(str(p) for p in piece_ids):
        groups.setdefault(group(piece) if group is not None else "", []).append(piece)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for name in sorted(groups):
        members = sorted(groups[name])
        n = per_group if isinstance(per_group, int) else max(1, round(per_group * len(members)))
        chosen += [members[i] for i in rng.permutation(len(members))[:n]]
    return sorted(chosen)


def select_pieces(dataset, piece_ids: Iterable[str]):
    """The rows of ``dataset`` (a ``datasets.Dataset`` with a ``piece_id`` column) whose piece is in ``piece_ids``, in
    the dataset's order (an indices mapping, nothing copied).

    Raises:
        ValueError: a piece id that has no row (named, with the count of such ids).
    """
    wanted = {str(p) for p in piece_ids}
    pieces = dataset["piece_id"]
    indices = [i for i, p in enumerate(pieces) if p in wanted]
    absent = wanted - set(pieces)
    if absent:
        raise ValueError(f"{len(absent)} piece id(s) have no row in the split, e.g. {sorted(absent)[:3]}")
    return dataset.select(indices)


def pieces_and_segments(piece_ids: Sequence[str], group: Callable[[str], str] = piece_source) -> dict[str, dict]:
    """Pieces and segments per group of the rows given by their piece ids (one id per row, e.g. a split's
    ``piece_id`` column): ``{group: {"pieces": int, "segments": int}}``, groups sorted."""
    counts: dict[str, dict] = {}
    seen: set[str] = set()
    for piece in piece_ids:
        cell = counts.setdefault(group(piece), {"pieces": 0, "segments": 0})
        cell["segments"] += 1
        if piece not in seen:
            seen.add(piece)
            cell["pieces"] += 1
    return {name: counts[name] for name in sorted(counts)}
