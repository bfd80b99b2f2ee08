#!/usr/bin/env python
"""Melody-accompaniment matching on POP909 (MAP, HITS@k, bootstrap over songs): zero-shot and with a trained head.

In the spirit of MusicBERT's accompaniment suggestion: given a song's melody phrase, find the accompaniment of the
same bars among distractors from other songs. The recipe is deterministic:

1. songs: the songs of a split of ``splits/pop909.json`` (split by song: the test split's 86 songs are the queries;
   the train and valid splits train the matching head);
2. phrase: ``--num_bars`` bars of 4 quarter notes (POP909's time-signature events are unreliable), starting
   ``--start_bar`` bars after the bar where the melody enters (the train split gives ``--train_phrases`` phrases
   per song, every ``--num_bars`` bars from there); the melody is the ``MELODY`` track, the accompaniment every
   other track (``BRIDGE``, ``PIANO``), notes starting in those bars, shifted to time 0. Both halves get one tempo
   of 120 quarter notes per minute, so that the tempo token (the same for a song's two halves) cannot give the
   answer away. A phrase without melody or accompaniment notes is skipped and listed;
3. candidates: for every test song, its own accompaniment and ``--num_distractors`` accompaniments of other test
   songs, drawn with ``numpy.random.default_rng(--seed)`` (the same draw for every model);
4. score, zero-shot: cosine similarity of the piece embeddings (the ``midi-feature-extraction`` pipeline: mean of
   the notes' last-layer vectors); with a head: cosine similarity after two linear maps (one for melodies, one for
   accompaniments) trained on the train split's phrases with a symmetric contrastive loss (InfoNCE over the
   batch), the encoder frozen, the epoch chosen by the valid split's MAP; rank of the true accompaniment = 1 +
   distractors scoring at least as high (ties count against the model).

Reported per model: MAP (one relevant candidate, so the mean reciprocal rank) and HITS@1/5/10/25, each with a 95%
percentile bootstrap interval over songs (:func:`adversarial_midibert.confidence_intervals.bootstrap_accuracy`). Chance:
MAP
``H(n)/n`` and HITS@k ``k/n`` for ``n`` candidates. Models: ``--model ARM/seedN=PATH`` (pre-trained folders) and
randomly initialised encoders of the first model's configuration (``random-init/seedN``, one per ``--init_seed``);
arms are compared with :func:`research.model_arms.compare_arms` (songs resampled in pairs, seeds per arm).
Each model's embeddings are kept in ``--work_dir`` (``embeddings-NAME.npz``), so an interrupted run resumes.

Example::

    nice -n 10 python -m research.matching --data_root ../shared/data --work_dir runs/matching \\
        --model random/seed0=runs/study/pretrain/random/seed0 --output results/matching.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from adversarial_midibert.constants import DATA_ROOT_ENV
from adversarial_midibert.similarity import unit_rows
from benchmarks.results_file import ResultsFile
from research.model_arms import compare_arms, folder_name, model_label, named_model, with_random_init

HITS_AT = (1, 5, 10, 25)
MELODY_TRACK = "MELODY"
TEMPO_QPM = 120.0
SPLITS = ("train", "valid", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", type=Path, default=os.environ.get(DATA_ROOT_ENV),
                        help=f"folder holding POP909/ and splits/ (default: ${DATA_ROOT_ENV})")
    parser.add_argument("--start_bar", type=int, default=0, help="first bar of the phrase, after the melody enters")
    parser.add_argument("--num_bars", type=int, default=4, help="bars in the phrase")
    parser.add_argument("--num_distractors", type=int, default=49, help="other songs' accompaniments per query")
    parser.add_argument("--model", type=named_model, action="append", default=[], metavar="NAME=PATH",
                        help="a pre-trained model folder (repeatable); ARM/seedN names group seeds into arms")
    parser.add_argument("--no_random_init", action="store_true", help="skip the randomly initialised encoders")
    parser.add_argument("--init_seed", type=int, nargs="+", default=[0],
                        help="seeds of the randomly initialised encoders (one random-init/seedN each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the distractor draw and of the head's training")
    parser.add_argument("--no_head", action="store_true", help="zero-shot only: do not train a matching head")
    parser.add_argument("--train_phrases", type=int, default=2, help="phrases per train song for the head")
    parser.add_argument("--max_train_songs", type=int, default=None, help="use only the first N train songs")
    parser.add_argument("--head_epochs", type=int, default=200)
    parser.add_argument("--work_dir", type=Path, required=True,
                        help="where each model's embeddings are kept (a resumed run does not embed them again)")
    parser.add_argument("--output", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.data_root is None or not (args.data_root / "POP909").is_dir():
        parser.error(f"--data_root {args.data_root}: no POP909/ folder there (set --data_root or ${DATA_ROOT_ENV})")
    if not args.model and args.no_random_init:
        parser.error("nothing to evaluate: give --model or leave the random initialisation on")
    return args


def phrase_pairs(data_root: Path, split: str, start_bars: list[int], num_bars: int, max_songs: int | None = None):
    """``(songs, melodies, accompaniments, skipped)``: the recipe's symusic Scores, one pair per kept phrase, in song
    then phrase order (``songs`` names each pair's song)."""
    import symusic

    songs = sorted(json.loads((data_root / "splits" / "pop909.json").read_text())[split])[:max_songs]
    kept, melodies, accompaniments, skipped = [], [], [], []
    for song in songs:
        path = data_root / "POP909" / song / f"{song}.mid"
        try:
            score = symusic.Score(str(path))
        except Exception as error:  # a song that cannot be read is listed, the others go on
            skipped.append({"song": song, "reason": f"{path}: {error}"})
            continue
        melody_tracks = [t for t in score.tracks if t.name.upper() == MELODY_TRACK and t.note_num()]
        if not melody_tracks:
            skipped.append({"song": song, "reason": f"{path}: no {MELODY_TRACK} track with notes"})
            continue
        bar = score.ticks_per_quarter * 4  # 4 quarters: POP909's time-signature events are unreliable (038: 1/4)
        entry = min(int(t.notes[0].time) for t in melody_tracks) // bar  # the bar where the melody enters
        for first in start_bars:
            start, end = (entry + first) * bar, (entry + first + num_bars) * bar
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
                skipped.append({"song": song, "bar": first, "reason": "no melody or no accompaniment note in the "
                                                                      "phrase"})
                continue
            kept.append(song)
            melodies.append(halves[0])
            accompaniments.append(halves[1])
    return kept, melodies, accompaniments, skipped


def embed_all(pipe, scores: list, names: list[str]) -> np.ndarray:
    """``(len(scores), hidden)`` piece embeddings (not normalised) from a ``midi-feature-extraction`` pipeline."""
    from tqdm.auto import tqdm

    return np.stack([pipe(score, source=name)["embedding"]
                     for score, name in tqdm(list(zip(scores, names)), desc="embedding", unit="phrase")])


def reciprocal_ranks(similarity: np.ndarray, num_distractors: int, seed: int) -> np.ndarray:
    """``(songs,)`` 1 / rank of each song's own accompaniment (the diagonal of ``similarity``, melody rows x
    accompaniment columns) among ``num_distractors`` other columns drawn with ``default_rng(seed)``; ties count
    against the model."""
    n = len(similarity)
    rng = np.random.default_rng(seed)
    ranks = np.empty(n, dtype=np.int64)
    for i in range(n):  # the distractors of song i: other songs, drawn once per query (86 queries: not a hot path)
        others = rng.choice(np.delete(np.arange(n), i), size=min(num_distractors, n - 1), replace=False)
        ranks[i] = 1 + int((similarity[i, others] >= similarity[i, i]).sum())
    return 1.0 / ranks


def matching_metrics(reciprocal: np.ndarray, num_candidates: int) -> dict:
    """MAP and HITS@k with bootstrap intervals over songs, beside chance, from each song's reciprocal rank."""
    from adversarial_midibert.confidence_intervals import bootstrap_accuracy

    ranks = np.rint(1.0 / reciprocal)
    out = {"num_candidates": num_candidates, "mean_rank": round(float(ranks.mean()), 2)}
    chance_map = float(np.sum(1.0 / np.arange(1, num_candidates + 1)) / num_candidates)
    for name, per_song, chance in [("MAP", reciprocal, chance_map),
                                   *[(f"HITS@{k}", (ranks <= k).astype(float), min(k, num_candidates) / num_candidates)
                                     for k in HITS_AT]]:
        interval = bootstrap_accuracy(per_song, 1)
        out[name] = {"value": round(interval.estimate, 4), "interval_95": [round(interval.low, 4),
                                                                          round(interval.high, 4)],
                     "chance": round(chance, 4)}
    return out


def train_matching_head(train: dict, valid: dict, epochs: int, seed: int, num_distractors: int):
    """Two linear maps (melody, accompaniment) on frozen embeddings, trained with a symmetric InfoNCE loss.

    Hand-written (a few lines of torch) because it is a benchmark's probe, not a model of the package. The
    embeddings are standardised with the train split's mean and deviation; batches of 256 pairs, Adam (lr 1e-3,
    weight decay 1e-4), temperature 0.1; the epoch with the best valid MAP (same distractor recipe) is kept.

    Returns:
        ``(project, info)``: ``project(melody, accompaniment) -> (melody', accompaniment')`` numpy arrays, and the
        chosen epoch with its valid MAP.
    """
    import torch
    from torch.nn.functional import normalize

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = train["melody"].mean(0), train["accompaniment"].mean(0)
    std = train["melody"].std(0) + 1e-6, train["accompaniment"].std(0) + 1e-6

    def tensors(split):
        return (torch.from_numpy((split["melody"] - mean[0]) / std[0]).float(),
                torch.from_numpy((split["accompaniment"] - mean[1]) / std[1]).float())

    train_m, train_a = tensors(train)
    valid_m, valid_a = tensors(valid)
    hidden = train_m.shape[1]
    maps = torch.nn.ModuleList([torch.nn.Linear(hidden, hidden), torch.nn.Linear(hidden, hidden)])
    optimizer = torch.optim.Adam(maps.parameters(), lr=1e-3, weight_decay=1e-4)
    best = (-1.0, 0, [p.detach().clone() for p in maps.parameters()])
    for epoch in range(1, epochs + 1):
        maps.train()
        for batch in torch.randperm(len(train_m), generator=generator).split(256):
            logits = normalize(maps[0](train_m[batch]), dim=-1) @ normalize(maps[1](train_a[batch]), dim=-1).T / 0.1
            target = torch.arange(len(batch))
            loss = (torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            similarity = (normalize(maps[0](valid_m), dim=-1) @ normalize(maps[1](valid_a), dim=-1).T).numpy()
        valid_map = float(reciprocal_ranks(similarity, num_distractors, seed).mean())
        if valid_map > best[0]:
            best = (valid_map, epoch, [p.detach().clone() for p in maps.parameters()])
    with torch.no_grad():
        for parameter, kept in zip(maps.parameters(), best[2]):
            parameter.copy_(kept)

    def project(melody: np.ndarray, accompaniment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            return (maps[0](torch.from_numpy((melody - mean[0]) / std[0]).float()).numpy(),
                    maps[1](torch.from_numpy((accompaniment - mean[1]) / std[1]).float()).numpy())

    return project, {"epoch": best[1], "valid_MAP": round(best[0], 4), "epochs": epochs}


def model_embeddings(name: str, path: str, phrases: dict, work_dir: Path) -> dict:
    """``{split: {"melody": (n, h), "accompaniment": (n, h)}}`` for one model, read from ``work_dir`` when an earlier
    run embedded the same phrases with the same model, else embedded and saved (aside, then renamed)."""
    cache = work_dir / f"embeddings-{folder_name(name)}.npz"
    key = json.dumps({"model": str(Path(path).resolve()),
                      "phrases": {split: len(p["songs"]) for split, p in phrases.items()}}, sort_keys=True)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                print(f"{name}: reusing {cache}")
                return {split: {half: stored[f"{split}/{half}"] for half in ("melody", "accompaniment")}
                        for split in phrases}
    from adversarial_midibert.pipelines import MIDI_FEATURE_EXTRACTION, midi_pipeline

    pipe = midi_pipeline(MIDI_FEATURE_EXTRACTION, path, device="cpu")  # loaded once for every split and half
    out = {split: {half: embed_all(pipe, p[half], [f"{s}:{half}" for s in p["songs"]])
                   for half in ("melody", "accompaniment")} for split, p in phrases.items()}
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.stem}.tmp.npz")
    np.savez(tmp, key=np.array(key), **{f"{split}/{half}": v for split, halves in out.items()
                                         for half, v in halves.items()})
    os.replace(tmp, cache)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = ResultsFile(args.output, settings=vars(args))
    phrases, skipped = {}, {}
    for split in ("test",) if args.no_head else SPLITS:
        starts = ([args.start_bar + i * args.num_bars for i in range(args.train_phrases)] if split == "train"
                  else [args.start_bar])
        songs, melodies, accompaniments, skipped[split] = phrase_pairs(
            args.data_root, split, starts, args.num_bars, args.max_train_songs if split == "train" else None)
        phrases[split] = {"songs": songs, "melody": melodies, "accompaniment": accompaniments}
        print(f"{split}: {len(songs)} phrases of {len(set(songs))} songs, {len(skipped[split])} skipped")
    models = list(args.model)
    if not args.no_random_init:
        models = with_random_init(models, args.init_seed, args.work_dir)
    num_candidates = min(args.num_distractors, len(phrases["test"]["songs"]) - 1) + 1
    rows, per_song = {}, {"zero-shot": {}, "head": {}}
    for name, path in models:
        embeddings = model_embeddings(name, path, phrases, args.work_dir)
        test = embeddings["test"]
        reciprocal = reciprocal_ranks(unit_rows(test["melody"]) @ unit_rows(test["accompaniment"]).T,
                                      args.num_distractors, args.seed)
        row = {"model": model_label(name, path, models), "zero-shot": matching_metrics(reciprocal, num_candidates)}
        per_song["zero-shot"][name] = reciprocal
        if not args.no_head:
            project, row["head_training"] = train_matching_head(embeddings["train"], embeddings["valid"],
                                                                args.head_epochs, args.seed, args.num_distractors)
            melody, accompaniment = project(test["melody"], test["accompaniment"])
            reciprocal = reciprocal_ranks(unit_rows(melody) @ unit_rows(accompaniment).T, args.num_distractors,
                                          args.seed)
            row["head"] = matching_metrics(reciprocal, num_candidates)
            per_song["head"][name] = reciprocal
        rows[name] = row
        for mode in ("zero-shot", "head"):
            if mode in row:
                m = row[mode]
                print(f"{name} {mode}: MAP {m['MAP']['value']:.3f} {m['MAP']['interval_95']}, HITS@1 "
                      f"{m['HITS@1']['value']:.3f}, HITS@5 {m['HITS@5']['value']:.3f}, HITS@10 "
                      f"{m['HITS@10']['value']:.3f} ({num_candidates} candidates; chance MAP {m['MAP']['chance']:.3f})")
    arms = {mode: compare_arms(scores, 1.0, "MAP (mean reciprocal rank of the own accompaniment)")
            for mode, scores in per_song.items() if scores}
    for mode, comparison in arms.items():
        for pair, difference in comparison["differences"].items():
            print(f"{mode} MAP {pair}: {difference['difference']:+.3f} {difference['interval_95']}")
    results.write(task="POP909 melody phrase -> its own accompaniment among distractors of other test songs: "
                       "zero-shot cosine of piece embeddings, and cosine after a matching head trained on the "
                       "train split (encoder frozen)",
                  songs=phrases["test"]["songs"], num_phrases={split: len(p["songs"]) for split, p in phrases.items()},
                  skipped=skipped, rows=rows, arms=arms)
    return rows


if __name__ == "__main__":
    main()
