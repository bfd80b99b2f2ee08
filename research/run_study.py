#!/usr/bin/env python
"""The method study: is the adversary at work, and does its choice of notes make a better encoder?

Arms (each pre-trained with every seed of ``--seeds`` on the same corpus, preset and schedule):

==================  =========================================================================================
arm                 pre-training
==================  =========================================================================================
``random``          random-token MLM (BERT, 15 % of the notes, 80/10/10), ``--steps`` steps
``random-2x``       the same at equal compute: ``--compute_ratio x --steps`` steps (an adversarial step costs
                    about two random ones: the masker pass is a second forward and backward)
``bar``             MusicBERT bar-level masking, ``--steps`` (the positive control: another masking that the
                    literature finds better than random)
``adversarial``     the method (masker top-k under the mask book, freezing pass and attribute weights every
                    epoch), ``--steps``
``easiest``         the control: the same machinery, but the notes the masker finds *easiest* (bottom-k) are
                    masked; if it scores like ``adversarial``, the masker's choice does not matter
``scratch``         no pre-training (random initialisation of the same preset, one per seed)
==================  =========================================================================================

Evaluations of every model (the encoders are frozen except in the last one):

- ``melody-probe`` / ``velocity-probe``: a per-note linear probe (logistic regression on the last hidden state)
  trained on the notes of the first ``--probe_train_pieces`` POP909 training songs and scored on every note of the
  86 test songs (velocity hidden from the whole input for velocity);
- ``composer-cv``: stratified 5-fold cross-validation of a logistic regression on the piece embeddings (note-weighted
  mean of the last hidden states) of all 411 Pianist8 pieces (piece-level folds; every piece predicted once);
- ``melody-finetune-10pct``: full fine-tuning of POP909 melody on the first 10 % of the training songs, the learning
  rate chosen per model on the validation songs among ``--finetune_learning_rates``, scored on the test songs.

For each comparison (``adversarial - random``, ``adversarial - easiest``, ``adversarial - random-2x``,
``bar - random``, ``adversarial - scratch``, ``random - scratch``) and evaluation: the difference of the seed-mean
accuracies, a paired two-level 95 % bootstrap interval (pieces shared by both arms, seeds resampled per arm;
:func:`adversarial_midibert.confidence_intervals.paired_bootstrap_difference`) and the minimum detectable effect
(``(z_0.975 + z_0.8) x`` the bootstrap standard error: the smallest true difference this evaluation finds four
times in five).

Every stage is resumable: a finished pre-training has ``all_results.json`` (an interrupted one resumes from its
newest epoch checkpoint), a finished probe its JSON file, a finished fine-tuning its ``all_results.json``. Run it
again with the same arguments to continue; ``--stages report`` rewrites the results file and the docs page from
what is finished (partial results are marked as such).

Example (the committed CPU study)::

    python -m research.run_study --data_root ../shared/data --work_dir runs/study --jobs 2 \\
        --results_file results/study-cpu.json --docs docs/study.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from adversarial_midibert.atomic_io import atomic_write_json, atomic_write_text
from adversarial_midibert.checkpointing import latest_checkpoint
from adversarial_midibert.command_line import command_line
from adversarial_midibert.confidence_intervals import paired_bootstrap_difference, stack_piece_counts
from adversarial_midibert.evaluation import PieceResults
from research.probing import ProbeResult

# the same runner, floors and JSON reader as the ablation
from research.run_ablation import FLOORS as TASK_FLOORS
from research.run_ablation import Runner, portable_command, read_json

logger = logging.getLogger("run_study")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ARMS = {  # name -> pre-training flags (None: no pre-training)
    "random": ["--masking", "random"],
    "random-2x": ["--masking", "random"],
    "bar": ["--masking", "bar"],
    "adversarial": ["--masking", "adversarial"],
    "easiest": ["--masking", "easiest"],
    "scratch": None,
}
COMPARISONS = (("adversarial", "random"), ("adversarial", "easiest"), ("adversarial", "random-2x"),
               ("bar", "random"), ("adversarial", "scratch"), ("random", "scratch"))
EVALUATIONS = ("melody-probe", "velocity-probe", "composer-cv", "melody-finetune-10pct")
Z_POWER = 1.959964 + 0.841621  # two-sided 5 % test, 80 % power
# The data README's floors (test accuracy %) that the study's evaluations sit beside.
FLOORS = {task: TASK_FLOORS[task] for task in ("melody", "velocity", "composer")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default=os.environ.get("ADV_MIDIBERT_DATA"), help="shared data folder")
    p.add_argument("--work_dir", required=True, help="runs, logs and data sets")
    p.add_argument("--stages", default="data,pretrain,probe,finetune,report")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", default="0,1,2", help="pre-training seeds (scratch: initialisation seeds)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--max_seq_len", type=int, default=128)
    p.add_argument("--pretrain_files", type=int, default=240, help="pieces of the pre-training corpus")
    p.add_argument("--train_segments", type=int, default=1600,
                   help="training segments per epoch (--max_train_samples): sets the epoch, hence the schedule of "
                        "freezing passes and attribute-weight updates")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=800, help="pre-training steps of every arm but random-2x")
    p.add_argument("--compute_ratio", type=float, default=2.0, help="random-2x: steps = ratio x --steps")
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--pretrain_args", default="--mask_budget padded --masker_loss_form reference --freeze_every 1",
                   help="flags added to every pre-training (the method's reference settings)")
    p.add_argument("--probe_train_pieces", type=int, default=150)
    p.add_argument("--finetune_fraction", type=float, default=0.1)
    p.add_argument("--finetune_learning_rates", default="5e-4,2e-3")
    p.add_argument("--finetune_epochs", type=int, default=4)
    p.add_argument("--finetune_arms", default=None,
                   help="arms that get the low-resource fine-tuning (default: every arm); the others are reported as "
                        "left out of that evaluation")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--bootstrap_resamples", type=int, default=2000)
    p.add_argument("--results_file", default=None, help="default: WORK_DIR/study.json")
    p.add_argument("--docs", default=None, help="write the generated markdown page here")
    p.add_argument("--step_cost_file", default=None,
                   help="a results file of benchmarks/pretrain_step.py at the study's preset, batch and length: the "
                        "step cost ratios measured in one run (the runs' wall times are noisy on a shared machine)")
    p.add_argument("--note", action="append", default=[],
                   help="a sentence printed under the set-up in the docs page (repeatable), e.g. what changed since "
                        "the runs")
    p.add_argument("--probe_model", help=argparse.SUPPRESS)  # internal: one model's probes (a subprocess)
    p.add_argument("--probe_output", help=argparse.SUPPRESS)
    p.add_argument("--probe_seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = set(args.arms) - set(ARMS)
    if unknown:
        p.error(f"--arms: unknown {sorted(unknown)}; known: {', '.join(ARMS)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.stages = args.stages.split(",")
    args.finetune_learning_rates = [float(x) for x in args.finetune_learning_rates.split(",")]
    args.finetune_arms = args.arms if args.finetune_arms is None else [a for a in args.finetune_arms.split(",") if a]
    args.work_dir = Path(args.work_dir)
    return args


def arm_steps(arm: str, args) -> int:
    return int(round(args.steps * args.compute_ratio)) if arm == "random-2x" else args.steps


# ----------------------------------------------------------------------------------------------------- stages
def data_stage(args, runner: Runner) -> None:
    runs = []
    for recipe, extra in (("pretrain", ["--max_files", str(args.pretrain_files)]), ("melody", []),
                          ("velocity", []), ("composer", [])):
        out = args.work_dir / "data" / recipe
        if (out / "task_info.json").is_file():
            continue
        runs.append((f"data-{recipe}", [sys.executable, str(EXAMPLES / "prepare_data.py"), "--task", recipe,
                                        "--data_root", str(args.data_root), "--output_dir", str(out),
                                        "--max_seq_len", str(args.max_seq_len), "--seed", "0", "--num_proc", "1",
                                        *extra], None))
    runner.run_all(runs)


def pretrain_folder(args, arm: str, seed: int) -> Path:
    return args.work_dir / "pretrain" / arm / f"seed{seed}"


def pretrain_stage(args, runner: Runner) -> None:
    runs = []
    for seed in args.seeds:  # seed-major: a partial study has every arm of its first seeds
        for arm in args.arms:
            out = pretrain_folder(args, arm, seed)
            if ARMS[arm] is None or (out / "all_results.json").is_file():
                continue
            command = [sys.executable, str(EXAMPLES / "pretrain.py"), "--dataset", str(args.work_dir / "data/pretrain"),
                       "--preset", args.preset, *ARMS[arm], "--max_train_steps", str(arm_steps(arm, args)),
                       "--max_train_samples", str(args.train_segments), "--per_device_train_batch_size",
                       str(args.batch_size), "--learning_rate", str(args.learning_rate), "--seed", str(seed),
                       "--output_dir", str(out), "--checkpointing_steps", "epoch", "--checkpoints_total_limit", "1",
                       *shlex.split(args.pretrain_args)]
            if latest_checkpoint(out) is not None:
                command += ["--resume_from_checkpoint", "latest"]
            runs.append((f"pretrain-{arm}-seed{seed}", command, None))
    runner.run_all(runs)


def model_source(args, arm: str, seed: int) -> str:
    """A pre-trained folder, or ``scratch:<seed>`` for a random initialisation."""
    return f"scratch:{seed}" if ARMS[arm] is None else str(pretrain_folder(args, arm, seed))


def probe_file(args, arm: str, seed: int) -> Path:
    return args.work_dir / "probe" / arm / f"seed{seed}.json"


def probe_stage(args, runner: Runner) -> None:
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            out = probe_file(args, arm, seed)
            source = model_source(args, arm, seed)
            if out.is_file() or (ARMS[arm] is not None and not (Path(source) / "all_results.json").is_file()):
                continue
            runs.append((f"probe-{arm}-seed{seed}", [sys.executable, str(Path(__file__).resolve()), "--work_dir",
                                                     str(args.work_dir), "--preset", args.preset,
                                                     "--probe_train_pieces", str(args.probe_train_pieces),
                                                     "--probe_model", source, "--probe_output", str(out)], None))
    runner.run_all(runs)


def load_encoder(source: str, preset: str, vocab_sizes):
    """The frozen encoder of a pre-trained folder, or a random initialisation (``scratch:<seed>``)."""
    import torch

    from adversarial_midibert import AdvMidiBertConfig, AdvMidiBertForMaskedLM, AdvMidiBertModel
    from adversarial_midibert.presets import preset_config_kwargs

    if source.startswith("scratch:"):
        torch.manual_seed(int(source.split(":", 1)[1]))
        return AdvMidiBertModel(AdvMidiBertConfig(**preset_config_kwargs(preset), vocab_sizes=list(vocab_sizes)))
    return AdvMidiBertForMaskedLM.from_pretrained(source).base_model


def run_probes(args) -> None:
    """One model's probes (``--probe_model``), written to ``--probe_output``."""
    from datasets import concatenate_datasets

    from adversarial_midibert.data import load_task_dataset
    from research.probing import (
        cross_validated_piece_probe,
        encode_dataset,
        fit_linear_probe,
    )

    start = time.time()
    results = {"model": args.probe_model}
    encoder = None
    for task in ("melody", "velocity"):
        dataset, info, tokenizer = load_task_dataset(args.work_dir / "data" / task)
        encoder = encoder or load_encoder(args.probe_model, args.preset, tokenizer.vocab_sizes)
        hidden = info.get("hidden_attributes") or []
        train = encode_dataset(encoder, dataset["train"], hidden_attributes=hidden, max_pieces=args.probe_train_pieces)
        test = encode_dataset(encoder, dataset["test"], hidden_attributes=hidden)
        probe = fit_linear_probe(train, test, seed=args.probe_seed)
        results[f"{task}-probe"] = {"accuracy": probe.accuracy, "piece_ids": probe.piece_ids,
                                    "correct": probe.correct.tolist(), "total": probe.total.tolist(),
                                    "train_notes": int(train.note_features.shape[0]), "hidden_attributes": hidden}
    dataset, _, _ = load_task_dataset(args.work_dir / "data" / "composer")
    pieces = encode_dataset(encoder, concatenate_datasets([dataset[s] for s in ("train", "validation", "test")]))
    probe = cross_validated_piece_probe(pieces, folds=5, seed=args.probe_seed)
    results["composer-cv"] = {"accuracy": probe.accuracy, "piece_ids": probe.piece_ids,
                              "correct": probe.correct.tolist(), "total": probe.total.tolist()}
    results["runtime_s"] = round(time.time() - start, 1)
    Path(args.probe_output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.probe_output), results)


def finetune_folder(args, arm: str, seed: int, learning_rate: float) -> Path:
    return args.work_dir / "finetune" / arm / f"seed{seed}" / f"lr{learning_rate:g}"


def low_resource_segments(args) -> int:
    """Training segments of the first ``--finetune_fraction`` of the melody training songs (whole songs)."""
    from adversarial_midibert.data import load_task_dataset

    dataset, _, _ = load_task_dataset(args.work_dir / "data" / "melody")
    pieces = list(dataset["train"]["piece_id"])  # a piece's segments are consecutive rows
    songs = list(dict.fromkeys(pieces))
    keep = set(songs[: max(1, math.ceil(args.finetune_fraction * len(songs)))])
    return sum(1 for p in pieces if p in keep)


def finetune_stage(args, runner: Runner) -> None:
    segments = low_resource_segments(args)
    runs = []
    for seed in args.seeds:
        for arm in args.finetune_arms:
            source = model_source(args, arm, seed)
            if ARMS[arm] is not None and not (Path(source) / "all_results.json").is_file():
                continue
            init = (["--from_scratch", "--preset", args.preset] if ARMS[arm] is None
                    else ["--model_name_or_path", source])
            for lr in args.finetune_learning_rates:
                out = finetune_folder(args, arm, seed, lr)
                if (out / "all_results.json").is_file():
                    continue
                runs.append((f"finetune-{arm}-seed{seed}-lr{lr:g}", [
                    sys.executable, str(EXAMPLES / "finetune.py"), "--dataset", str(args.work_dir / "data/melody"),
                    *init, "--max_train_samples", str(segments), "--num_train_epochs", str(args.finetune_epochs),
                    "--learning_rate", str(lr), "--per_device_train_batch_size", str(args.batch_size),
                    "--per_device_eval_batch_size", "64", "--early_stopping_patience", "0",
                    "--metric_for_best_model", "accuracy", "--seed", str(100 + seed), "--output_dir", str(out),
                    "--overwrite_output_dir"], None))
    runner.run_all(runs)


# ----------------------------------------------------------------------------------------------------- report
def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def arm_summary(args, arm: str) -> dict:
    """Seeds done, steps, freezing passes and attribute-weight updates (counted in the run logs), masked share."""
    if ARMS[arm] is None:
        return {"seeds": [s for s in args.seeds if probe_file(args, arm, s).is_file()], "pretrain_steps": 0}
    done, runs = [], []
    for seed in args.seeds:
        folder = pretrain_folder(args, arm, seed)
        if not (folder / "all_results.json").is_file():
            continue
        done.append(seed)
        log = (args.work_dir / "logs" / f"pretrain-{arm}-seed{seed}.log")
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
        train = _jsonl(folder / "train_log.jsonl")
        evals = _jsonl(folder / "eval_log.jsonl")
        results = read_json(folder / "all_results.json")
        runs.append({
            "seed": seed,
            "steps": results.get("train_steps"),
            "runtime_s": results.get("train_runtime_s"),
            "freezing_passes": text.count("freezing pass, frozen fraction"),
            "freezing_steps": sorted({r["step"] for r in evals}) if "freezing pass" in text else [],
            "attribute_weight_updates": text.count("attribute weights from validation"),
            "masked_share": float(np.mean([r["masked_share"] for r in train])) if train else None,
            "frozen_fraction": results.get("frozen_fraction"),
            "eval_loss": results.get("eval_loss"),
            "eval_masker_spearman": results.get("eval_masker_spearman"),
            "eval_masker_spearman_within": results.get("eval_masker_spearman_within"),
            "eval_token_cosine": results.get("eval_token_cosine"),
            "eval_effective_rank": results.get("eval_effective_rank"),
        })

    def mean(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    return {"seeds": done, "pretrain_steps": arm_steps(arm, args), "freezing_passes": mean("freezing_passes"),
            "attribute_weight_updates": mean("attribute_weight_updates"), "masked_share": mean("masked_share"),
            "runtime_s": mean("runtime_s"), "eval_loss": mean("eval_loss"),
            "eval_masker_spearman": mean("eval_masker_spearman"),
            "eval_masker_spearman_within": mean("eval_masker_spearman_within"),
            "eval_token_cosine": mean("eval_token_cosine"), "eval_effective_rank": mean("eval_effective_rank"),
            "frozen_fraction": mean("frozen_fraction"), "runs": runs}


def chosen_finetune(args, arm: str, seed: int) -> dict | None:
    """The fine-tuning of this model whose validation accuracy is best among the learning rates (all must be done)."""
    candidates = []
    for lr in args.finetune_learning_rates:
        folder = finetune_folder(args, arm, seed, lr)
        if not (folder / "all_results.json").is_file():
            return None
        results = read_json(folder / "all_results.json")
        candidates.append((results.get("eval_accuracy", float("-inf")), lr, str(folder), results.get("test_accuracy")))
    eval_accuracy, learning_rate, folder, test_accuracy = max(candidates)
    return {"learning_rate": learning_rate, "eval_accuracy": eval_accuracy, "folder": Path(folder),
            "test_accuracy": test_accuracy}


def evaluation_counts(args, arm: str, evaluation: str) -> tuple[list, list, list, list[str]]:
    """Per-seed ``(correct, total)`` rows over the evaluation's pieces, the accuracies, the pieces."""
    correct, total, accuracies, order = [], [], [], None
    for seed in args.seeds:
        if evaluation == "melody-finetune-10pct":
            chosen = chosen_finetune(args, arm, seed)
            if chosen is None:
                continue
            run = PieceResults.from_records(read_json(chosen["folder"] / "test_piece_results.json"))
        else:
            path = probe_file(args, arm, seed)
            if not path.is_file():
                continue
            entry = read_json(path)[evaluation]
            run = ProbeResult(entry["piece_ids"], np.asarray(entry["correct"]), np.asarray(entry["total"]))
        c, t, order = stack_piece_counts([run], "note", order)  # every seed in the first seed's piece order
        correct.append(c[0]), total.append(t[0])
        accuracies.append(float(correct[-1].sum() / max(total[-1].sum(), 1)))
    return correct, total, accuracies, order or []


def comparisons(args) -> tuple[list[dict], dict]:
    table, out = {}, []
    for evaluation in EVALUATIONS:
        table[evaluation] = {}
        for arm in args.arms:
            correct, total, accuracies, order = evaluation_counts(args, arm, evaluation)
            table[evaluation][arm] = {"seeds": len(accuracies), "accuracies": accuracies,
                                      "mean": float(np.mean(accuracies)) if accuracies else None,
                                      "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
                                      "_counts": (correct, total, order)}
    for evaluation in EVALUATIONS:
        for a, b in COMPARISONS:
            if a not in args.arms or b not in args.arms:
                continue
            ca, ta, order_a = table[evaluation][a]["_counts"]
            cb, tb, order_b = table[evaluation][b]["_counts"]
            entry = {"task": evaluation.split("-")[0], "evaluation": evaluation, "a": a, "b": b,
                     "seeds_a": len(ca), "seeds_b": len(cb)}
            if evaluation == "melody-finetune-10pct" and not {a, b} <= set(args.finetune_arms):
                out.append({**entry, "difference": None, "ci95": None, "mde": None,
                            "status": "left out: not every arm of it is in --finetune_arms"})
                continue
            if not ca or not cb or order_a != order_b:
                out.append({**entry, "difference": None, "ci95": None, "mde": None, "status": "not run yet"})
                continue
            interval = paired_bootstrap_difference(np.stack(ca), np.stack(ta), np.stack(cb), np.stack(tb),
                                                   n_resamples=args.bootstrap_resamples, seed=0)
            standard_error = (interval.high - interval.low) / (2 * 1.959964)
            out.append({**entry, "difference": interval.estimate, "ci95": [interval.low, interval.high],
                        "mde": Z_POWER * standard_error, "excludes_zero": interval.excludes_zero,
                        "pieces": len(order_a), "method": interval.method})
    for evaluation in table.values():
        for cell in evaluation.values():
            cell.pop("_counts")
    return out, table


def finetune_choices(args) -> dict:
    return {arm: {str(seed): ({k: v for k, v in chosen.items() if k != "folder"} if chosen else None)
                  for seed in args.seeds for chosen in [chosen_finetune(args, arm, seed)]}
            for arm in args.arms}


def commands_of(args) -> dict:
    path = args.work_dir / "commands.json"
    return read_json(path) if path.is_file() else {}


STEP_KIND = {"random": "random", "random-2x": "random", "bar": "bar", "adversarial": "adversarial",
             "easiest": "adversarial"}


def benchmark_step_costs(path) -> dict:
    """Per arm: median step time and counted FLOPs of its kind of step, relative to a random step, from one run of
    ``benchmarks/pretrain_step.py``."""
    if path is None:
        return {}
    bench = read_json(Path(path))
    times = {kind: bench["steps"][kind]["median_ms"] for kind in ("random", "bar", "adversarial")}
    flops = bench["flops_per_token"]["mflop_per_token"]
    return {arm: {"time_ratio": times[kind] / times["random"], "flop_ratio": flops[kind] / flops["random"],
                  "benchmark": bench.get("command")} for arm, kind in STEP_KIND.items()}


def portable_paths(value, work_dir: Path):
    """``value`` with this machine's path of the work folder written ``WORK_DIR`` in every string (settings, commands,
    notes), so that the results file names no path of the machine it was made on."""
    if isinstance(value, dict):
        return {k: portable_paths(v, work_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, work_dir) for v in value]
    if isinstance(value, str):
        for spelling in (str(work_dir.resolve()), str(work_dir)):
            value = value.replace(spelling, "WORK_DIR")
        return value
    return value


def report(args, command: str) -> dict:
    arms = {arm: arm_summary(args, arm) for arm in args.arms}
    measured = benchmark_step_costs(args.step_cost_file)
    random_cost = arms.get("random", {}).get("runtime_s")
    for arm, summary in arms.items():
        cost = summary.get("runtime_s")
        steps = summary.get("pretrain_steps") or 0
        base_steps = arms.get("random", {}).get("pretrain_steps") or 0
        # wall time per step of the runs themselves, against random's (noisy when other jobs share the machine)
        summary["wall_step_cost_ratio"] = (cost / steps) / (random_cost / base_steps) if (
            cost and steps and random_cost and base_steps) else None
        bench = measured.get(arm)
        summary["step_cost_ratio"] = bench["time_ratio"] if bench else summary["wall_step_cost_ratio"]
        summary["step_flop_ratio"] = bench["flop_ratio"] if bench else None
    compared, accuracy = comparisons(args)
    expected = len(args.seeds) * len(args.arms)
    finished = sum(len(a["seeds"]) for a in arms.values())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=EXAMPLES, capture_output=True, text=True).stdout.strip()
    results = {
        "study": "adversarial vs random, bar and easiest-first masking; frozen probes and low-resource fine-tuning",
        "complete": finished == expected and all(c["difference"] is not None for c in compared
                                                  if not c.get("status", "").startswith("left out")),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if not k.startswith("probe_") or k == "probe_train_pieces"},
        "arms": arms,
        "accuracy": accuracy,
        "comparisons": compared,
        "finetune_learning_rate_choice": finetune_choices(args),
        "floors": FLOORS,
        "step_cost_benchmark": next(iter(measured.values()))["benchmark"] if measured else None,
        "commit": commit,
        "command": command,
        "run_commands": {k: portable_command(v) for k, v in commands_of(args).items()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    return portable_paths(results, args.work_dir)


def _num(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _pct(value, digits=1):
    return "–" if value is None else f"{100 * value:.{digits}f}"


def verdict(comparison: dict) -> str:
    """One sentence per comparison: a difference whose interval excludes 0, or none found at this resolution."""
    a, b, evaluation = comparison["a"], comparison["b"], comparison["evaluation"]
    if comparison["difference"] is None:
        return f"{evaluation}: {a} vs {b} {comparison['status']}."
    low, high = (100 * x for x in comparison["ci95"])
    size = f"{100 * comparison['difference']:+.2f} points [{low:+.2f}, {high:+.2f}]"
    if comparison["excludes_zero"]:
        return f"{evaluation}: {a} {'above' if comparison['difference'] > 0 else 'below'} {b}, {size}."
    return (f"{evaluation}: no difference between {a} and {b} detected, {size}; this evaluation detects "
            f"{100 * comparison['mde']:.2f} points four times in five.")


def floor_sentences(results: dict) -> list[str]:
    """Where each evaluation's best arm stands against the floors of its task (the protocols differ: said so)."""
    out = []
    for evaluation, row in results["accuracy"].items():
        task = evaluation.split("-")[0]
        means = {arm: cell["mean"] for arm, cell in row.items() if cell.get("mean") is not None}
        if not means or task not in results["floors"]:
            continue
        best = max(means, key=means.get)
        value = 100 * means[best]
        below = [f"{name} {floor}" for name, floor in results["floors"][task].items() if value < floor]
        cleared = [f"{name} {floor}" for name, floor in results["floors"][task].items() if value >= floor]
        out.append(f"{evaluation}: best arm {best} {value:.2f} % — "
                   + (f"**below** {', '.join(below)}" if below else "")
                   + ("; " if below and cleared else "") + (f"above {', '.join(cleared)}" if cleared else "")
                   + ("" if evaluation != "composer-cv" else " (5-fold CV over all 411 pieces, not the 37-piece "
                      "test split of the floor)") + ".")
    return out


def verdicts(results: dict) -> list[str]:
    return [verdict(c) for c in results["comparisons"]] + floor_sentences(results)


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = ["# The method study (CPU)", "",
             "<!-- generated by research/run_study.py from results/study-cpu.json; do not edit by hand -->", "",
             f"Command: `{results['command']}` (`WORK_DIR` is the `--work_dir` of the runs; "
             f"commit `{results['commit'][:10]}`, {results['date']}). "
             + ("All runs finished." if results["complete"] else "**Partial: some runs have not finished yet**; "
                "the missing cells say so."), "",
             f"Set-up: preset `{settings['preset']}`, segments of {settings['max_seq_len']} rows, "
             f"{settings['train_segments']} training segments per epoch ({settings['pretrain_files']} pieces of the "
             f"`pretrain` recipe), batch {settings['batch_size']}, learning rate {settings['learning_rate']} "
             f"(linear decay, 5 % warm-up), pre-training flags `{settings['pretrain_args']}`.", "",
             *[f"- {note}" for note in settings.get("note", [])], *([""] if settings.get("note") else []),
             "## Arms", "",
             "Step cost: the benchmark's median step time and counted FLOPs per token relative to a random step, "
             f"from one run of `{results.get('step_cost_benchmark')}`; the runs' own wall times are shown too but "
             "were taken while other jobs shared the two cores.", "",
             "| arm | seeds | steps | freezing passes | attribute-weight updates | masked share | step cost vs random: "
             "benchmark time / FLOPs / runs' wall time | frozen at the end | masker Spearman pooled / within | "
             "validation loss (random 15 %) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, a in results["arms"].items():
        spearman = ("–" if a.get("eval_masker_spearman") is None else
                    f"{_num(a['eval_masker_spearman'], '.2f')} / {_num(a.get('eval_masker_spearman_within'), '.2f')}")
        lines.append(f"| {arm} | {len(a['seeds'])} | {a['pretrain_steps']} | {_num(a.get('freezing_passes'), '.0f')} | "
                     f"{_num(a.get('attribute_weight_updates'), '.0f')} | {_pct(a.get('masked_share'))} % | "
                     f"{_num(a.get('step_cost_ratio'), '.2f')} / {_num(a.get('step_flop_ratio'), '.2f')} / "
                     f"{_num(a.get('wall_step_cost_ratio'), '.2f')} | {_pct(a.get('frozen_fraction'))} % | {spearman} "
                     f"| {_num(a.get('eval_loss'), '.3f')} |")
    lines += ["", "## Accuracy (%, mean ± std over seeds)", "",
              "| evaluation | " + " | ".join(results["arms"]) + " |", "|---|" + "---|" * len(results["arms"])]
    for evaluation, row in results["accuracy"].items():
        cells = []
        for arm in results["arms"]:
            c = row.get(arm, {})
            cells.append("–" if c.get("mean") is None else
                         f"{100 * c['mean']:.2f}" + ("" if c.get("std") is None else f" ± {100 * c['std']:.2f}")
                         + f" ({c['seeds']})")
        lines.append(f"| {evaluation} | " + " | ".join(cells) + " |")
    lines += ["", "## Comparisons (points; paired two-level 95 % bootstrap over pieces and seeds)", "",
              "| evaluation | comparison | difference | 95 % interval | excludes 0 | minimum detectable effect |",
              "|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        if c["difference"] is None:
            lines.append(f"| {c['evaluation']} | {c['a']} − {c['b']} | {c['status']} | | | |")
            continue
        lines.append(f"| {c['evaluation']} | {c['a']} − {c['b']} | {100 * c['difference']:+.2f} | "
                     f"[{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}] | "
                     f"{'**yes**' if c['excludes_zero'] else 'no'} | {100 * c['mde']:.2f} |")
    lines += ["", "## Reading (generated from the comparisons)", ""] + [f"- {sentence}"
                                                                        for sentence in verdicts(results)]
    lines += ["", "## Floors of the data README (test accuracy %)", "",
              "The probes and the low-resource fine-tuning are sharp, cheap evaluations of the encoders, not attempts "
              "at the floors; they are listed beside them as the brief asks.", ""]
    for task, floors in results["floors"].items():
        lines.append(f"- {task}: " + ", ".join(f"{k} {v}" for k, v in floors.items()))
    return "\n".join(lines) + "\n"


def main(argv=None):
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    args = parse_args(argv)
    if args.probe_model:
        run_probes(args)
        return
    command = command_line("python -m research.run_study", argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.work_dir, jobs=args.jobs, threads_per_job=1)
    commands_path = args.work_dir / "commands.json"

    def keep_commands():
        merged = {**commands_of(args), **runner.commands}
        atomic_write_json(commands_path, merged)

    stages = {"data": data_stage, "pretrain": pretrain_stage, "probe": probe_stage, "finetune": finetune_stage}
    for name in ("data", "pretrain", "probe", "finetune"):
        if name in args.stages:
            if name != "data" and args.data_root is None and not (args.work_dir / "data").is_dir():
                raise SystemExit("--data_root (or ADV_MIDIBERT_DATA) is needed to build the data sets")
            stages[name](args, runner)
            keep_commands()
    if "report" in args.stages:
        results = report(args, command)
        results_file = Path(args.results_file or args.work_dir / "study.json")
        results_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(results_file, results)
        if args.docs:
            Path(args.docs).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(args.docs), markdown(results))
        logger.info("results: %s (complete: %s)", results_file, results["complete"])
    if runner.failures:
        logger.error("failed runs: %s", "; ".join(runner.failures))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
