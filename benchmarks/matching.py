#!/usr/bin/env python
"""Melody-accompaniment matching on POP909, zero-shot from embeddings (MAP, HITS@k, bootstrap over songs).

In the spirit of MusicBERT's accompaniment suggestion: given a song's melody phrase, find the accompaniment of the
same bars among distractors from other songs. The recipe is deterministic:

1. songs: the ``--split`` songs of ``splits/pop909.json`` (split by song; the default ``test`` has 86 songs);
2. phrase: ``--num_bars`` bars of 4 quarter notes (POP909's time-signature events are unreliable), starting
   ``--start_bar`` bars after the bar where the melody enters; the melody is the ``MELODY`` track, the accompaniment every other track (``BRIDGE``, ``PIANO``), notes starting in
   those bars, shifted to time 0. Both halves get one tempo of 120 quarter notes per minute, so that the tempo
   token (the same for a song's two halves) cannot give the answer away. A song without melody or accompaniment
   notes in the phrase is skipped and listed;
3. candidates: for every song, its own accompaniment and ``--num_distractors`` accompaniments of other songs of the
   split, drawn with ``numpy.random.default_rng(--seed)``;
4. score: cosine similarity of the piece embeddings (the ``midi-feature-extraction`` pipeline: mean of the notes'
   last-layer vectors); rank of the true accompaniment = 1 + distractors scoring at least as high (ties count
   against the model).

Reported per model: MAP (one relevant candidate, so the mean reciprocal rank) and HITS@1/5/10/25, each with a 95%
percentile bootstrap interval over songs (:func:`adversarial_midibert.bootstrap.bootstrap_accuracy`). Chance: MAP
``H(n)/n`` and HITS@k ``k/n`` for ``n`` candidates. Models: ``--model NAME=PATH`` (pre-trained folders) and a
randomly initialised encoder of the first model's configuration (``random-init``).

Example::

    nice -n 10 python benchmarks/matching.py --data_root ../shared/data \\
        --model random=runs/study/pretrain/random/seed0 --output results/matching.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.* imports

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

from adversarial_midibert.constants import DATA_ROOT_ENV  # noqa: E402
from benchmarks.embedding_neighbours import _named, model_label, random_init_folder  # noqa: E402
from benchmarks.results_file import ResultsFile  # noqa: E402

HITS_AT = (1, 5, 10, 25)
MELODY_TRACK = "MELODY"
TEMPO_QPM = 120.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", type=Path, default=os.environ.get(DATA_ROOT_ENV),
                        help=f"folder holding POP909/ and splits/ (default: ${DATA_ROOT_ENV})")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--start_bar", type=int, default=0, help="first bar of the phrase, after the melody enters")
    parser.add_argument("--num_bars", type=int, default=4, help="bars in the phrase")
    parser.add_argument("--num_distractors", type=int, default=49, help="other songs' accompaniments per query")
    parser.add_argument("--model", type=_named, action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--no_random_init", action="store_true", help="skip the randomly initialised encoder")
    parser.add_argument("--init_seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the distractor draw")
    parser.add_argument("--output", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.data_root is None or not (args.data_root / "POP909").is_dir():
        parser.error(f"--data_root {args.data_root}: no POP909/ folder there (set --data_root or ${DATA_ROOT_ENV})")
    return args


def phrase_pairs(args: argparse.Namespace) -> tuple[list[str], list, list, list[dict]]:
    """``(songs, melodies, accompaniments, skipped)``: the recipe's symusic Scores, in song order."""
    import symusic

    songs = sorted(json.loads((args.data_root / "splits" / "pop909.json").read_text())[args.split])
    kept, melodies, accompaniments, skipped = [], [], [], []
    for song in songs:
        path = args.data_root / "POP909" / song / f"{song}.mid"
        try:
            score = symusic.Score(str(path))
        except Exception as error:  # noqa: BLE001  (a song that cannot be read is listed, the others go on)
            skipped.append({"song": song, "reason": f"{path}: {error}"})
            continue
        melody_tracks = [t for t in score.tracks if t.name.upper() == MELODY_TRACK and t.note_num()]
        if not melody_tracks:
            skipped.append({"song": song, "reason": f"{path}: no {MELODY_TRACK} track with notes"})
            continue
        bar = score.ticks_per_quarter * 4  # 4 quarters: POP909's time-signature events are unreliable (038: 1/4)
        entry = min(int(t.notes[0].time) for t in melody_tracks) // bar  # the bar where the melody enters
        start, end = (entry + args.start_bar) * bar, (entry + args.start_bar + args.num_bars) * bar
        halves = []
        for is_melody in (True, False):
            part = symusic.Score(score.ticks_per_quarter)
            part.time_signatures = score.time_signatures.copy()
            part.tempos.append(symusic.Tempo(0, TEMPO_QPM))
            for track in score.tracks:
                if (track.name.upper() == MELODY_TRACK) == is_melody:
                    part.tracks.append(track.copy())
            halves.append(part.clip(start, end, clip_end=False).shift_time(-start))
        if min(h.note_num() for h in halves) == 0:
            skipped.append({"song": song, "reason": "no melody or no accompaniment note in the phrase"})
            continue
        kept.append(song)
        melodies.append(halves[0])
        accompaniments.append(halves[1])
    return kept, melodies, accompaniments, skipped


def embed_all(model: str, scores: list, names: list[str]) -> np.ndarray:
    from adversarial_midibert.pipelines import MIDI_FEATURE_EXTRACTION, midi_pipeline
    from adversarial_midibert.similarity import unit_rows

    pipe = midi_pipeline(MIDI_FEATURE_EXTRACTION, model, device="cpu")
    return unit_rows(np.stack([pipe(score, source=name)["embedding"] for score, name in zip(scores, names)]))


def matching_metrics(melody: np.ndarray, accompaniment: np.ndarray, num_distractors: int, seed: int) -> dict:
    from adversarial_midibert.bootstrap import bootstrap_accuracy

    n = len(melody)
    rng = np.random.default_rng(seed)
    similarity = melody @ accompaniment.T  # (songs, songs): row = melody query, column = accompaniment
    ranks = np.empty(n, dtype=np.int64)
    for i in range(n):  # the distractors of song i: other songs, drawn once per query
        others = rng.choice(np.delete(np.arange(n), i), size=min(num_distractors, n - 1), replace=False)
        ranks[i] = 1 + int((similarity[i, others] >= similarity[i, i]).sum())
    candidates = min(num_distractors, n - 1) + 1
    out = {"num_candidates": candidates, "mean_rank": round(float(ranks.mean()), 2)}
    for name, per_song, chance in [("MAP", 1.0 / ranks, float(np.sum(1.0 / np.arange(1, candidates + 1)) / candidates)),
                                   *[(f"HITS@{k}", (ranks <= k).astype(float), min(k, candidates) / candidates)
                                     for k in HITS_AT]]:
        interval = bootstrap_accuracy(per_song, 1)
        out[name] = {"value": round(interval.estimate, 4), "interval_95": [round(interval.low, 4),
                                                                          round(interval.high, 4)],
                     "chance": round(chance, 4)}
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = ResultsFile(args.output, settings=vars(args))
    songs, melodies, accompaniments, skipped = phrase_pairs(args)
    print(f"{len(songs)} songs of the {args.split} split, {len(skipped)} skipped")
    models = list(args.model)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_random_init:
            like = models[0][1] if models else None
            models.insert(0, ("random-init", str(random_init_folder(like, Path(tmp) / "random-init", args.init_seed))))
        for name, path in models:
            melody = embed_all(path, melodies, [f"{s}:melody" for s in songs])
            accompaniment = embed_all(path, accompaniments, [f"{s}:accompaniment" for s in songs])
            row = matching_metrics(melody, accompaniment, args.num_distractors, args.seed)
            row["model"] = model_label(name, path, models)
            rows[name] = row
            print(f"{name}: MAP {row['MAP']['value']:.3f} {row['MAP']['interval_95']}, HITS@1 "
                  f"{row['HITS@1']['value']:.3f}, HITS@5 {row['HITS@5']['value']:.3f}, HITS@10 "
                  f"{row['HITS@10']['value']:.3f} ({row['num_candidates']} candidates; chance MAP "
                  f"{row['MAP']['chance']:.3f})")
    results.write(task="POP909 melody -> own accompaniment among distractors, zero-shot cosine of piece embeddings",
                  songs=songs, skipped=skipped, rows=rows,
                  fine_tuned_head="not run (zero-shot only)")
    return rows


if __name__ == "__main__":
    main()
