#!/usr/bin/env python
"""The quality runs: fine-tune a pre-trained model on the paper's tasks, score it as the field does, set it beside the
floors and the papers, and measure what pre-training and mask fine-tuning add.

Every task's data set (``--dataset NAME=FOLDER``, written by ``examples/prepare_data.py``) is fine-tuned with one
recipe: at most ``--max_epochs`` epochs with early stopping on the validation accuracy (``--patience`` evaluations, the
best epoch's weights restored before the test), pitch shift on the tasks that allow it
(:data:`adversarial_midibert.tasks.TASKS`), and a learning rate chosen on validation for each task and initialisation.
The runs, in the order they are queued (the CPU may stop anywhere; the report says what is missing):

1. the learning-rate trials: every task, seed 0, the first mask ratio, every rate of ``--learning_rates`` from the
   pre-trained model and from scratch; each task and initialisation then keeps the rate with the best validation
   accuracy (a trial that has not run counts as not chosen; none run: the first rate); the chosen rate's trial is
   that arm's seed-0 run;
2. for each seed of ``--seeds``: every task from the pre-trained model (``--pretrained``) and from scratch (the
   ``--scratch_args`` initialisation, same architecture), with the first mask fine-tuning ratio of ``--mask_ratios``;
3. then the other ratios of ``--mask_ratios``, from the pre-trained model, for every seed and task.

A seed fixes the fine-tuning seed (``100 + seed``) of every arm, so the arms are paired by seed. The recipe's mask
ratio is the one with the best seed-mean validation accuracy of the pre-trained runs; the floors are judged on it.
Comparisons, each with a paired two-level bootstrap over test pieces and seeds and a seed-paired t interval (as the
method study's, :func:`research.run_study.compare`): pre-trained − scratch at the first ratio, and each ratio − ratio
0 (mask fine-tuning against none) when 0 is among the ratios. Sequence tasks are scored per piece (the segments'
probabilities averaged) and per segment, token tasks per note; every run also reports its macro-F1.

Every run checkpoints each epoch and resumes when started again; a finished run (``all_results.json``) is skipped and
its checkpoints dropped. ``--run_records DIR`` (a folder of the repository, committed as runs finish) keeps each
finished run's figures and test pieces, so that a lost work folder (another machine) loses no finished run: a run
whose folder is gone is read from its record, and not run again, when the record was made by the command this
invocation would run and, from the pre-trained model, by the same weights (their SHA-256).
``--stages report`` writes ``--results_file`` and ``--docs`` from what is finished; ``--stages
publish`` rewrites each task's best model card and shows with ``push --dry_run`` what would be published; ``--stages
docs`` rewrites the page and its figure from the results file alone. Example (one thread, the work folder outside the
repository)::

    OMP_NUM_THREADS=1 python -m research.quality --pretrained ../runs/q28/out --dataset composer=../runs/q28/data-c \\
        --dataset melody=../runs/q28/data-m --work_dir ../runs/quality --results_file results/quality-cpu.json \\
        --docs docs/quality.md
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from adversarial_midibert.atomic_io import atomic_write_json, atomic_write_text, file_sha256
from adversarial_midibert.checkpointing import latest_checkpoint
from adversarial_midibert.command_line import command_line
from adversarial_midibert.confidence_intervals import bootstrap_accuracy, bootstrap_macro_f1, stack_piece_counts
from adversarial_midibert.evaluation import PieceResults
from adversarial_midibert.tasks import MIDIBERT_PIANO_ACCURACY, PAPER_ACCURACY, TASKS
from research.run_ablation import FLOORS, Runner, _drop_checkpoints, portable_command, read_json
from research.run_study import _jsonl, _pct, compare, portable_paths, verdict

logger = logging.getLogger("quality")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STAGES = ("finetune", "report", "publish", "docs")
INITS = ("pretrained", "scratch")
# The accuracy a floor is stated at (the data README): per piece for the piece-level tasks, per note for the others.
FLOOR_LEVEL = {"sequence": "piece", "token": "note"}
LEVEL_KEYS = {"piece": "test_piece_accuracy", "segment": "test_accuracy", "note": "test_accuracy"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrained", required=True, help="the pre-trained model folder (AdvMidiBertForMaskedLM)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=FOLDER",
                   help="a task's data set folder (repeatable); NAME is how the results name it (emotion-song...)")
    p.add_argument("--work_dir", required=True, help="the runs and their logs (outside the repository)")
    p.add_argument("--stages", default="finetune,report", help=f"some of {', '.join(STAGES)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--mask_ratios", default="0.3,0.15,0",
                   help="mask fine-tuning ratios; the first is the one pre-trained and scratch are compared at")
    p.add_argument("--learning_rates", default="5e-4,1e-4",
                   help="the candidates of the learning-rate trials (the first is also the fallback)")
    p.add_argument("--max_epochs", type=int, default=10)
    p.add_argument("--patience", type=int, default=3, help="early stopping: evaluations without a better accuracy")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--scratch_args", default="--preset small --config_overrides max_position_embeddings=512",
                   help="the from-scratch initialisation: the pre-trained model's architecture")
    p.add_argument("--finetune_args", default="", help="flags added to every fine-tuning")
    p.add_argument("--jobs", type=int, default=1, help="fine-tunings at once, one thread each")
    p.add_argument("--inits", default=",".join(INITS),
                   help="finetune stage: the initialisations this invocation runs (e.g. scratch while the pre-training "
                        "still runs); the report reads every finished run")
    p.add_argument("--bootstrap_resamples", type=int, default=2000)
    p.add_argument("--assumed_mfu", type=float, default=0.2,
                   help="share of an H100's dense bf16 peak assumed for the on-paper GPU cost (never measured here)")
    p.add_argument("--results_file", default=None, help="default: WORK_DIR/quality.json")
    p.add_argument("--docs", default=None, help="write the generated markdown page here")
    p.add_argument("--note", action="append", default=[], help="a sentence for the page's set-up (repeatable)")
    p.add_argument("--floors_file", default=None,
                   help="report stage: a floors results file (results/floors-cpu.json) whose verdict is rewritten from "
                        "the finished tasks (the other entries kept)")
    p.add_argument("--run_records", default=None,
                   help="a folder keeping each finished run's figures and test pieces (commit it as runs finish): a "
                        "run whose folder is gone is read from it and not run again")
    p.add_argument("--hub_namespace", default="adversarial-midibert",
                   help="publish stage: each task's model is shown as NAMESPACE/adv-midibert-small-TASK")
    args = p.parse_args(argv)
    args.datasets = {}
    for item in args.dataset:
        name, sep, folder = item.partition("=")
        if not sep or not name or not (Path(folder) / "task_info.json").is_file():
            p.error(f"--dataset {item!r}: expected NAME=FOLDER, a folder written by examples/prepare_data.py")
        args.datasets[name] = Path(folder)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.learning_rates = [float(r) for r in args.learning_rates.split(",")]
    args.rates = {(name, init): args.learning_rates[0] for name in args.datasets for init in INITS}  # until chosen
    args.mask_ratios = [float(r) for r in args.mask_ratios.split(",")]
    args.stages = args.stages.split(",")
    args.inits = args.inits.split(",")
    if set(args.inits) - set(INITS) or not args.inits:
        p.error(f"--inits {','.join(args.inits)!r}: some of {', '.join(INITS)}")
    if set(args.stages) - set(STAGES):
        p.error(f"--stages: unknown {sorted(set(args.stages) - set(STAGES))}; known: {', '.join(STAGES)}")
    if "finetune" in args.stages and not args.datasets:
        p.error("--dataset NAME=FOLDER is needed to fine-tune")
    args.work_dir = Path(args.work_dir)
    args.run_records = None if args.run_records is None else Path(args.run_records)
    weights = Path(args.pretrained) / "model.safetensors"  # a pre-trained run's record keeps its SHA-256
    args.pretrained_sha256 = file_sha256(weights) if weights.is_file() else None
    return args


def task_info(args, name: str) -> dict:
    return read_json(args.datasets[name] / "task_info.json")


def run_folder(args, name: str, init: str, ratio: float, seed: int, lr: float | None = None) -> Path:
    """A run's folder; ``lr`` defaults to the rate chosen for the task and ``init`` (``args.rates``)."""
    lr = args.rates[name, init] if lr is None else lr
    return args.work_dir / name / f"{init}-lr{lr:g}-mask{ratio:g}" / f"seed{seed}"


def run_name(name: str, init: str, ratio: float, seed: int, lr: float) -> str:
    return f"{name}-{init}-lr{lr:g}-mask{ratio:g}-seed{seed}"


def portable(args, value):
    """``value`` with this machine's folders written WORK_DIR, PRETRAINED and DATA_<name> (results and records)."""
    value = portable_paths(value, args.work_dir)
    folders = [("PRETRAINED", Path(args.pretrained))] + [(f"DATA_{name}", f) for name, f in args.datasets.items()]
    for placeholder, folder in sorted(folders, key=lambda item: -len(str(item[1]))):  # longest first: no prefix clash
        value = portable_paths(value, folder, placeholder)
    return value


def record_command(args, name: str, init: str, ratio: float, seed: int, lr: float) -> str:
    """The run's command as its record keeps it: portable, and without the resume flag (a resumed run is the same)."""
    command = [part for part in finetune_command(args, name, init, ratio, seed, lr)
               if part not in ("--resume_from_checkpoint", "latest")]
    return portable_command(portable(args, shlex.join(command)))


def write_record(args, name: str, init: str, ratio: float, seed: int, lr: float) -> None:
    """Keep a finished run's figures, validation curve and test pieces in ``--run_records`` (nothing without it)."""
    if args.run_records is None:
        return
    import torch  # the machine a record was made on: its CPU's vector extensions

    folder = run_folder(args, name, init, ratio, seed, lr)
    if not (folder / "test_piece_results.json").is_file():
        logger.warning("%s: no test_piece_results.json, so no record: the report reads the folder", folder)
        return
    results = read_json(folder / "all_results.json")
    record = {"run": run_name(name, init, ratio, seed, lr),
              "command": record_command(args, name, init, ratio, seed, lr),
              "pretrained_sha256": args.pretrained_sha256 if init == "pretrained" else None,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "all_results": portable(args, {**{k: results.get(k) for k in RUN_KEYS},
                                             "history": validation_curve(results)}),
              "test_piece_results": read_json(folder / "test_piece_results.json")}
    args.run_records.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.run_records / f"{record['run']}.json", record)


def finished_run(args, name: str, init: str, ratio: float, seed: int, lr: float | None = None) -> tuple | None:
    """A finished run's ``(all_results, test piece records or None)``: from its folder, else from its record when the
    record was made by the command this invocation would run (and from these pre-trained weights); else None."""
    lr = args.rates[name, init] if lr is None else lr
    folder = run_folder(args, name, init, ratio, seed, lr)
    if (folder / "all_results.json").is_file():
        pieces = folder / "test_piece_results.json"
        return read_json(folder / "all_results.json"), read_json(pieces) if pieces.is_file() else None
    path = None if args.run_records is None else args.run_records / f"{run_name(name, init, ratio, seed, lr)}.json"
    if path is None or not path.is_file():
        return None
    record = read_json(path)
    if record["command"] != record_command(args, name, init, ratio, seed, lr) or (
            init == "pretrained" and record["pretrained_sha256"] != args.pretrained_sha256):
        logger.warning("%s: made by another command or pre-trained model than this invocation's: not used", path)
        return None
    return record["all_results"], record["test_piece_results"]


def lr_trials(args) -> list[tuple[str, str, float, int, float]]:
    """``(dataset name, init, mask ratio, seed, learning rate)`` of the learning-rate trials."""
    return [(name, init, args.mask_ratios[0], 0, lr) for name in args.datasets for lr in args.learning_rates
            for init in INITS]


def choose_learning_rates(args) -> list[dict]:
    """Set ``args.rates`` (per task and init, the trial rate with the best validation accuracy; ties to the earlier
    candidate); return the trials' figures."""
    trials = []
    for name, init, ratio, seed, lr in lr_trials(args):
        found = finished_run(args, name, init, ratio, seed, lr)
        trials.append({"task": name, "init": init, "learning_rate": lr,
                       "eval_accuracy": None if found is None else found[0].get("eval_accuracy")})
    for arm in args.rates:
        done = [(t["eval_accuracy"], -args.learning_rates.index(t["learning_rate"]), t["learning_rate"])
                for t in trials if (t["task"], t["init"]) == arm and t["eval_accuracy"] is not None]
        args.rates[arm] = max(done)[2] if done else args.learning_rates[0]
    return trials


def queue(args) -> list[tuple[str, str, float, int]]:
    """``(dataset name, init, mask ratio, seed)`` of every run after the trials, in the order they run (each at its
    init's chosen rate): task by task in ``--dataset`` order, so that a budget that stops mid-queue leaves whole tasks
    answered (list the cheapest first), and within a task seed by seed over every arm, so that it leaves whole pairs."""
    first, others = args.mask_ratios[0], args.mask_ratios[1:]
    arms = [(init, first) for init in INITS] + [("pretrained", ratio) for ratio in others]
    return [(name, init, ratio, seed) for name in args.datasets for seed in args.seeds for init, ratio in arms]


def finetune_command(args, name: str, init: str, ratio: float, seed: int, lr: float | None = None) -> list[str]:
    lr = args.rates[name, init] if lr is None else lr
    output = run_folder(args, name, init, ratio, seed, lr)
    start = ["--model_name_or_path", str(args.pretrained)] if init == "pretrained" else [
        "--from_scratch", *shlex.split(args.scratch_args)]
    command = [sys.executable, str(EXAMPLES / "finetune.py"), "--dataset", str(args.datasets[name]), *start,
               "--learning_rate", f"{lr:g}", "--num_train_epochs", str(args.max_epochs),
               "--early_stopping_patience", str(args.patience), "--metric_for_best_model", "accuracy",
               "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size",
               str(2 * args.batch_size), "--mask_ratio", f"{ratio:g}", "--seed", str(100 + seed),
               "--checkpointing_steps", "epoch", "--checkpoints_total_limit", "1", "--output_dir", str(output)]
    if TASKS[task_info(args, name)["task"]]["pitch_shift"]:
        command.append("--pitch_shift")
    if latest_checkpoint(output) is not None:
        command += ["--resume_from_checkpoint", "latest"]
    return command + shlex.split(args.finetune_args)


def pending(args, runs) -> list[tuple[str, list[str], object]]:
    """The runner's ``(name, command, on_success)`` of the ``(name, init, ratio, seed, lr)`` runs not finished yet."""
    return [(run_name(*run), finetune_command(args, *run), _on_success(args, run)) for run in runs
            if finished_run(args, *run) is None]


def _on_success(args, run: tuple):
    """A finished run: keep its record, then drop its checkpoints."""
    drop = _drop_checkpoints(run_folder(args, *run))

    def keep_and_drop():
        write_record(args, *run)
        drop()
    return keep_and_drop


def finetune_stage(args, runner: Runner) -> None:
    """The learning-rate trials, then the queue with each init at its chosen rate; finished runs skipped, and the
    runs of an init not in ``--inits`` left to another invocation."""
    runner.run_all(pending(args, [run for run in lr_trials(args) if run[1] in args.inits]))
    choose_learning_rates(args)
    logger.info("learning rates chosen on validation: %s", args.rates)
    runner.run_all(pending(args, [(*run, args.rates[run[:2]]) for run in queue(args) if run[1] in args.inits]))


# ----------------------------------------------------------------------------------------------------- report
RUN_KEYS = ("test_accuracy", "test_f1_macro", "test_piece_accuracy", "test_piece_f1_macro", "eval_accuracy",
            "eval_piece_accuracy", "epoch", "epochs_run", "train_steps", "train_runtime", "num_train_segments",
            "test_num_pieces", "command")


def validation_curve(results: dict) -> list[dict]:
    """A run's validation accuracy by epoch, from its ``all_results.json`` history."""
    return [{"epoch": row["epoch"], "eval_accuracy": row["eval_accuracy"]}
            for row in results.get("history", []) if "eval_accuracy" in row]


def cell(args, name: str, init: str, ratio: float, task_type: str) -> dict:
    """The finished seeds of one (task, init, ratio): per-run figures, seed means, and per-level piece counts."""
    runs, pieces = [], []
    for seed in args.seeds:
        found = finished_run(args, name, init, ratio, seed)
        if found is None:
            continue
        results, piece_records = found
        runs.append({"seed": seed, **{k: results.get(k) for k in RUN_KEYS}, "curve": validation_curve(results)})
        pieces.append(PieceResults.from_records(piece_records))
    out = {"seeds": [r["seed"] for r in runs], "runs": runs, "levels": {}}
    for key in ("test_accuracy", "test_f1_macro", "test_piece_accuracy", "test_piece_f1_macro", "eval_accuracy"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    for level in (("piece", "segment") if task_type == "sequence" else ("note",)):
        if not runs:
            continue
        correct, total, order = stack_piece_counts(pieces, level)
        interval = bootstrap_accuracy(correct, total, n_resamples=args.bootstrap_resamples)
        out["levels"][level] = {"accuracy": interval.estimate, "ci95": [interval.low, interval.high],
                                "accuracies": [float(c.sum() / t.sum()) for c, t in zip(correct, total)],
                                "correct": correct, "total": total, "order": order,
                                **macro_f1(args, pieces, level, order)}
    return out


def macro_f1(args, pieces: list[PieceResults], level: str, order: list[str]) -> dict:
    """The seed-mean macro-F1 at a level and its bootstrap interval over pieces (and seeds), from per-piece confusion
    counts: a piece's label and prediction (per piece), its notes' (per note); none per segment (not recorded)."""
    confusions = []
    for run in pieces:
        rows = [run.piece_ids.index(piece) for piece in order]
        if level == "piece":
            size = run.probabilities.shape[1]
            confusion = np.zeros((len(rows), size, size))
            confusion[np.arange(len(rows)), run.labels[rows], run.predictions[rows]] = 1
        elif level == "note" and run.confusion is not None:
            confusion = run.confusion[rows]
        else:
            return {}
        confusions.append(confusion)
    interval = bootstrap_macro_f1(np.stack(confusions), n_resamples=args.bootstrap_resamples)
    return {"f1_macro": interval.estimate, "f1_macro_ci95": [interval.low, interval.high]}


def chosen_ratio(args, cells: dict) -> float | None:
    """The recipe's mask ratio: the best seed-mean validation accuracy of the pre-trained runs (all seeds finished
    first; a ratio with fewer seeds is chosen only when none has them all)."""
    candidates = [(len(c["seeds"]) == len(args.seeds), c["eval_accuracy"], ratio)
                  for (init, ratio), c in cells.items() if init == "pretrained" and c["eval_accuracy"] is not None]
    return max(candidates)[2] if candidates else None


def paired(args, a: dict, b: dict, level: str) -> dict:
    """A − b on one level over the seeds both finished (the method study's intervals)."""
    seeds = [s for s in a["seeds"] if s in b["seeds"]]
    if not seeds or level not in a["levels"] or level not in b["levels"]:
        return {"difference": None, "seeds_paired": seeds}

    def side(c):
        rows = [c["seeds"].index(s) for s in seeds]
        entry = c["levels"][level]
        return {"seeds": seeds, "correct": [entry["correct"][i] for i in rows],
                "total": [entry["total"][i] for i in rows], "accuracies": [entry["accuracies"][i] for i in rows],
                "order": entry["order"]}

    return compare(args, level, side(a), side(b))


def epoch_cost(args, info: dict, cells: dict) -> dict | None:
    """One fine-tuning epoch of a task: tokens (segments x rows, padding included), the step's FLOPs per token counted
    on the meta device for the fine-tuned architecture (:func:`fine_tuned_config`) and for the paper's (base preset) at
    the same length, the CPU minutes the runs took (one thread) and those minutes scaled by FLOPs to the base preset (an
    estimate: a larger model may run its matrix products a little faster per FLOP), and on paper the seconds on one
    H100 at ``--assumed_mfu`` of its bf16 peak.
    The FLOPs are those of a one-pass masked-LM step (the encoder's forward and backward; the heads differ by a few
    percent)."""
    from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
    from adversarial_midibert.presets import preset_config_kwargs
    from benchmarks.pretrain_step import PEAK_BF16_TFLOPS
    from benchmarks.profiling import step_flops_per_token

    runs = [run for c in cells.values() for run in c["runs"] if run.get("num_train_segments")]
    if not runs:
        return None
    seq_len = int(info["tokenizer"]["max_seq_len"])
    tokens = runs[0]["num_train_segments"] * seq_len
    small = step_flops_per_token(fine_tuned_config(args), seq_len, "random")
    base = step_flops_per_token(AdvMidiBertConfig(**{**preset_config_kwargs("base"),
                                                     "max_position_embeddings": max(seq_len, 1024)}), seq_len, "random")
    peak = PEAK_BF16_TFLOPS["H100"] * 1e12 * args.assumed_mfu
    cpu_minutes = float(np.mean([r["train_runtime"] / max(r["epochs_run"], 1) / 60 for r in runs]))
    return {"tokens": tokens, "seq_len": seq_len, "flops_per_token": small, "base_flops_per_token": base,
            "cpu_minutes": cpu_minutes, "base_cpu_minutes_flop_scaled": cpu_minutes * base / small,
            "h100_seconds_on_paper": tokens * small / peak, "base_h100_seconds_on_paper": tokens * base / peak,
            "assumed_mfu": args.assumed_mfu}


def fine_tuned_config(args):
    """The architecture every arm fine-tunes: the pre-trained model's config or, without that folder (the
    pre-training not finished, or lost with a machine), the scratch arm's, built from ``--scratch_args`` as
    examples/finetune.py builds it."""
    from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
    from adversarial_midibert.presets import preset_config_kwargs
    from adversarial_midibert.training import finetune

    if (Path(args.pretrained) / "config.json").is_file():
        return AdvMidiBertConfig.from_pretrained(args.pretrained)
    scratch = finetune.parse_args(["--dataset", "-", "--output_dir", "-", "--from_scratch",
                                   *shlex.split(args.scratch_args)])
    return AdvMidiBertConfig(**preset_config_kwargs(scratch.preset, scratch.config_overrides))


def floors_cleared(level: dict | None, floors: dict) -> dict:
    """Each floor (percent) and whether the cell's accuracy at the floor's level is above it (None: no figure)."""
    return {floor: None if level is None else bool(100 * level["accuracy"] > value) for floor, value in floors.items()}


def task_report(args, name: str, info: dict) -> dict:
    task, task_type = info["task"], info["task_type"]
    cells = {(init, ratio): cell(args, name, init, ratio, task_type) for init in INITS
             for ratio in args.mask_ratios if init == "pretrained" or ratio == args.mask_ratios[0]}
    levels = ("piece", "segment") if task_type == "sequence" else ("note",)
    comparisons = []
    pairs = [("pretrained", args.mask_ratios[0], "scratch", args.mask_ratios[0])]
    pairs += [("pretrained", r, "pretrained", 0.0) for r in args.mask_ratios if r != 0.0 and 0.0 in args.mask_ratios]
    for init_a, ratio_a, init_b, ratio_b in pairs:
        for level in levels:
            result = paired(args, cells[init_a, ratio_a], cells[init_b, ratio_b], level)
            comparisons.append({"a": f"{init_a} mask {ratio_a:g}", "b": f"{init_b} mask {ratio_b:g}",
                                "evaluation": f"{name} per {level}", "primary": False, **result,
                                "status": "not run yet"})
    ratio = chosen_ratio(args, cells)
    floor_level = FLOOR_LEVEL[task_type]
    recipe = cells.get(("pretrained", ratio))
    best = recipe["levels"].get(floor_level) if recipe else None
    floors = FLOORS.get(task, {})
    return {
        "task": task, "task_type": task_type, "dataset": str(args.datasets.get(name, "")),
        "label_names": info.get("label_names"), "chosen_mask_ratio": ratio, "floor_level": floor_level,
        "floors": floors, "paper": PAPER_ACCURACY.get(task), "midibert_piano": MIDIBERT_PIANO_ACCURACY.get(task),
        "recipe_accuracy": None if best is None else best["accuracy"],
        "recipe_ci95": None if best is None else best["ci95"],
        "recipe_f1_macro": None if best is None else best.get("f1_macro"),
        "recipe_f1_macro_ci95": None if best is None else best.get("f1_macro_ci95"),
        "floors_cleared": floors_cleared(best, floors),
        "cells": {f"{init} mask {r:g}": {k: v for k, v in c.items() if k != "levels"}
                  | {"levels": {lv: {k: e[k] for k in ("accuracy", "ci95", "accuracies", "f1_macro", "f1_macro_ci95")
                                     if k in e} for lv, e in c["levels"].items()}} for (init, r), c in cells.items()},
        "comparisons": comparisons,
        "epoch_cost": epoch_cost(args, info, cells),
    }


def pretraining_summary(folder: Path, window: int = 50) -> dict:
    """The pre-trained model's run: its validation log (the yardstick loss) and its training loss as means over
    ``window`` logged steps (``[last step, mean]``), for the page's curve."""
    results = read_json(folder / "all_results.json") if (folder / "all_results.json").is_file() else {}
    train = [row for row in _jsonl(folder / "train_log.jsonl") if row.get("loss") is not None]
    windows = [train[i:i + window] for i in range(0, len(train), window)]
    return {"folder": str(folder), "train_steps": results.get("train_steps"), "eval_loss": results.get("eval_loss"),
            "eval_log": [{k: row.get(k) for k in ("step", "eval_loss", "eval_accuracy")}
                         for row in _jsonl(folder / "eval_log.jsonl")],
            "train_loss_means": [[rows[-1]["step"], float(np.mean([row["loss"] for row in rows]))] for rows in windows]}


def report(args, command: str) -> dict:
    trials = choose_learning_rates(args)
    tasks = {name: task_report(args, name, task_info(args, name)) for name in args.datasets}
    runs = {run_folder(args, *run): run for run in [*lr_trials(args), *[(*r, args.rates[r[:2]]) for r in queue(args)]]}
    for folder, run in runs.items():  # runs finished before their records were kept
        if (folder / "all_results.json").is_file():
            write_record(args, *run)
    expected = len(runs)
    unfinished = [(run[0], folder) for folder, run in runs.items() if finished_run(args, *run) is None]
    finished = expected - len(unfinished)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=EXAMPLES, capture_output=True, text=True).stdout.strip()
    results = {"description": "fine-tuning of the CPU pre-trained model on the paper's tasks against the floors",
               "complete": finished == expected, "runs_finished": finished, "runs_expected": expected,
               "cpu_left": cpu_left(args, tasks, unfinished),
               "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                               if k not in ("dataset", "datasets", "rates")},  # the rates: learning_rates below
                            "datasets": {name: str(folder) for name, folder in args.datasets.items()}},
               "learning_rates": {"candidates": args.learning_rates, "trials": trials,
                                  "chosen": {name: {init: args.rates[name, init] for init in INITS}
                                             for name in args.datasets}},
               "pretraining": pretraining_summary(Path(args.pretrained)), "tasks": tasks, "commit": commit,
               "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return portable(args, results)


def padded_rows_per_epoch(data_dir: Path, batch_size: int) -> float | None:
    """The rows one training epoch computes: a shuffled batch is padded to its longest segment only, so the segments
    times the expected longest of ``batch_size`` segments drawn without replacement (the order statistic over the
    split's segment lengths: the k-th shortest is the longest with probability C(k-1, b-1) / C(n, b)). None without
    a data set on disk."""
    import datasets
    import pyarrow.compute as pc

    try:
        train = datasets.load_from_disk(str(data_dir))["train"]
    except FileNotFoundError:
        return None
    lengths = np.sort(pc.list_value_length(train.data.column("attention_mask")).to_numpy())
    n, b = len(lengths), min(batch_size, len(lengths))
    longest = np.array([math.comb(k - 1, b - 1) for k in range(1, n + 1)], dtype=float) / math.comb(n, b)
    return n * float(longest @ lengths)  # n / b batches of b segments


def cpu_left(args, tasks: dict, unfinished: list[tuple[str, Path]]) -> dict | None:
    """What the unfinished runs still need at this machine's pace: the CPU-minutes per training row and epoch of the
    finished runs (pooled), times each task's rows per epoch (:func:`padded_rows_per_epoch`: a task of short
    segments, EMOPIA's clips, costs less per segment than one of full ones, POP909's), times each run's epochs left:
    the finished runs' mean epochs (or the ``--max_epochs`` cap) less those its latest epoch checkpoint holds; and
    what one whole run of each task needs at the mean epochs. None before a run of a task with a size has finished."""
    rows = {name: size for name in tasks
            if (size := padded_rows_per_epoch(args.datasets[name], args.batch_size)) is not None}
    finished = [(name, run) for name, task in tasks.items() for c in task["cells"].values() for run in c["runs"]
                if run.get("train_runtime") and run.get("epochs_run")]
    sized = [run["train_runtime"] / 60 / run["epochs_run"] / rows[name] for name, run in finished if name in rows]
    if not sized:
        return None
    pace, mean_epochs = float(np.mean(sized)), float(np.mean([run["epochs_run"] for _, run in finished]))
    minutes = {"mean": 0.0, "cap": 0.0}
    for name, folder in unfinished:
        if name not in rows:
            continue
        checkpoint = latest_checkpoint(folder, verify_content=False)  # epoch_E holds epochs 0..E
        done = int(checkpoint.name.rpartition("_")[2]) + 1 if checkpoint and checkpoint.name.startswith("epoch_") else 0
        minutes["mean"] += max(mean_epochs - done, 0) * rows[name] * pace
        minutes["cap"] += max(args.max_epochs - done, 0) * rows[name] * pace
    return {"runs_left": len(unfinished), "cpu_minutes_per_row_epoch": pace, "mean_epochs_run": mean_epochs,
            "core_hours_at_mean_epochs": minutes["mean"] / 60, "core_hours_at_epoch_cap": minutes["cap"] / 60,
            "run_core_hours_at_mean_epochs": {name: mean_epochs * n * pace / 60 for name, n in rows.items()},
            "tasks_without_size": sorted({name for name, _ in unfinished} - set(rows))}


def update_floors_verdict(path: Path, results: dict, source: str) -> dict:
    """Rewrite the ``verdict`` of a floors results file from the tasks with a recipe figure (the rest of the file kept,
    the tasks not finished here kept as they were); return the new verdict."""
    floors = read_json(path)
    verdict = dict(floors.get("verdict", {}))
    for name, task in results["tasks"].items():
        if task["recipe_accuracy"] is not None:
            verdict[name] = {"metric": LEVEL_KEYS[task["floor_level"]],
                             "value_pct": round(100 * task["recipe_accuracy"], 2),
                             "ci95_pct": [round(100 * v, 2) for v in task["recipe_ci95"]],
                             "clears": task["floors_cleared"],
                             "source": f"{source}: pre-trained, the recipe chosen on validation, mean over its seeds"}
    floors["verdict"] = verdict
    atomic_write_json(path, floors)
    return verdict


def publish_commands(args, results: dict) -> list[tuple[str, list[str], None]]:
    """For each task, its model a user can take (the recipe's run with the best validation accuracy): the model card
    rewritten from its results, then ``push --dry_run`` into ``WORK_DIR/publish/TASK`` (what would be published)."""
    runs = []
    for name, task in results["tasks"].items():
        ratio = task["chosen_mask_ratio"]
        if ratio is None:
            continue
        best = max(task["cells"][f"pretrained mask {ratio:g}"]["runs"], key=lambda run: run["eval_accuracy"])
        lr = results["learning_rates"]["chosen"][name]["pretrained"]
        folder = run_folder(args, name, "pretrained", ratio, best["seed"], lr)
        if not (folder / "all_results.json").is_file():
            logger.warning("%s: %s's best run is known from its record only (its folder is gone): nothing to publish",
                           folder, name)
            continue
        repo_id = f"{args.hub_namespace}/adv-midibert-small-{name}"
        cli = [sys.executable, "-m", "adversarial_midibert.cli"]
        split = task_info(args, name).get("split_source")  # runs older than their results' split_source
        runs.append((f"card-{name}", [*cli, "card", str(folder), "--repo_id", repo_id,
                                      *(["--hyperparameter", f"data split={split}"] if split else [])], None))
        runs.append((f"push-{name}", [*cli, "push", str(folder), "--repo_id", repo_id, "--dry_run",
                                      str(args.work_dir / "publish" / name)], None))
    return runs


# ----------------------------------------------------------------------------------------------------- the page
def markdown(results: dict, figure_name: str | None = None) -> str:
    settings = results["settings"]
    lines = ["# Quality on the paper's tasks (CPU)", "",
             "<!-- generated by research/quality.py from its results file; do not edit by hand -->", "",
             f"Command: `{results['command']}` (`WORK_DIR`, `PRETRAINED` and `DATA_<name>` stand for the folders "
             f"given to it; commit `{results['commit'][:10]}`, {results['date']}). "
             f"{results['runs_finished']} of {results['runs_expected']} runs finished"
             + ("." if results["complete"] else "; **partial**: missing cells say so." + _cpu_left_sentence(results)),
             "",
             f"Recipe: {_rates_sentence(results['learning_rates'])}; at most {settings['max_epochs']} epochs of batch "
             f"{settings['batch_size']} with early stopping on validation accuracy (patience {settings['patience']}, "
             f"the best epoch's weights tested), pitch shift on composer and emotion, mask fine-tuning ratio chosen on "
             f"validation among {settings['mask_ratios']}; seeds {settings['seeds']} (paired across arms). Scratch: "
             f"`{settings['scratch_args']}`, the same budget.", "",
             *[f"- {note}" for note in settings.get("note", [])], *([""] if settings.get("note") else []),
             "| task | majority | floor | MidiBERT-Piano | paper | pre-trained (recipe) | its macro-F1 | scratch "
             "| floor cleared |", "|---|---|---|---|---|---|---|---|---|"]
    for name, task in results["tasks"].items():
        floors = task["floors"]
        majority = floors.get("majority class")
        strongest = max(((v, k) for k, v in floors.items() if k != "majority class"), default=None)
        scratch = next((c for k, c in task["cells"].items() if k.startswith("scratch")), None)
        scratch_level = (scratch or {}).get("levels", {}).get(task["floor_level"])
        cleared = task["floors_cleared"].get(strongest[1]) if strongest else None
        lines.append(
            f"| {name} (per {task['floor_level']}) | {majority or '–'} | "
            f"{f'{strongest[0]} ({strongest[1]})' if strongest else '–'} | {task['midibert_piano'] or '–'} | "
            f"{task['paper'] or '–'} | {_pct(task['recipe_accuracy'], 2)} {_interval_abs(task['recipe_ci95'])}"
            f"{_ratio_note(task['chosen_mask_ratio'])} | {_pct(task['recipe_f1_macro'], 2)} "
            f"{_interval_abs(task['recipe_f1_macro_ci95'])} | "
            f"{_pct(scratch_level['accuracy'], 2) if scratch_level else '–'} | "
            f"{'–' if cleared is None else ('yes' if cleared else '**no**')} |")
    other_splits = [name for name, task in results["tasks"].items() if name != task["task"]]
    lines += ["", "Intervals: 95 % two-level bootstrap over test pieces and seeds. MidiBERT-Piano's composer figure "
              "is per segment: compare it with the per-segment column below."
              + "".join(f" {name}: the floors and published figures shown are {results['tasks'][name]['task']}'s, "
                        "on its usual split; the data README gives none for this split." for name in other_splits),
              "", "## Comparisons", "",
              f"{len(settings['seeds'])} fine-tuning seeds of one pre-trained model: the intervals describe this "
              "model's fine-tunings; they are not the 6 paired seeds, pre-training seeds included, that a claim that "
              "pre-training or a mask ratio helps in general needs.", ""]
    for task in results["tasks"].values():
        lines += [f"- {verdict(c)}" for c in task["comparisons"]]
    lines += ["", "## Every cell (seed means; validation accuracy chooses the mask ratio)", "",
              "| task | arm | seeds | val acc | test acc | test macro-F1 | piece acc | piece macro-F1 | epochs (best) "
              "|",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, task in results["tasks"].items():
        for arm, c in task["cells"].items():
            epochs = ", ".join(f"{r['epochs_run']} ({r['epoch'] + 1})" for r in c["runs"]) or "–"
            lines.append(f"| {name} | {arm} | {len(c['seeds'])} | {_pct(c['eval_accuracy'])} | "
                         f"{_pct(c['test_accuracy'])} | {_pct(c['test_f1_macro'])} | {_pct(c['test_piece_accuracy'])} "
                         f"| {_pct(c['test_piece_f1_macro'])} | {epochs} |")
    lines += ["", "## Cost and validation curves (where the CPU stops)", "",
              *([f"![validation accuracy by epoch]({figure_name})", ""] if figure_name else []),
              "Per epoch of each task: CPU minutes measured (one thread, wall time on a shared machine), and on paper "
              f"(never measured) the seconds on one H100 at {100 * settings['assumed_mfu']:.0f} % of its dense bf16 "
              "peak, for this model and for the paper's size (base preset), from FLOPs counted on the meta device.", ""]
    for name, task in results["tasks"].items():
        ratio, cost, cleared = task["chosen_mask_ratio"], task.get("epoch_cost"), task["floors_cleared"]
        runs = task["cells"][f"pretrained mask {ratio:g}"]["runs"] if ratio is not None else []
        arm = "pre-trained"
        if not runs:  # no pre-trained run (yet, or lost with a machine): the scratch arm's curve and floors
            scratch = next(c for key, c in task["cells"].items() if key.startswith("scratch"))
            runs, arm = scratch["runs"], "from scratch"
            cleared = floors_cleared(scratch["levels"].get(task["floor_level"]), task["floors"])
        if not runs or cost is None:
            lines.append(f"- {name}: no finished run yet.")
            continue
        curve = ", ".join(f"{100 * row['eval_accuracy']:.1f}" for row in runs[0]["curve"])
        lines.append(f"- {name}: {cost['tokens']:,} tokens per epoch, {cost['flops_per_token'] / 1e6:.0f} MFLOP per "
                     f"token ({cost['base_flops_per_token'] / 1e6:.0f} at the base preset): {cost['cpu_minutes']:.1f} "
                     f"CPU-minutes per epoch here (about {cost['base_cpu_minutes_flop_scaled']:.0f} at the base "
                     f"preset, scaled by FLOPs); on paper {cost['h100_seconds_on_paper']:.1f} H100-seconds "
                     f"({cost['base_h100_seconds_on_paper']:.0f} at the base preset). Validation accuracy by epoch, "
                     f"{arm} seed {runs[0]['seed']}: {curve}." + _stopping(cleared, runs, settings))
    pretraining = results["pretraining"]
    logged = pretraining["train_loss_means"][-1][0] if pretraining["train_loss_means"] else None
    steps = (f"{pretraining['train_steps']} steps" if pretraining["train_steps"] else
             f"under way, {logged} steps logged so far" if logged else "– steps")
    lines += ["", "## The pre-trained model", "",
              f"`{pretraining['folder']}`: {steps}; validation loss by step: "
              + (", ".join(f"{row['step']}: {row['eval_loss']:.3f}" for row in pretraining["eval_log"]
                           if row.get("eval_loss") is not None) or "–") + ".", ""]
    return "\n".join(lines)


def figure(results: dict, path: Path) -> None:
    """Validation accuracy by epoch of every finished run of each task's recipe, pre-trained and from scratch (the
    scratch runs at the first ratio), one panel per task; the last panel, the pre-training's losses by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    pretraining = results["pretraining"]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4 * (len(tasks) + 1), 3.4), squeeze=False)
    axis = axes[0][-1]  # the pre-training: training loss (window means) and the validation loss, the yardstick
    axis.plot(*zip(*pretraining.get("train_loss_means") or [(0, np.nan)]), color="C7", lw=1,
              label="training (attribute-weighted from the first evaluation)")
    axis.plot([row["step"] for row in pretraining["eval_log"]], [row["eval_loss"] for row in pretraining["eval_log"]],
              color="C3", marker="o", ms=4, label="validation")
    axis.set_title("pre-training loss", fontsize=9)
    if not pretraining["eval_log"] and not pretraining.get("train_loss_means"):
        axis.text(0.5, 0.5, "no pre-training log", ha="center", va="center", transform=axis.transAxes)
    axis.set_xlabel("step")
    axis.legend(fontsize=7)
    for axis, (name, task) in zip(axes[0], tasks.items()):
        ratio = task["chosen_mask_ratio"]
        for arm, color in ((f"pretrained mask {ratio:g}" if ratio is not None else None, "C0"),
                           (next((k for k in task["cells"] if k.startswith("scratch")), None), "C1")):
            for index, run in enumerate(task["cells"].get(arm, {}).get("runs", [])):
                epochs = [row["epoch"] + 1 for row in run["curve"]]
                axis.plot(epochs, [100 * row["eval_accuracy"] for row in run["curve"]], color=color, marker="o", ms=3,
                          label=arm if index == 0 else None)
        axis.set_title(f"{name} (validation accuracy, %)", fontsize=9)
        axis.set_xlabel("epoch")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
        else:  # said on the panel rather than left as empty axes (and no legend: matplotlib would warn)
            axis.text(0.5, 0.5, "no finished run yet", ha="center", va="center", transform=axis.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stopping(cleared: dict, runs: list[dict], settings: dict) -> str:
    """Why a floor these runs did not clear (``cleared``: see :func:`floors_cleared`) stayed out of reach at this
    budget: how they stopped."""
    if False not in cleared.values():
        return ""
    capped = [run for run in runs  # ran every epoch and the last was the best: still rising
              if run["epochs_run"] >= settings["max_epochs"] and run["epoch"] + 1 == run["epochs_run"]]
    if capped:
        return (f" Floor not cleared: {len(capped)} of {len(runs)} runs were still improving at the last of their "
                f"{settings['max_epochs']} epochs, so more epochs may help.")
    return (f" Floor not cleared: every run stopped on validation (no better epoch in {settings['patience']}, or its "
            f"best epoch before the last), so more fine-tuning epochs of this model would not clear it.")


def _rates_sentence(rates: dict) -> str:
    def arm(name, init, lr):
        tried = ", ".join(f"{t['learning_rate']:g}: " + ("not run" if t["eval_accuracy"] is None else
                                                        f"{_pct(t['eval_accuracy'])} %")
                          for t in rates["trials"] if (t["task"], t["init"]) == (name, init))
        return f"{init} {lr:g} ({tried})"

    chosen = "; ".join(f"{name}: " + ", ".join(arm(name, init, lr) for init, lr in inits.items())
                       for name, inits in rates["chosen"].items())
    candidates = ", ".join(f"{rate:g}" for rate in rates["candidates"])
    return (f"learning rate of each task and initialisation chosen on validation accuracy among {candidates} (seed 0, "
            f"first mask ratio; each trial's validation accuracy in brackets; a tie goes to the first of them, and a "
            f"task with no trial yet shows the first): {chosen}")


def _cpu_left_sentence(results: dict) -> str:
    left = results.get("cpu_left")
    if not left:
        return ""
    unsized = left["tasks_without_size"]
    if "cpu_minutes_per_segment_epoch" in left:  # results written before the pace was counted per note
        pace = f"{left['cpu_minutes_per_segment_epoch'] * 60:.2f} s per training segment and epoch"
    else:
        pace = (f"{left['cpu_minutes_per_row_epoch'] * 60_000:.2f} s per 1,000 training rows and epoch, the segments "
                "padded as their batches are")
    per_run = ", ".join(f"{name} {hours:.1f}" for name, hours in left.get("run_core_hours_at_mean_epochs", {}).items())
    return (f" The {left['runs_left']} runs left need about {left['core_hours_at_mean_epochs']:.0f} CPU core-hours at "
            f"this machine's pace ({pace}, one thread) and the finished runs' mean of {left['mean_epochs_run']:.1f} "
            f"epochs, {left['core_hours_at_epoch_cap']:.0f} if every run reaches the "
            f"{results['settings']['max_epochs']}-epoch cap (epochs already in a run's checkpoint counted as done"
            + (f"; without {', '.join(unsized)}, whose data sets give no size)." if unsized else ").")
            + (f" One whole run at the mean epochs, in core-hours: {per_run}." if per_run else ""))


def _ratio_note(ratio) -> str:
    return "" if ratio is None else f" (mask {ratio:g})"


def _interval_abs(pair) -> str:
    return "" if pair is None else f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def main(argv=None) -> dict | None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    args = parse_args(argv)
    results_file = Path(args.results_file or args.work_dir / "quality.json")
    if "docs" in args.stages:
        if not args.docs:
            raise SystemExit("--stages docs: --docs names the page to write")
        results, picture = read_json(results_file), Path(args.docs).with_suffix(".png")
        figure(results, picture)
        atomic_write_text(Path(args.docs), markdown(results, picture.name))
        return None
    command = command_line("python -m research.quality", argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.work_dir, jobs=args.jobs, threads_per_job=1)
    if "finetune" in args.stages:
        finetune_stage(args, runner)
        commands_file = args.work_dir / "commands.json"  # every invocation's runs, the earlier ones kept
        earlier = read_json(commands_file) if commands_file.is_file() else {}
        atomic_write_json(commands_file, {**earlier, **{k: portable_command(v) for k, v in runner.commands.items()}})
    results = None
    if "report" in args.stages:
        results = report(args, command)
        results_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(results_file, results)
        if args.docs:
            picture = Path(args.docs).with_suffix(".png")
            picture.parent.mkdir(parents=True, exist_ok=True)
            figure(results, picture)
            atomic_write_text(Path(args.docs), markdown(results, picture.name))
        logger.info("results: %s (%d of %d runs)", results_file, results["runs_finished"], results["runs_expected"])
        if args.floors_file:
            update_floors_verdict(Path(args.floors_file), results, str(results_file))
    if "publish" in args.stages:
        runner.run_all(publish_commands(args, results or read_json(results_file)))
    if runner.failures:
        logger.error("failed runs: %s", "; ".join(runner.failures))
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
