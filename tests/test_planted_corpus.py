"""The masker gate's corpus: its ground truth (planted notes independent of their context, the others determined)."""

import numpy as np
import pytest

from adversarial_midibert import OctupleTokenizer
from adversarial_midibert.constants import BAR, DURATION, PITCH, POSITION, VELOCITY
from research.planted_corpus import CONTEXT_FREE_ATTRIBUTES, plant_notes, planted_real_segments, synthetic_corpus


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(OctupleTokenizer(max_seq_len=128), 600, planted_share=0.15, seed=3)


def _has_repeat(ids: np.ndarray, notes: np.ndarray) -> np.ndarray:
    """Per real note: does a note two bars away (same chord in the generator) repeat its position, pitch, duration
    and velocity? The context an oracle would read a determined note off."""
    out = np.zeros(notes.shape, dtype=bool)
    keys = (POSITION, PITCH, DURATION, VELOCITY)
    for s in range(len(ids)):
        rows = ids[s][notes[s]]
        table = {(int(r[BAR]),) + tuple(int(r[k]) for k in keys) for r in rows}
        found = [any((int(r[BAR]) + d,) + tuple(int(r[k]) for k in keys) in table for d in (-2, 2)) for r in rows]
        out[s, np.flatnonzero(notes[s])] = found
    return out


def test_planted_share_flags_and_order(corpus):
    notes = corpus.attention_mask.astype(bool).copy()
    notes[:, 0] = False
    notes[np.arange(len(corpus)), corpus.attention_mask.sum(1) - 1] = False
    assert not corpus.planted[~notes].any()  # never BOS, EOS or padding
    assert corpus.planted_share == pytest.approx(0.15, abs=0.01)
    onset = corpus.input_ids[..., BAR] * 1000 + corpus.input_ids[..., POSITION]
    for s in range(20):
        assert np.all(np.diff(onset[s][notes[s]]) >= 0)


def test_determined_notes_follow_from_context_and_planted_ones_do_not(corpus):
    notes = corpus.planted.copy()
    notes |= corpus.attention_mask.astype(bool)
    notes[:, 0] = False
    notes[np.arange(len(corpus)), corpus.attention_mask.sum(1) - 1] = False
    repeat = _has_repeat(corpus.input_ids, notes)
    assert repeat[notes & ~corpus.planted].mean() == 1.0
    assert repeat[corpus.planted].mean() < 0.1


def _total_variation(a: np.ndarray, b: np.ndarray, size: int) -> float:
    pa = np.bincount(a, minlength=size) / len(a)
    pb = np.bincount(b, minlength=size) / len(b)
    return 0.5 * np.abs(pa - pb).sum()


def test_planted_notes_follow_the_corpus_marginal(corpus):
    notes = corpus.attention_mask.astype(bool)
    notes[:, 0] = False
    notes[np.arange(len(corpus)), corpus.attention_mask.sum(1) - 1] = False
    determined = notes & ~corpus.planted
    for attribute in CONTEXT_FREE_ATTRIBUTES:
        planted_ids = corpus.input_ids[..., attribute][corpus.planted]
        other_ids = corpus.input_ids[..., attribute][determined]
        size = int(corpus.input_ids[..., attribute].max()) + 1
        assert _total_variation(planted_ids, other_ids, size) < 0.06, attribute


def test_planted_pitch_is_independent_of_its_segment(corpus):
    """Chi-square test of independence between a planted note's pitch class and its segment's lowest pitch class
    (a function of the segment's key and chords): not rejected for planted notes, rejected for the others."""
    from scipy.stats import chi2_contingency

    first_note = corpus.input_ids[:, 1, PITCH] % 12

    def table(flags):
        rows, cols = np.nonzero(flags)
        counts = np.zeros((12, 12))
        np.add.at(counts, (first_note[rows], corpus.input_ids[rows, cols, PITCH] % 12), 1)
        return counts[counts.sum(1) > 0][:, counts.sum(0) > 0]

    notes = corpus.attention_mask.astype(bool)
    notes[:, :2] = False  # the first note itself is the reference
    notes[np.arange(len(corpus)), corpus.attention_mask.sum(1) - 1] = False
    assert chi2_contingency(table(corpus.planted & notes)).pvalue > 0.001
    assert chi2_contingency(table(notes & ~corpus.planted)).pvalue < 1e-12


def test_plant_notes_keeps_every_original_row_in_order():
    rng = np.random.default_rng(0)
    segments = []
    for size in (30, 50, 41):
        rows = rng.integers(4, 40, size=(size, 8))
        rows[:, BAR] = np.sort(rng.integers(4, 10, size))
        rows[:, POSITION] = 4
        segments.append(rows)
    planted = plant_notes(segments, 0.2, np.random.default_rng(1))
    for original, (rows, flags) in zip(segments, planted):
        np.testing.assert_array_equal(rows[~flags], original)
        assert flags.sum() == round(0.2 / 0.8 * len(original))
        onsets = {(int(r[BAR]), int(r[POSITION])) for r in original}
        assert all((int(r[BAR]), int(r[POSITION])) in onsets for r in rows[flags])


def test_planted_real_segments_caps_notes_and_drops_special_rows():
    rng = np.random.default_rng(0)
    segments = []
    for size in (60, 70):
        rows = rng.integers(4, 40, size=(size + 2, 8))
        rows[1:-1, BAR] = np.sort(rng.integers(4, 10, size))
        rows[1:-1, POSITION] = 4
        rows[0], rows[-1] = 1, 2  # BOS, EOS
        segments.append(rows)
    corpus = planted_real_segments(segments, 0.15, seed=0, max_notes=75)
    assert corpus.attention_mask.sum(1).max() <= 77
    assert corpus.planted.sum(1).tolist() == [11, 5]  # round(0.15 / 0.85 * 60), then the cap 75 - 70
    with pytest.raises(ValueError, match="onset order"):
        planted_real_segments([segments[0][::-1], segments[1]], 0.15)
