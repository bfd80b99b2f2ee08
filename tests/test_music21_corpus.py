"""Tests of the music21 default corpus (adversarial_midibert.data.music21_corpus): conversion, cache, failures."""

from __future__ import annotations

import importlib.util

import pytest
from symusic import Score

from adversarial_midibert.data.music21_corpus import (
    DEFAULT_COMPOSERS,
    Music21Score,
    convert_music21_corpus,
    select_music21_scores,
)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("music21") is None, reason="music21 is not installed")


def test_default_selection_is_balanced_and_reproducible():
    scores = select_music21_scores()
    counts = {}
    for s in scores:
        counts[s.composer] = counts.get(s.composer, 0) + 1
    assert set(counts) == set(DEFAULT_COMPOSERS)
    assert all(n >= 10 for n in counts.values())
    assert 150 <= len(scores) <= 400
    assert [s.relative_path for s in select_music21_scores()] == [s.relative_path for s in scores]


def test_convert_tiny_subset_reports_failures_and_caches(tmp_path):
    chosen = select_music21_scores({"ryansMammoth": 2, "bach": 1}, seed=1)
    bogus = Music21Score(str(tmp_path / "missing.mxl"), "nobody", "nobody/missing.mxl")
    report = convert_music21_corpus(tmp_path / "cache", scores=[*chosen, bogus], num_workers=2, timeout=60)
    assert len(report.files) == 3 and report.converted_now == 3
    assert [p for p, _ in report.failed] == ["nobody/missing.mxl"]
    for path, composer in report.files:
        assert Score(path).note_num() > 0
        assert composer in ("ryansMammoth", "bach")
    assert "failed" in report.summary()
    again = convert_music21_corpus(tmp_path / "cache", scores=[*chosen, bogus], num_workers=2)
    assert again.converted_now == 0 and again.files == report.files and len(again.failed) == 1
