#!/usr/bin/env python
"""Ablation: does adversarial pre-training give a better model than random masking, or than no pre-training?

For every task (composer, emotion, melody, velocity) fine-tune, with the same budget, from:

========================  ===========================================================================
variant                   initialisation
========================  ===========================================================================
``scratch``               no pre-training (random weights, same preset)
``random``                pre-trained with random-token MLM (BERT: 15%, 80/10/10)
``bar``                   pre-trained with MusicBERT bar-level masking
``adversarial``           pre-trained with adversarial masking (Adversarial-MidiBERT)
``adversarial-detached``  adversarial masking, masker trained on a detached encoder output
========================  ===========================================================================

Seeds. Every pre-training variant is pre-trained once per pre-training seed ``k`` of ``--pretrain_seeds``
(``WORK_DIR/pretrain/<variant>/seed<k>``), and each of these models is fine-tuned once per task with fine-tuning
seed ``--finetune_seed_base + k`` (``WORK_DIR/finetune/<task>/<variant>/seed<k>``); ``scratch`` is fine-tuned with
the same fine-tuning seeds. The spread over seeds therefore covers both pre-training and fine-tuning noise.

Stages (``--stages``, default all, in this order): ``data`` (``prepare_data.py``: one data set per task and the
pre-training corpus, all cut to ``--max_seq_len``), ``pretrain``, ``finetune``, ``report``. The runner is
resumable at every level: a data set folder with ``task_info.json`` and a run folder with ``all_results.json`` are
finished and skipped; an interrupted pre-training resumes from its newest checkpoint
(``--resume_from_checkpoint latest``); an interrupted fine-tuning is restarted. A failed run is logged
(``WORK_DIR/logs/<run>.log``) and listed in the results; the others go on. ``--jobs 2`` runs two independent runs
at once, each with ``--threads_per_job`` torch threads (``OMP_NUM_THREADS``).

Report (written to ``--results_file``, default ``WORK_DIR/ablation.json``, and ``WORK_DIR/ablation.md``):

- every run's figures (seeds, validation and test accuracy and macro-F1, per segment/note and per piece, 95 %
  bootstrap intervals over pieces, epochs, run time, the exact command);
- per task and variant: mean, standard deviation (``ddof=1``), min and max over seeds of the test and validation
  accuracies (piece-level and segment-level for sequence tasks, note accuracy for token tasks);
- for every pair of present variants (later minus earlier in ``--variants``, e.g. ``adversarial - random`` and
  ``adversarial - scratch``): a two-level paired bootstrap of the difference of the seed-mean test accuracies
  (pieces resampled with replacement and shared by both variants; seeds resampled independently per variant;
  :func:`adversarial_midibert.confidence_intervals.paired_bootstrap_difference`), its 95 % interval and whether it
  excludes 0;
- the paper's figures and the floors of the data README (majority class, simple non-neural baselines) and whether
  each variant's mean clears each floor (composer and emotion: per piece; melody and velocity: per note).

``--readme docs/results.md`` writes the markdown table between ``<!-- ablation-cpu:start -->`` and
``<!-- ablation-cpu:end -->``; with ``--stages report`` and no ``--work_dir`` it is generated from an existing
results file alone.

Budgets (``--budget``; every value can be overridden by its own flag):

- ``smoke``: preset ``tiny`` (segments of 128 rows), 20 pre-training steps on 12 files, 1 fine-tuning epoch on 8
  files per task, pre-training seed 0 (seconds to minutes; proves the pipeline).
- ``small`` (CPU, two cores; about two hours): preset ``small`` at 256 rows, variants scratch, random and
  adversarial, tasks composer and melody, pre-training seeds 0, 1, 2.
- ``base`` (one GPU; days): preset ``base`` (the paper's BERT-base, 1024 rows), every variant and task, 100,000
  pre-training steps on the whole ``pretrain`` recipe, pre-training seeds 0, 1, 2.

Examples::

    python -m research.run_ablation --data_root ../shared/data --work_dir runs/ablation-smoke --budget smoke \\
        --tasks composer --variants scratch,adversarial --pretrain_seeds 0,1

    # pre-train now, decide the fine-tuning recipe later
    python -m research.run_ablation --data_root ../shared/data --work_dir runs/ablation --budget small \\
        --stages data,pretrain --jobs 2 --variant_args "adversarial=--reconstruction_weight 1"
    python -m research.run_ablation --work_dir runs/ablation --budget small --stages finetune,report \\
        --learning_rate 5e-4 --results_file results/ablation-cpu.json --readme docs/results.md

    # regenerate the table of docs/results.md from the results file
    python -m research.run_ablation --stages report --results_file results/ablation-cpu.json --readme docs/results.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

import numpy as np

from adversarial_midibert.atomic_io import atomic_write_json as write_json
from adversarial_midibert.atomic_io import atomic_write_text
from adversarial_midibert.checkpointing import latest_checkpoint
from adversarial_midibert.command_line import command_line
from adversarial_midibert.confidence_intervals import paired_bootstrap_difference, stack_piece_counts
from adversarial_midibert.evaluation import PieceResults
from adversarial_midibert.tasks import PAPER_ACCURACY, PAPER_TASKS
from adversarial_midibert.tasks import TASKS as TASK_REGISTRY

logger = logging.getLogger("run_ablation")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TASKS = PAPER_TASKS
STAGES = ("data", "pretrain", "finetune", "report")
VARIANTS: dict[str, list[str] | None] = {
    "scratch": None,
    "random": ["--masking", "random"],
    "bar": ["--masking", "bar"],
    "adversarial": ["--masking", "adversarial"],
    "adversarial-detached": ["--masking", "adversarial", "--detach_masker"],
}
# Paper accuracies (%) and the data README's floors (test accuracy %, same splits).
PAPER = PAPER_ACCURACY
FLOORS = {
    "composer": {"majority class": 13.5, "random forest, per piece": 75.7},
    "emotion": {"majority class": 29.0, "gradient boosting, per clip": 70.1},
    "melody": {"majority class": 63.9, "skyline": 66.6, "per-note gradient boosting": 87.2},
    "velocity": {"majority class": 38.1, "per-note gradient boosting": 41.9},
}
BUDGETS = {
    "smoke": dict(preset="tiny", max_seq_len=128, tasks="composer,emotion,melody,velocity",
                  variants="scratch,random,bar,adversarial,adversarial-detached", pretrain_seeds="0",
                  pretrain_steps=20, pretrain_max_files=12, pretrain_batch_size=4, pretrain_warmup_steps=0,
                  max_files=8, finetune_epochs=1, finetune_batch_size=4, learning_rate=1e-3, finetune_warmup_steps=0,
                  patience=0, mask_ratio=0.3),
    "small": dict(preset="small", max_seq_len=256, tasks="composer,melody", variants="scratch,random,adversarial",
                  pretrain_seeds="0,1,2", pretrain_steps=2000, pretrain_max_files=300, pretrain_batch_size=8,
                  pretrain_warmup_steps=100, max_files=None, finetune_epochs=5, finetune_batch_size=8,
                  learning_rate=5e-4, finetune_warmup_steps=50, patience=3, mask_ratio=0.3),
    "base": dict(preset="base", max_seq_len=1024, tasks=",".join(TASKS), variants=",".join(VARIANTS),
                 pretrain_seeds="0,1,2", pretrain_steps=100000, pretrain_max_files=None, pretrain_batch_size=12,
                 pretrain_warmup_steps=1000, max_files=None, finetune_epochs=10, finetune_batch_size=12,
                 learning_rate=2e-5, finetune_warmup_steps=0, patience=3, mask_ratio=0.3),
}
COMMANDS_FILE = "commands.json"
README_START, README_END = "<!-- ablation-cpu:start -->", "<!-- ablation-cpu:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default=os.environ.get("ADV_MIDIBERT_DATA"),
                   help="the shared data folder (stage data); default $ADV_MIDIBERT_DATA")
    p.add_argument("--work_dir", default=None, help="where data sets, models and logs go (all stages but a "
                   "report from --results_file alone)")
    p.add_argument("--budget", default="small", choices=sorted(BUDGETS), help="defaults for the flags below")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated among {','.join(STAGES)}")
    p.add_argument("--tasks", default=None, help=f"comma-separated among {','.join(TASKS)}")
    p.add_argument("--variants", default=None, help=f"comma-separated among {','.join(VARIANTS)} and --variant_args "
                                                    "names")
    p.add_argument("--variant_args", action="append", default=[], metavar="NAME=FLAGS",
                   help="extra pretrain.py flags of one variant, e.g. 'adversarial=--reconstruction_weight 1'; an "
                        "unknown NAME defines a new variant (its FLAGS must give --masking). Repeatable")
    p.add_argument("--preset", default=None, choices=("tiny", "small", "base"), help="model size")
    p.add_argument("--max_seq_len", type=int, default=None, help="rows per segment (BOS and EOS included)")
    g = p.add_argument_group("pre-training")
    g.add_argument("--pretrain_seeds", default=None, help="comma-separated pre-training seeds (one model each)")
    g.add_argument("--pretrain_corpus", default="pretrain",
                   help="prepare_data.py recipe of the pre-training data (default: POP1K7 + the task corpora "
                        "without their validation/test pieces)")
    g.add_argument("--pretrain_max_files", type=int, default=None, help="files of the pre-training data (None: all)")
    g.add_argument("--pretrain_steps", type=int, default=None, help="pre-training steps per model")
    g.add_argument("--pretrain_batch_size", type=int, default=None)
    g.add_argument("--pretrain_learning_rate", type=float, default=5e-4)
    g.add_argument("--pretrain_warmup_steps", type=int, default=None)
    g.add_argument("--extra_pretrain_args", default="", help="extra flags for every pretrain.py run (one string)")
    g.add_argument("--keep_checkpoints", action="store_true", help="keep step_* folders of finished pre-trainings")
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--finetune_seed_base", type=int, default=42, help="fine-tuning seed = base + pre-training seed")
    g.add_argument("--max_files", type=int, default=None, help="files per task data set (None: all)")
    g.add_argument("--finetune_epochs", type=int, default=None, help="fine-tuning epochs (early stopping inside)")
    g.add_argument("--finetune_max_steps", type=int, default=None, help="fine-tuning steps (overrides the epochs)")
    g.add_argument("--finetune_batch_size", type=int, default=None)
    g.add_argument("--learning_rate", type=float, default=None, help="fine-tuning learning rate")
    g.add_argument("--finetune_warmup_steps", type=int, default=None)
    g.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (0 = off)")
    g.add_argument("--metric_for_best_model", default="accuracy", help="finetune.py --metric_for_best_model")
    g.add_argument("--mask_ratio", type=float, default=None, help="mask fine-tuning ratio")
    g.add_argument("--extra_finetune_args", default="", help="extra flags for every finetune.py run (one string)")
    g.add_argument("--task_args", action="append", default=[], metavar="TASK=FLAGS",
                   help="extra finetune.py flags of one task, e.g. 'melody=--num_train_epochs 10'. Repeatable")
    g = p.add_argument_group("running and report")
    g.add_argument("--jobs", type=int, default=1, help="independent runs at once")
    g.add_argument("--threads_per_job", type=int, default=None, help="torch threads per run (default 1 with --jobs > "
                                                                     "1)")
    g.add_argument("--bootstrap_resamples", type=int, default=5000)
    g.add_argument("--bootstrap_seed", type=int, default=0)
    g.add_argument("--results_file", default=None, help="the machine-readable results (default WORK_DIR/ablation.json)")
    g.add_argument("--readme", default=None,
                   help=f"write the table into this markdown page (docs/results.md) between {README_START} and "
                        f"{README_END}")
    g.add_argument("--dry_run", action="store_true", help="print the commands without running them")
    g.add_argument("--in_process", action="store_true",
                   help="run the examples in this process, one at a time (tests; saves the Python start-up)")
    args = p.parse_args(argv)

    args.stages = [s for s in args.stages.split(",") if s]
    for stage in args.stages:
        if stage not in STAGES:
            p.error(f"--stages: unknown stage {stage!r} (choose among {', '.join(STAGES)})")
    args.report_only = args.stages == ["report"] and args.work_dir is None
    if args.report_only:
        if not args.results_file:
            p.error("--stages report without --work_dir needs --results_file (the JSON to render)")
        return args
    if not args.work_dir:
        p.error("give --work_dir")
    for key, value in BUDGETS[args.budget].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.variant_flags = {name: list(flags) for name, flags in VARIANTS.items() if flags is not None}
    for item in args.variant_args:
        name, flags = _split_assignment(p, "--variant_args", item)
        if name == "scratch":
            p.error("--variant_args: scratch is not pre-trained")
        if name not in args.variant_flags and "--masking" not in flags:
            p.error(f"--variant_args {item!r}: a new variant {name!r} must give --masking")
        args.variant_flags[name] = args.variant_flags.get(name, []) + flags
    args.task_flags = {}
    for item in args.task_args:
        name, flags = _split_assignment(p, "--task_args", item)
        if name not in TASKS:
            p.error(f"--task_args: unknown task {name!r} (choose among {', '.join(TASKS)})")
        args.task_flags[name] = args.task_flags.get(name, []) + flags
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.variants = [v for v in args.variants.split(",") if v]
    for t in args.tasks:
        if t not in TASKS:
            p.error(f"--tasks: unknown task {t!r} (choose among {', '.join(TASKS)})")
    for v in args.variants:
        if v != "scratch" and v not in args.variant_flags:
            p.error(f"--variants: unknown variant {v!r} (choose among {', '.join(VARIANTS)} or define it with "
                    "--variant_args)")
    try:
        args.pretrain_seeds = [int(s) for s in str(args.pretrain_seeds).split(",") if s]
    except ValueError:
        p.error(f"--pretrain_seeds must be comma-separated integers, got {args.pretrain_seeds!r}")
    if not args.pretrain_seeds or len(set(args.pretrain_seeds)) != len(args.pretrain_seeds):
        p.error(f"--pretrain_seeds: give distinct seeds, got {args.pretrain_seeds}")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if "data" in args.stages and not args.dry_run:
        if not args.data_root:
            p.error("stage data: give --data_root or set ADV_MIDIBERT_DATA to the shared data folder")
        if not Path(args.data_root).is_dir():
            p.error(f"--data_root {args.data_root}: no such folder")
    args.results_file = args.results_file or str(Path(args.work_dir) / "ablation.json")
    return args


def _split_assignment(parser, flag: str, item: str) -> tuple[str, list[str]]:
    name, sep, flags = item.partition("=")
    if not sep or not name.strip():
        parser.error(f"{flag} {item!r}: expected NAME=FLAGS")
    return name.strip(), shlex.split(flags)


# ----------------------------------------------------------------------------------------------- running
class Runner:
    """Runs sub-commands (``jobs`` at a time), logging each to ``work_dir/logs`` (appended: a resumed or re-run
    command's log keeps its earlier invocations), never stopping on a failure.

    Args:
        work_dir: the ablation's folder.
        dry_run: print commands instead of running them.
        jobs: runs at once.
        threads_per_job: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` of each run (None: torch's default).
        in_process: call the examples' ``main(argv)`` in this process instead of starting Python each time (tests:
            saves the imports; a run that crashes the interpreter stops the runner, and the logs hold the command only).
    """

    def __init__(self, work_dir: Path, dry_run: bool = False, jobs: int = 1, threads_per_job: int | None = None,
                 in_process: bool = False):
        self.logs = work_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dry_run = dry_run
        self.in_process = in_process
        self.jobs = jobs
        self.failures: list[str] = []
        self.commands: dict[str, str] = {}
        self.ran = 0
        self.skipped = 0
        # The examples import the package: make a source checkout importable without installing it.
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(EXAMPLES.parent), self.env.get("PYTHONPATH")) if p)
        threads = threads_per_job if threads_per_job is not None else (1 if jobs > 1 else None)
        if threads is not None:
            self.env["OMP_NUM_THREADS"] = self.env["MKL_NUM_THREADS"] = str(threads)

    def run(self, name: str, command: list[str]) -> bool:
        """Run one command; log it; return whether it succeeded."""
        line = shlex.join(command)
        self.commands[name] = portable_command(line)
        if self.dry_run:
            print(line)
            return True
        log = self.logs / f"{name}.log"
        logger.info("running %s (log: %s)", name, log)
        start = time.time()
        with open(log, "a") as f:  # a resumed or re-run command's log follows its earlier invocations'
            f.write(f"{'=' * 8} {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n{line}\n\n")
            f.flush()
            code = self._in_process(command) if self.in_process else subprocess.call(
                command, stdout=f, stderr=subprocess.STDOUT, env=self.env)
        self.ran += 1
        if code != 0:
            self.failures.append(f"{name} (exit {code}, see {log})")
            logger.error("%s failed with exit code %d after %.0f s; see %s", name, code, time.time() - start, log)
            return False
        logger.info("%s done in %.0f s", name, time.time() - start)
        return True

    @staticmethod
    def _in_process(command: list[str]) -> int:
        import importlib.util

        path = Path(command[1])
        spec = importlib.util.spec_from_file_location(f"_ablation_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            module.main(command[2:])
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # one failed run never stops the others
            logger.exception("%s failed", path.name)
            return 1
        return 0

    def run_all(self, runs: list[tuple[str, list[str], object]]) -> None:
        """Run ``(name, command, on_success)`` triples, ``jobs`` at a time; ``on_success`` may be None."""
        def one(item):
            name, command, on_success = item
            if self.run(name, command) and on_success is not None and not self.dry_run:
                on_success()

        if self.jobs == 1 or self.dry_run or self.in_process:
            for item in runs:
                one(item)
            return
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(one, runs))


_INTERPRETER_AND_SCRIPT = re.compile(r"^\S*python[\d.]*\s+\S*?((?:examples|research|benchmarks)/[\w.-]+\.py)")


def portable_command(line: str) -> str:
    """A command line as a reader of the results types it from the repository root: ``python examples/x.py ...`` (or
    ``research/``, ``benchmarks/``) instead of this machine's interpreter and absolute script path (lines already
    portable are returned as they are)."""
    return _INTERPRETER_AND_SCRIPT.sub(r"python \1", line)


def prepare_command(recipe: str, args, output: Path, max_files: int | None) -> list[str]:
    """The ``examples/prepare_data.py`` command building one data set."""
    command = [sys.executable, str(EXAMPLES / "prepare_data.py"), "--task", recipe, "--data_root", str(args.data_root),
               "--output_dir", str(output), "--max_seq_len", str(args.max_seq_len), "--seed", "0"]
    if max_files is not None:
        command += ["--max_files", str(max_files)]
    return command


def pretrain_command(variant: str, seed: int, args, dataset: Path, output: Path) -> list[str]:
    """The ``examples/pretrain.py`` command of one pre-training variant and seed (resuming when interrupted)."""
    command = [sys.executable, str(EXAMPLES / "pretrain.py"), "--dataset", str(dataset), "--preset", args.preset,
               *args.variant_flags[variant], "--max_train_steps", str(args.pretrain_steps),
               "--per_device_train_batch_size", str(args.pretrain_batch_size), "--learning_rate",
               str(args.pretrain_learning_rate), "--num_warmup_steps", str(args.pretrain_warmup_steps),
               "--seed", str(seed), "--output_dir", str(output),
               "--checkpointing_steps", str(max(args.pretrain_steps // 10, 1)), "--checkpoints_total_limit", "2",
               *shlex.split(args.extra_pretrain_args)]
    if latest_checkpoint(output) is not None:
        command += ["--resume_from_checkpoint", "latest"]
    return command


def finetune_command(task: str, variant: str, seed: int, args, dataset: Path, pretrained: Path, output: Path):
    """The ``examples/finetune.py`` command of one (task, variant, fine-tuning seed) run."""
    init = ["--from_scratch", "--preset", args.preset] if variant == "scratch" else ["--model_name_or_path",
                                                                                     str(pretrained)]
    command = [sys.executable, str(EXAMPLES / "finetune.py"), "--dataset", str(dataset), "--task", task, *init,
               "--num_train_epochs", str(args.finetune_epochs), "--early_stopping_patience", str(args.patience),
               "--per_device_train_batch_size", str(args.finetune_batch_size), "--per_device_eval_batch_size",
               str(args.finetune_batch_size), "--learning_rate", str(args.learning_rate), "--num_warmup_steps",
               str(args.finetune_warmup_steps), "--mask_ratio", str(args.mask_ratio), "--metric_for_best_model",
               args.metric_for_best_model, "--seed", str(seed), "--output_dir", str(output), "--overwrite_output_dir"]
    if args.finetune_max_steps is not None:
        command += ["--max_train_steps", str(args.finetune_max_steps)]
    if TASK_REGISTRY[task]["pitch_shift"]:  # tonality-independent piece-level tasks
        command.append("--pitch_shift")
    return command + shlex.split(args.extra_finetune_args) + args.task_flags.get(task, [])


def _drop_checkpoints(folder: Path):
    def drop():
        for checkpoint in folder.glob("step_*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
        for checkpoint in folder.glob("epoch_*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return drop


# ----------------------------------------------------------------------------------------------- report
def read_json(path: Path):
    """A JSON file's content (results files, commands, logs of the runs)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _summary(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    return {"n": len(values), "mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(array.min()), "max": float(array.max())}


RUN_KEYS = ("test_accuracy", "test_f1_macro", "test_piece_accuracy", "test_piece_f1_macro", "test_accuracy_ci95",
            "test_piece_accuracy_ci95", "eval_accuracy", "eval_f1_macro", "eval_piece_accuracy", "eval_piece_f1_macro",
            "test_num_pieces", "num_test_scored", "epoch", "epochs_run", "train_steps", "train_runtime", "seed",
            "command")


def collect(work_dir: Path, tasks, variants, pretrain_seeds, finetune_seed_base: int) -> dict:
    """Every fine-tuning run's figures: ``{task: {variant: {"runs": [...], "missing": [seed, ...]}}}``.

    A run also gets the commands that produced it (``WORK_DIR/commands.json``: every invocation's command per run,
    a resumed pre-training has two) and its pre-training's ``all_results.json``.
    """
    commands_file = work_dir / COMMANDS_FILE
    commands = read_json(commands_file) if commands_file.is_file() else {}
    table = {}
    for task in tasks:
        table[task] = {}
        for variant in variants:
            runs, missing = [], []
            for seed in pretrain_seeds:
                folder = work_dir / "finetune" / task / variant / f"seed{seed}"
                if not (folder / "all_results.json").is_file():
                    missing.append(seed)
                    continue
                results = read_json(folder / "all_results.json")
                run = {"pretrain_seed": None if variant == "scratch" else seed,
                       "finetune_seed": results.get("seed", finetune_seed_base + seed), "folder": str(folder),
                       "task_type": results.get("task_type"), **{k: results.get(k) for k in RUN_KEYS if k != "seed"}}
                pretrain_results = work_dir / "pretrain" / variant / f"seed{seed}" / "all_results.json"
                if pretrain_results.is_file():
                    run["pretrain_commands"] = [portable_command(c) for c in
                                                commands.get(f"pretrain-{variant}-seed{seed}", [])]
                    run["pretrain_results"] = read_json(pretrain_results)
                run["finetune_commands"] = [portable_command(c) for c in
                                            commands.get(f"finetune-{task}-{variant}-seed{seed}", [])]
                runs.append(run)
            table[task][variant] = {"runs": runs, "missing": missing}
    return table


def _levels(task_type: str) -> dict[str, str]:
    """Bootstrap level -> the run key of its accuracy (the first one is the task's main figure)."""
    if task_type == "token":
        return {"note": "test_accuracy"}
    return {"piece": "test_piece_accuracy", "segment": "test_accuracy"}


def aggregate(table: dict) -> dict:
    """Mean / std / min / max over seeds of the test and validation accuracies, per task and variant."""
    keys = ("test_piece_accuracy", "test_accuracy", "test_piece_f1_macro", "test_f1_macro", "eval_piece_accuracy",
            "eval_accuracy")
    return {task: {variant: {key: _summary([r.get(key) for r in cell["runs"]]) for key in keys}
                   for variant, cell in row.items()} for task, row in table.items()}


def paired_differences(table: dict, variants, n_resamples: int, seed: int) -> list[dict]:
    """Two-level paired bootstrap of every pair of present variants (later minus earlier in ``variants``)."""
    out = []
    for task, row in table.items():
        present = [v for v in variants if row.get(v, {}).get("runs")]
        if not present:
            continue
        pieces = {}
        for variant in present:
            try:
                pieces[variant] = [PieceResults.from_records(read_json(Path(r["folder"]) / "test_piece_results.json"))
                                   for r in row[variant]["runs"]]
            except (OSError, ValueError, KeyError) as err:
                logger.error("%s %s: cannot read the per-piece results (%s); left out of the bootstrap", task, variant,
                             err)
        task_type = next(r["task_type"] for v in present for r in row[v]["runs"])
        for b, a in combinations([v for v in present if v in pieces], 2):
            for level in _levels(task_type):
                entry = {"task": task, "a": a, "b": b, "comparison": f"{a} - {b}", "level": level,
                         "metric": _levels(task_type)[level]}
                try:
                    correct_a, total_a, order = stack_piece_counts(pieces[a], level)
                    correct_b, total_b, _ = stack_piece_counts(pieces[b], level, order)
                except ValueError as err:
                    out.append({**entry, "error": str(err)})
                    continue
                interval = paired_bootstrap_difference(correct_a, total_a, correct_b, total_b,
                                                       n_resamples=n_resamples, seed=seed)
                out.append({**entry, **interval.to_dict(), "n_seeds_a": len(correct_a), "n_seeds_b": len(correct_b),
                            "n_pieces": len(order)})
    return out


PRETRAIN_KEYS = ("eval_loss", "eval_accuracy", "eval_token_cosine", "eval_effective_rank", "eval_masker_spearman",
                 "frozen_fraction", "train_steps")


def pretraining_summary(work_dir: Path, variants, pretrain_seeds) -> dict:
    """Mean / std over pre-training seeds of each pre-trained variant's validation figures: the yardstick (random
    15 % masking at fixed positions, the same for every variant), the representation health and the masker's rank
    correlation, from every finished pre-training (fine-tuned or not)."""
    out = {}
    for variant in variants:
        found = [work_dir / "pretrain" / variant / f"seed{seed}" / "all_results.json" for seed in pretrain_seeds]
        results = [read_json(path) for path in found if path.is_file()]
        if results:
            out[variant] = {key: _summary([r.get(key) for r in results]) for key in PRETRAIN_KEYS}
    return out


def run_settings(table: dict) -> dict:
    """What the finished runs actually did (steps as recorded in their results), per task and for pre-training."""
    finetune_steps = {task: sorted({r["train_steps"] for cell in row.values() for r in cell["runs"]
                                    if r.get("train_steps") is not None}) for task, row in table.items()}
    pretrain_steps = sorted({r["pretrain_results"].get("train_steps") for row in table.values() for cell in row.values()
                             for r in cell["runs"] if r.get("pretrain_results") and
                             r["pretrain_results"].get("train_steps") is not None})
    return {"finetune_steps": finetune_steps, "pretrain_steps": pretrain_steps}


def floors_check(table: dict, summary: dict) -> dict:
    """Whether each variant's mean main accuracy (per piece, or per note for token tasks) clears each floor."""
    out = {}
    for task, row in table.items():
        task_type = next((r["task_type"] for cell in row.values() for r in cell["runs"]), None)
        if task_type is None:
            continue
        key = next(iter(_levels(task_type).values()))
        out[task] = {"metric": key, "floors": FLOORS[task], "paper": PAPER[task], "variants": {}}
        for variant in row:
            mean = summary[task][variant][key]["mean"]
            if mean is not None:
                out[task]["variants"][variant] = {
                    "mean": mean, "clears": {name: bool(mean * 100 > floor) for name, floor in FLOORS[task].items()}}
    return out


def _cell(stats: dict) -> str:
    if not stats or not stats.get("n"):
        return "—"
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f} (n={stats['n']})"


def markdown(results: dict) -> str:
    """The README table: mean ± std over seeds per task and variant, then the paired bootstrap intervals."""
    variants = results["budget"]["variants"]
    b = results["budget"]
    done = results.get("settings") or {}

    def steps(values, planned):
        return "/".join(map(str, values)) if values else str(planned)
    finetune = ", ".join(f"{task} {steps(v, b.get('finetune_max_steps') or str(b.get('finetune_epochs')) + ' epochs')}"
                         for task, v in done.get("finetune_steps", {}).items()) or f"{b.get('finetune_epochs')} epochs"
    lines = [f"Accuracy (%), mean ± std over seeds (n = finished seeds). Preset {b.get('preset')}, "
             f"{b.get('max_seq_len')} rows; pre-training: {steps(done.get('pretrain_steps'), b.get('pretrain_steps'))} "
             f"steps of {b.get('pretrain_batch_size')} segments, learning rate {b.get('pretrain_learning_rate')}, "
             f"{b.get('pretrain_max_files') or 'all'} files of the `{b.get('pretrain_corpus', 'pretrain')}` recipe, "
             f"seeds {b.get('pretrain_seeds')}; fine-tuning (seed {b.get('finetune_seed_base')} + pre-training seed; "
             f"steps: {finetune}) with batch {b.get('finetune_batch_size')}, learning rate {b.get('learning_rate')}, "
             f"mask ratio {b.get('mask_ratio')}, the best epoch on validation. Generated by `research/run_ablation.py` "
             f"from `{results.get('results_file', 'the results file')}`.", "",
             "| task | figure | " + " | ".join(variants) + " | paper | floors |",
             "|---|---|" + "---|" * len(variants) + "---|---|"]
    names = {"test_piece_accuracy": "test, per piece", "test_accuracy": "test, per segment",
             "eval_piece_accuracy": "validation, per piece", "eval_accuracy": "validation, per segment"}
    for task, row in results["summary"].items():
        task_type = results["floors"].get(task, {}).get("metric")
        keys = ["test_accuracy", "eval_accuracy"] if task_type == "test_accuracy" else list(names)
        floors = ", ".join(f"{n} {v}" for n, v in FLOORS[task].items())
        for i, key in enumerate(keys):
            label = names[key].replace("per segment", "per note") if task_type == "test_accuracy" else names[key]
            cells = [_cell(row[v][key]) if v in row else "—" for v in variants]
            lines.append(f"| {task if i == 0 else ''} | {label} | " + " | ".join(cells)
                         + f" | {PAPER[task] if i == 0 else ''} | {floors if i == 0 else ''} |")
    lines += ["", "Paired bootstrap over test pieces of the difference of seed-mean accuracies (percentage points; "
              "pieces shared by both variants, seeds resampled per variant; 95 % percentile interval):", "",
              "| task | comparison | level | difference | 95 % interval | excludes 0 |", "|---|---|---|---|---|---|"]
    for d in results["differences"]:
        if "error" in d:
            lines.append(f"| {d['task']} | {d['comparison']} | {d['level']} | — | {d['error']} | — |")
            continue
        lines.append(f"| {d['task']} | {d['comparison']} | {d['level']} | {100 * d['estimate']:+.1f} | "
                     f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] | {'yes' if d['excludes_zero'] else 'no'} |")
    if results.get("pretraining"):
        lines += ["", "Pre-training, on the validation split of the pre-training corpus (mean ± std over pre-training "
                  "seeds): the yardstick (random 15 % masking at positions fixed by one seed, the same for every "
                  "variant), the health of the note representations (mean cosine between the notes of a segment, 1 = "
                  "collapsed; effective rank) and the Spearman correlation of the masker's scores with the notes' "
                  "real recovery loss:", "",
                  "| variant | yardstick loss | yardstick accuracy (%) | token cosine | effective rank | masker "
                  "Spearman | n |", "|---|---|---|---|---|---|---|"]

        def plain(stats, scale=1.0, digits=3):
            if not stats or not stats.get("n"):
                return "—"
            return f"{scale * stats['mean']:.{digits}f} ± {scale * stats['std']:.{digits}f}"
        for variant, stats in results["pretraining"].items():
            lines.append(f"| {variant} | {plain(stats['eval_loss'])} | {plain(stats['eval_accuracy'], 100, 1)} | "
                         f"{plain(stats['eval_token_cosine'])} | {plain(stats['eval_effective_rank'], 1, 1)} | "
                         f"{plain(stats['eval_masker_spearman'], 1, 2)} | {stats['eval_loss']['n']} |")
    if results.get("failures"):
        lines += ["", "Failed runs: " + "; ".join(results["failures"])]
    missing = [f"{t}/{v}: seeds {c['missing']}" for t, row in results["runs"].items() for v, c in row.items()
               if c["missing"]]
    if missing:
        lines += ["", "Missing runs: " + "; ".join(missing)]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between the README markers by ``table`` (written aside, then renamed)."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no {README_START} ... {README_END} markers (in that order) to write the table "
                         "between")
    atomic_write_text(readme, text[: start + len(README_START)] + "\n" + table + text[end:])


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Run (or resume) the stages asked for; return the results (also written to ``--results_file``)."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.report_only:
        results = read_json(Path(args.results_file))
        if args.readme:
            update_readme(Path(args.readme), markdown(results))
        return results
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(work_dir, args.dry_run, args.jobs, args.threads_per_job, args.in_process)
    data = {recipe: work_dir / "data" / recipe for recipe in [*args.tasks, args.pretrain_corpus]}
    pretrained = [v for v in args.variants if v != "scratch"]

    if "data" in args.stages:  # one data set per task and the pre-training corpus, all at --max_seq_len rows
        runs = []
        for recipe, folder in data.items():
            if (folder / "task_info.json").is_file():
                runner.skipped += 1
                continue
            max_files = args.pretrain_max_files if recipe == args.pretrain_corpus else args.max_files
            runs.append((f"prepare-{recipe}", prepare_command(recipe, args, folder, max_files), None))
        runner.run_all(runs)

    if "pretrain" in args.stages:  # every pre-trained variant, once per pre-training seed
        runs = []
        for variant in pretrained:
            for seed in args.pretrain_seeds:
                output = work_dir / "pretrain" / variant / f"seed{seed}"
                if (output / "all_results.json").is_file():
                    runner.skipped += 1
                    continue
                if not (data[args.pretrain_corpus] / "task_info.json").is_file() and not args.dry_run:
                    runner.failures.append(f"pretrain-{variant}-seed{seed}: no data set in "
                                           f"{data[args.pretrain_corpus]}")
                    continue
                drop = None if args.keep_checkpoints else _drop_checkpoints(output)
                runs.append((f"pretrain-{variant}-seed{seed}",
                             pretrain_command(variant, seed, args, data[args.pretrain_corpus], output), drop))
        runner.run_all(runs)

    if "finetune" in args.stages:  # every task x variant x seed; pre-training seed k <-> fine-tuning seed base + k
        runs = []
        for task in args.tasks:
            for variant in args.variants:
                for seed in args.pretrain_seeds:
                    name = f"finetune-{task}-{variant}-seed{seed}"
                    output = work_dir / "finetune" / task / variant / f"seed{seed}"
                    model = work_dir / "pretrain" / variant / f"seed{seed}"
                    if (output / "all_results.json").is_file():
                        runner.skipped += 1
                        continue
                    if not args.dry_run:
                        if variant != "scratch" and not (model / "all_results.json").is_file():
                            runner.failures.append(f"{name}: no finished pre-trained model in {model}")
                            continue
                        if not (data[task] / "task_info.json").is_file():
                            runner.failures.append(f"{name}: no data set in {data[task]}")
                            continue
                    command = finetune_command(task, variant, args.finetune_seed_base + seed, args, data[task], model,
                                               output)
                    runs.append((name, command, None))
        runner.run_all(runs)

    if runner.commands and not args.dry_run:  # every command ever run, per run name (resumed runs have several)
        commands_file = work_dir / COMMANDS_FILE
        commands = read_json(commands_file) if commands_file.is_file() else {}
        for name, line in runner.commands.items():
            commands.setdefault(name, []).append(line)
        write_json(commands_file, commands)
    logger.info("%d runs, %d skipped (already done), %d failed", runner.ran, runner.skipped, len(runner.failures))
    for failure in runner.failures:
        logger.error("failed: %s", failure)
    if "report" not in args.stages or args.dry_run:
        return {"failures": runner.failures, "commands": runner.commands}

    table = collect(work_dir, args.tasks, args.variants, args.pretrain_seeds, args.finetune_seed_base)
    summary = aggregate(table)
    budget = {k: v for k, v in vars(args).items()
              if k not in ("dry_run", "report_only", "readme", "results_file", "in_process")}
    budget["jobs"] = args.jobs
    results = {
        "description": "Ablation of the pre-training objective: fine-tuning accuracy per task and variant over "
                       "pre-training seeds (each pre-trained model fine-tuned once, with fine-tuning seed "
                       "finetune_seed_base + pre-training seed; scratch with the same fine-tuning seeds).",
        "results_file": str(args.results_file),
        "budget": budget,
        "command": command_line("python -m research.run_ablation", argv),
        "commands_this_invocation": runner.commands,
        "runs": table,
        "summary": summary,
        "differences": paired_differences(table, args.variants, args.bootstrap_resamples, args.bootstrap_seed),
        "bootstrap": {"n_resamples": args.bootstrap_resamples, "seed": args.bootstrap_seed, "confidence": 0.95,
                      "method": "two-level paired bootstrap: test pieces resampled with replacement and shared by both "
                                "variants; each variant's seeds resampled with replacement independently; statistic: "
                                "difference of the seed-mean accuracies (each over the resampled pieces, a piece with "
                                "all its segments/notes); percentile interval; excludes_zero: the whole interval lies "
                                "on one side of 0"},
        "settings": run_settings(table),
        "pretraining": pretraining_summary(work_dir, args.variants, args.pretrain_seeds),
        "floors": floors_check(table, summary),
        "paper": PAPER,
        "floors_source": "../shared/data/README.md (same splits; simple non-neural models, test accuracy %)",
        "failures": runner.failures,
    }
    results_file = Path(args.results_file)
    write_json(results_file, results)
    text = markdown(results)
    (work_dir / "ablation.md").write_text(text)
    if args.readme:
        update_readme(Path(args.readme), text)
    print(text)
    return results


if __name__ == "__main__":
    main()
