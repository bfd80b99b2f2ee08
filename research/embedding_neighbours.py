#!/usr/bin/env python
"""Are a piece's nearest neighbours by the same composer? ``adv-midibert embed`` + ``search`` on Pianist8.

For each model of ``--model NAME=PATH`` (and a randomly initialised encoder of the same configuration as the first,
``random-init``, unless ``--no_random_init``), embeds every file of ``--midi_dir`` (Pianist8: one folder per
composer) with :func:`adversarial_midibert.similarity.embed_files` (what ``adv-midibert embed`` runs), builds the
search index with :func:`~adversarial_midibert.similarity.load_index` (what ``adv-midibert search`` queries), and
asks, for every piece, its ``--top_k`` nearest other pieces (the piece itself left out). The figure is the
precision@k of "same composer" over all queries, with a 95% bootstrap interval over query pieces
(:func:`adversarial_midibert.confidence_intervals.bootstrap_accuracy`), against the chance rate: the precision a random
ranking would have, ``mean over queries of (pieces of its composer - 1) / (pieces - 1)``.

Queries use the stored embeddings of the pieces (the vector ``adv-midibert search`` computes for the same file).

Example::

    nice -n 10 python -m research.embedding_neighbours --midi_dir ../shared/data/Pianist8/midi \\
        --model random=runs/study/pretrain/random/seed0 --work_dir runs/neighbours --max_per_composer 15 \\
        --output results/embedding-neighbours.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.results_file import ResultsFile
from research.model_arms import compare_arms, folder_name, model_label, named_model, with_random_init


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--midi_dir", type=Path, required=True, help="one sub-folder of MIDI files per composer")
    parser.add_argument("--model", type=named_model, action="append", default=[], metavar="NAME=PATH",
                        help="a model folder to evaluate (repeatable); ARM/seedN names group seeds into arms")
    parser.add_argument("--no_random_init", action="store_true", help="skip the randomly initialised encoder")
    parser.add_argument("--init_seed", type=int, nargs="+", default=[0],
                        help="seeds of the randomly initialised encoders (one random-init/seedN each)")
    parser.add_argument("--max_per_composer", type=int, default=None,
                        help="embed only the first N files (sorted by name) of each composer (a small, fixed sample)")
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument("--work_dir", type=Path, required=True,
                        help="where the embeddings folders go; a model whose folder is complete is not embedded again")
    parser.add_argument("--segment_batch_size", type=int, default=16)
    parser.add_argument("--output", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if not args.model and args.no_random_init:
        parser.error("nothing to evaluate: give --model or leave the random initialisation on")
    if not args.midi_dir.is_dir():
        parser.error(f"--midi_dir {args.midi_dir}: not a folder")
    return args


def neighbour_precision(dataset, composers: list[str], top_k: int) -> tuple[dict, np.ndarray]:
    """``(row, hits)``: the precision@k of the same composer with its interval, and each query's hits."""
    from adversarial_midibert.confidence_intervals import bootstrap_accuracy
    from adversarial_midibert.similarity import EMBEDDING_COLUMN

    vectors = np.asarray(dataset[EMBEDDING_COLUMN], dtype=np.float32)
    _, indices = dataset.search_batch(EMBEDDING_COLUMN, vectors, k=top_k + 1)
    labels = np.array(composers)
    own = np.arange(len(vectors))
    hits = np.zeros(len(vectors), dtype=np.int64)
    for row, found in enumerate(indices):  # one row per query: drop the query itself, keep top_k
        others = [i for i in found if i != own[row]][:top_k]
        hits[row] = int((labels[others] == labels[row]).sum())
    sizes = {c: int((labels == c).sum()) for c in set(composers)}
    chance = float(np.mean([(sizes[c] - 1) / (len(labels) - 1) for c in composers]))
    interval = bootstrap_accuracy(hits, top_k)
    per_composer = {c: round(float(hits[labels == c].sum() / (top_k * sizes[c])), 4) for c in sorted(sizes)}
    return {f"precision_at_{top_k}": round(interval.estimate, 4),
            "interval_95": [round(interval.low, 4), round(interval.high, 4)], "chance": round(chance, 4),
            "lift_over_chance": round(interval.estimate / chance, 2), "per_composer": per_composer,
            "interval_method": interval.method}, hits


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = ResultsFile(args.output, settings=vars(args))
    from adversarial_midibert.data import list_midi_files
    from adversarial_midibert.similarity import INFO_FILE_NAME, embed_files, load_index

    models = list(args.model)
    if not args.no_random_init:
        models = with_random_init(models, args.init_seed, args.work_dir)
    inputs = [f for folder in sorted(p for p in args.midi_dir.iterdir() if p.is_dir())
              for f in list_midi_files(folder)[: args.max_per_composer]]
    rows, hits = {}, {}
    for name, path in models:
        folder = args.work_dir / f"embeddings-{folder_name(name)}"
        start = time.perf_counter()
        info_file = folder / INFO_FILE_NAME
        earlier = json.loads(info_file.read_text()) if info_file.is_file() else {}
        if earlier.get("model") == str(Path(path).resolve()) and earlier.get("num_inputs") == len(inputs):
            print(f"{name}: reusing {folder} (embedded by an earlier run: same model, same files)")
        else:
            embed_files(path, inputs, folder, segment_batch_size=args.segment_batch_size, device="cpu")
        embed_s = time.perf_counter() - start
        dataset, _ = load_index(folder)
        info = json.loads(info_file.read_text())
        composers = [Path(f).resolve().relative_to(args.midi_dir.resolve()).parts[0] for f in dataset["file"]]
        row, hits[name] = neighbour_precision(dataset, composers, args.top_k)
        skipped = info["errors"]
        row.update(model=model_label(name, path, models), num_pieces=len(dataset), num_skipped=len(skipped),
                   skipped=skipped, embed_s=round(embed_s, 1))
        rows[name] = row
        print(f"{name}: precision@{args.top_k} same composer {row[f'precision_at_{args.top_k}']:.3f} "
              f"[{row['interval_95'][0]:.3f}, {row['interval_95'][1]:.3f}] vs chance {row['chance']:.3f} "
              f"(x{row['lift_over_chance']}), {row['num_pieces']} pieces, {row['num_skipped']} skipped, "
              f"{embed_s:.0f} s to embed")
    if len({len(h) for h in hits.values()}) != 1:
        raise SystemExit(f"the models embedded different numbers of pieces ({ {n: len(h) for n, h in hits.items()} }):"
                         " arms cannot be compared query by query")
    arms = compare_arms(hits, args.top_k, f"precision@{args.top_k} of the same composer")
    for pair, difference in arms["differences"].items():
        print(f"{pair}: {difference['difference']:+.3f} {difference['interval_95']}")
    results.write(task="same-composer precision of nearest neighbours (cosine, datasets faiss index), Pianist8",
                  models={name: path for name, path in models}, rows=rows, arms=arms)
    return rows


if __name__ == "__main__":
    main()
