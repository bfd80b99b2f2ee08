"""Seeded samples of a built data set: rows at random, pieces within every source, the counts of what was used."""

from __future__ import annotations

import pytest
from datasets import Dataset

from adversarial_midibert.data.sampling import (
    piece_source,
    pieces_and_segments,
    sample_pieces,
    sample_rows,
    select_pieces,
)

SOURCES = {"EMOPIA": 40, "POP1K7": 60, "POP909": 30, "Pianist8": 12}


def sorted_split() -> Dataset:
    """A split as a build lists it: pieces in sorted order, each with its segments (1 to 3) in consecutive rows."""
    pieces = sorted(f"{source}/{i:03d}" for source, n in SOURCES.items() for i in range(n))
    rows = [p for i, p in enumerate(pieces) for _ in range(1 + i % 3)]
    return Dataset.from_dict({"piece_id": rows, "segment_id": list(range(len(rows)))})


def test_piece_source_is_the_first_folder():
    assert piece_source("POP909/001") == "POP909"
    assert piece_source("POP1K7/src_001/a b") == "POP1K7"
    assert piece_source("solo") == "solo"


def test_sampled_rows_are_random_not_the_first_and_seeded():
    split = sorted_split()
    sample = sample_rows(split, 50, seed=3)
    ids = sample["segment_id"]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert sorted(ids) != list(range(50))  # not the first 50 rows
    assert {piece_source(p) for p in sample["piece_id"]} == set(SOURCES)  # the first 50 rows are EMOPIA only
    assert ids == sample_rows(split, 50, seed=3)["segment_id"]
    assert ids != sample_rows(split, 50, seed=4)["segment_id"]
    assert len(sample_rows(split, 10_000, seed=0)) == len(split)


def test_sampled_pieces_cover_every_source():
    split = sorted_split()
    by_count = sample_pieces(split["piece_id"], 10, seed=0)
    assert pieces_and_segments(by_count) == {s: {"pieces": 10, "segments": 10} for s in SOURCES}
    assert by_count == sample_pieces(split["piece_id"], 10, seed=0) != sample_pieces(split["piece_id"], 10, seed=1)
    # not the first pieces of each source
    assert any(p not in {f"{s}/{i:03d}" for s in SOURCES for i in range(10)} for p in by_count)
    by_share = sample_pieces(split["piece_id"], 0.25, seed=0)
    counts = pieces_and_segments(by_share)
    assert {s: c["pieces"] for s, c in counts.items()} == {s: round(0.25 * n) for s, n in SOURCES.items()}
    one_group = sample_pieces(split["piece_id"], 5, seed=0, group=None)
    assert len(one_group) == 5
    with pytest.raises(ValueError, match="share"):
        sample_pieces(split["piece_id"], 1.5, seed=0)


def test_selected_pieces_keep_all_their_rows_and_counts_follow_the_rows():
    split = sorted_split()
    chosen = sample_pieces(split["piece_id"], 3, seed=2)
    rows = select_pieces(split, chosen)
    assert sorted(set(rows["piece_id"])) == chosen
    assert len(rows) == sum(split["piece_id"].count(p) for p in chosen)
    assert rows["segment_id"] == sorted(rows["segment_id"])  # the split's order
    counts = pieces_and_segments(rows["piece_id"])
    assert sum(c["segments"] for c in counts.values()) == len(rows)
    assert all(c["pieces"] == 3 for c in counts.values())
    with pytest.raises(ValueError, match="no row"):
        select_pieces(split, ["POP909/999"])
