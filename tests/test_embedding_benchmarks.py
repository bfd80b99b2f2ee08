"""The embedding benchmarks' recipes and scoring: POP909 phrase pairs, ranks among distractors, arm comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from research.matching import MELODY_TRACK, TEMPO_QPM, matching_metrics, phrase_pairs, reciprocal_ranks
from research.model_arms import RANDOM_INIT, arm_of, compare_arms


def test_phrase_pairs_split_each_song_into_its_melody_and_accompaniment_of_the_same_bars(data_root):
    import symusic

    songs, melodies, accompaniments, skipped = phrase_pairs(data_root, "test", [0, 4], 4, max_songs=3)
    assert skipped == [] and songs == [s for s in songs[::2] for _ in range(2)] and len(set(songs)) == 3
    for i, song in enumerate(songs):
        score = symusic.Score(str(data_root / "POP909" / song / f"{song}.mid"))
        bar = score.ticks_per_quarter * 4
        melody_track = next(t for t in score.tracks if t.name.upper() == MELODY_TRACK)
        first_bar = int(melody_track.notes[0].time) // bar + (0 if i % 2 == 0 else 4)
        expected = sorted((int(n.time) - first_bar * bar, n.pitch) for n in melody_track.notes
                          if first_bar * bar <= n.time < (first_bar + 4) * bar)
        got = sorted((int(n.time), n.pitch) for t in melodies[i].tracks for n in t.notes)
        assert got == expected and got  # exactly the melody's notes of those bars, shifted to bar 0
        accompaniment_names = {t.name.upper() for t in accompaniments[i].tracks if t.note_num()}
        assert accompaniment_names and MELODY_TRACK not in accompaniment_names
        assert all(0 <= n.time < 4 * bar for t in accompaniments[i].tracks for n in t.notes)
        for half in (melodies[i], accompaniments[i]):  # one tempo: the tempo token cannot give the pair away
            assert [round(t.qpm) for t in half.tempos] == [TEMPO_QPM]


def test_reciprocal_ranks_count_distractors_scoring_at_least_as_high():
    similarity = np.array([[0.9, 0.1, 0.2],   # own accompaniment first: rank 1
                           [0.5, 0.3, 0.3],   # one distractor above, one tied: ties count against, rank 3
                           [0.0, 0.7, 0.6]])  # one above: rank 2
    assert reciprocal_ranks(similarity, num_distractors=2, seed=0).tolist() == pytest.approx([1, 1 / 3, 1 / 2])
    metrics = matching_metrics(np.array([1, 1 / 3, 1 / 2]), num_candidates=3)
    assert metrics["MAP"]["value"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3, abs=1e-4)
    assert metrics["HITS@1"]["value"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["MAP"]["chance"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3, abs=1e-4)
    assert metrics["mean_rank"] == 2.0


def test_compare_arms_pairs_queries_and_groups_seeds():
    rng = np.random.default_rng(0)
    better = {f"adversarial/seed{s}": rng.uniform(0.6, 1.0, 50) for s in range(2)}
    worse = {f"{RANDOM_INIT}/seed{s}": rng.uniform(0.0, 0.4, 50) for s in range(2)}
    same = {f"random/seed{s}": better[f"adversarial/seed{s}"] for s in range(2)}
    arms = compare_arms({**worse, **better, **same}, 1.0, "MAP")
    assert arm_of("adversarial/seed1") == "adversarial"
    assert arms["arms"]["adversarial"]["models"] == ["adversarial/seed0", "adversarial/seed1"]
    assert arms["arms"]["adversarial"]["mean"] == pytest.approx(np.mean([v.mean() for v in better.values()]), abs=1e-4)
    gap = arms["differences"][f"adversarial - {RANDOM_INIT}"]
    assert gap["excludes_zero"] and gap["interval_95"][0] > 0.3
    identical = arms["differences"]["adversarial - random"]
    assert identical["difference"] == 0 and not identical["excludes_zero"]
