#!/usr/bin/env python
"""Write ``docs/embedding-results.md`` from ``results/embedding-neighbours.json`` and ``results/matching.json``.

The page's figures are copied from the two results files (never typed by hand), with the commands that produced
them; MusicBERT's published matching figures are quoted beside ours, with why they are not comparable.

    python -m research.embedding_report      # after research/embedding_neighbours.py and research/matching.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# MusicBERT (Zeng et al., 2021), Table 3, MusicBERT-base: fine-tuned on pairs from its own corpus, evaluated on the
# PiRhDy test sets (melody completion: the next phrase among distractors; accompaniment suggestion: the
# accompaniment of a melody among distractors).
MUSICBERT_BASE = {"melody completion": {"MAP": 0.985, "HITS@1": 0.975, "HITS@5": 0.997, "HITS@10": 0.999,
                                        "HITS@25": 1.000},
                  "accompaniment suggestion": {"MAP": 0.946, "HITS@1": 0.333, "HITS@5": 0.857}}
HITS = ("HITS@1", "HITS@5", "HITS@10", "HITS@25")


def _interval(values: list[float]) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]"


def _differences(comparison: dict, what: str) -> list[str]:
    lines = []
    for pair, difference in comparison["differences"].items():
        verdict = ("the interval excludes 0" if difference["excludes_zero"]
                   else "the interval includes 0: no difference resolved")
        lines.append(f"- {what}, {pair}: {difference['difference']:+.3f} {_interval(difference['interval_95'])} "
                     f"({verdict}).")
    return lines


def neighbours_section(record: dict) -> list[str]:
    rows = record["rows"]
    first = next(iter(rows.values()))
    k = record["settings"]["top_k"]
    lines = ["## Do a piece's nearest neighbours share its composer? (Pianist8, `results/embedding-neighbours.json`)",
             "", f"Command: `{record['command']}` (run with `OMP_NUM_THREADS=1`).", "",
             f"{first['num_pieces']} pieces of 8 composers, each the query once; the figure is the share of its {k} "
             f"nearest other pieces (cosine of the piece embeddings, the faiss index `adv-midibert search` uses) "
             f"by the same composer. Chance (a random ranking): {first['chance']:.3f}. Intervals: "
             f"{record['arms']['interval_method']}.", "",
             f"| encoder | seeds | precision@{k} (seed mean) | 95% interval | per seed | x chance |",
             "|---|---|---|---|---|---|"]
    for arm, summary in record["arms"]["arms"].items():
        lines.append(f"| {arm} | {len(summary['models'])} | {summary['mean']:.3f} | "
                     f"{_interval(summary['interval_95'])} "
                     f"| {', '.join(f'{v:.3f}' for v in summary['seed_values'])} | "
                     f"{summary['mean'] / first['chance']:.2f} |")
    lines += ["", *_differences(record["arms"], f"precision@{k}"), ""]
    return lines


def matching_section(record: dict) -> list[str]:
    rows = record["rows"]
    settings = record["settings"]
    candidates = next(iter(rows.values()))["zero-shot"]["num_candidates"]
    chance = next(iter(rows.values()))["zero-shot"]
    lines = ["## Melody-accompaniment matching on POP909 (`results/matching.json`)", "",
             f"Command: `{record['command']}` (run with `OMP_NUM_THREADS=1`).", "",
             f"{len(record['songs'])} test songs; each song's melody phrase ({settings['num_bars']} bars from the "
             f"melody's entry) ranks its own accompaniment among {candidates} candidates "
             f"({settings['num_distractors']} accompaniments of other test songs). **zero-shot**: cosine of the piece "
             f"embeddings; **head**: two linear maps trained on {record['num_phrases']['train']} phrase pairs of the "
             "train songs (contrastive loss, encoder frozen, epoch chosen on the valid songs). Chance: MAP "
             f"{chance['MAP']['chance']:.3f}, " + ", ".join(f"{h} {chance[h]['chance']:.3f}" for h in HITS) + ". "
             "Skipped phrases (no melody or accompaniment note): "
             + ", ".join(f"{split} {len(items)}" for split, items in record["skipped"].items()) + ".", "",
             "| encoder | mode | seeds | MAP (seed mean) | 95% interval | " + " | ".join(HITS) + " |",
             "|---|---|---|---|---|" + "---|" * len(HITS)]
    for mode, comparison in record["arms"].items():
        for arm, summary in comparison["arms"].items():
            hits = [sum(rows[m][mode][h]["value"] for m in summary["models"]) / len(summary["models"]) for h in HITS]
            lines.append(f"| {arm} | {mode} | {len(summary['models'])} | {summary['mean']:.3f} | "
                         f"{_interval(summary['interval_95'])} | " + " | ".join(f"{h:.3f}" for h in hits) + " |")
    lines.append("")
    for mode, comparison in record["arms"].items():
        lines += _differences(comparison, f"MAP {mode}")
    lines += ["", "### Beside MusicBERT's published figures (different data, different protocol)", "",
              "MusicBERT-base (Zeng et al., 2021, Table 3) is fine-tuned end to end on pairs built from its own "
              "corpus and evaluated on the PiRhDy test sets; the figures above come from a tiny "
              "encoder (the study's checkpoints: 2 layers, hidden size 64, pre-trained on 240 pieces on a CPU), POP909 "
              "phrases and our own distractor recipe, with the encoder frozen. They are not comparable; the table only "
              "says where a large pre-trained model stands on tasks of the same shape.", "",
              "| MusicBERT-base | MAP | " + " | ".join(HITS) + " |", "|---|---|" + "---|" * len(HITS)]
    for task, figures in MUSICBERT_BASE.items():
        lines.append(f"| {task} | {figures['MAP']:.3f} | "
                     + " | ".join(f"{figures[h]:.3f}" if h in figures else "n/a" for h in HITS) + " |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neighbours", type=Path, default=ROOT / "results" / "embedding-neighbours.json")
    parser.add_argument("--matching", type=Path, default=ROOT / "results" / "matching.json")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "embedding-results.md")
    args = parser.parse_args(argv)
    from adversarial_midibert.atomic_io import atomic_write_text

    lines = ["# Embeddings on real data: neighbours and matching", "",
             "<!-- generated by research/embedding_report.py from results/embedding-neighbours.json and "
             "results/matching.json; do not edit by hand -->", "",
             "Encoders: the earlier method study's pre-trained checkpoints (3 seeds each of random and adversarial "
             "masking with the reference freezing schedule; its results file is `results/study-cpu.json` as of "
             "commit 2424bdb, since replaced by the six-seed study of `docs/study.md`; `../study-runs/cpu` in the "
             "commands is that study's `--work_dir`) and randomly "
             "initialised encoders of the same configuration (3 seeds). "
             "How to run and what each benchmark measures: `docs/embeddings.md`.", ""]
    lines += neighbours_section(json.loads(args.neighbours.read_text()))
    lines += matching_section(json.loads(args.matching.read_text()))
    atomic_write_text(args.output, "\n".join(lines))
    print(f"wrote {args.output}")
    return args.output


if __name__ == "__main__":
    main()
