#!/usr/bin/env python
"""Ablation: what does each pre-training objective bring to each downstream task?

For every task (composer, emotion, melody, velocity) fine-tune, with the same budget and the same seeds, from:

===================  ===========================================================================
variant              initialisation
===================  ===========================================================================
``scratch``          no pre-training (random weights, same preset)
``random``           pre-trained with random-token MLM (BERT: 15%, 80/10/10)
``bar``              pre-trained with MusicBERT bar-level masking
``adversarial``      pre-trained with adversarial masking (Adversarial-MidiBERT)
``adversarial-detached``  adversarial masking, masker trained on a detached encoder output
===================  ===========================================================================

Each pre-training variant is run once (``examples/pretrain.py --masking ...``) on the same pre-training data set.
Test accuracy is collected from every fine-tuning run's ``all_results.json`` and written as a markdown table
(mean ± std over seeds, %) beside the paper's figures and the floors of the data README (majority class, simple
non-neural baseline), to ``WORK_DIR/ablation.md`` (and ``ablation.json``).

The runner is resumable: a data set folder with ``task_info.json``, a pre-training folder with ``config.json``
and a fine-tuning folder with ``all_results.json`` are kept and not run again. A run that fails is logged
(``WORK_DIR/logs``), counted and shown as failed in the table; the others go on.

Budgets (``--budget``; every value can be overridden by its own flag):

- ``small`` (CPU, two cores; hours for all four tasks): preset ``small`` (hidden 256, 4 layers, segments of
  256 notes), pre-training 2,000 steps on 300 files of the ``pretrain`` recipe, fine-tuning 5 epochs, 3 seeds, mask ratio 0.3,
  at most 120 files per task. Expect figures far below the paper's: this checks the ordering of the variants.
- ``base`` (one GPU; a day or more): preset ``base`` (the paper's BERT-base, segments of 1024 notes),
  pre-training 100,000 steps on the whole ``pretrain`` recipe (POP1K7 + the task
  corpora without their validation/test pieces), fine-tuning 10 epochs with early stopping,
  5 seeds, all files.
- ``smoke``: preset ``tiny``, 20 pre-training steps, 1 epoch, 1 seed, 8 files per task (seconds to minutes;
  proves the pipeline).

Example (a smoke run of two variants and one task)::

    python examples/run_ablation.py --data_root ../shared/data --work_dir runs/ablation-smoke --budget smoke \\
        --tasks composer --variants scratch,adversarial
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

logger = logging.getLogger("run_ablation")

EXAMPLES = Path(__file__).resolve().parent
TASKS = ("composer", "emotion", "melody", "velocity")
VARIANTS: dict[str, list[str] | None] = {
    "scratch": None,
    "random": ["--masking", "random"],
    "bar": ["--masking", "bar"],
    "adversarial": ["--masking", "adversarial"],
    "adversarial-detached": ["--masking", "adversarial", "--detach_masker"],
}
# Paper accuracies (%) and the data README's floors: majority class, simple non-neural baseline.
PAPER = {"composer": 97.92, "emotion": 79.46, "velocity": 45.58, "melody": 92.68}
FLOORS = {
    "composer": (13.5, "75.7 (random forest)"),
    "emotion": (29.0, "70.1 (gradient boosting); 76.6 song-id lookup (split leak)"),
    "melody": (63.9, "66.6 (skyline); 87.2 (per-note gradient boosting)"),
    "velocity": (38.1, "41.9 (per-note gradient boosting)"),
}
BUDGETS = {
    "smoke": dict(preset="tiny", pretrain_steps=20, finetune_epochs=1, seeds="42", max_files=8,
                  pretrain_max_files=12, batch_size=4, mask_ratio=0.3, patience=0),
    "small": dict(preset="small", pretrain_steps=2000, finetune_epochs=5, seeds="42,43,44", max_files=120,
                  pretrain_max_files=300, batch_size=8, mask_ratio=0.3, patience=3),
    "base": dict(preset="base", pretrain_steps=100000, finetune_epochs=10, seeds="42,43,44,45,46", max_files=None,
                 pretrain_max_files=None, batch_size=12, mask_ratio=0.3, patience=3),
}
PRESET_SEQ_LEN = {"tiny": 128, "small": 256, "base": 1024}
# Pitch-shift augmentation for the tonality-independent piece-level tasks.
PITCH_SHIFT_TASKS = ("composer", "emotion")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default=os.environ.get("ADV_MIDIBERT_DATA"),
                   help="the shared data folder (POP909, EMOPIA, Pianist8, POP1K7, splits); default $ADV_MIDIBERT_DATA")
    p.add_argument("--work_dir", required=True, help="where data sets, models, logs and the table go")
    p.add_argument("--budget", default="small", choices=sorted(BUDGETS), help="defaults for the flags below")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated among {','.join(TASKS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated among {','.join(VARIANTS)}")
    p.add_argument("--preset", default=None, choices=sorted(PRESET_SEQ_LEN), help="model size")
    p.add_argument("--pretrain_steps", type=int, default=None, help="pre-training steps per variant")
    p.add_argument("--pretrain_corpus", default="pretrain",
                   help="prepare_data.py recipe of the pre-training data (default: POP1K7 + the task corpora "
                        "without their validation/test pieces)")
    p.add_argument("--finetune_epochs", type=int, default=None, help="fine-tuning epochs (early stopping inside)")
    p.add_argument("--seeds", default=None, help="comma-separated fine-tuning seeds")
    p.add_argument("--max_files", type=int, default=None, help="files per task data set (None: all)")
    p.add_argument("--pretrain_max_files", type=int, default=None, help="files of the pre-training data (None: all)")
    p.add_argument("--batch_size", type=int, default=None, help="per-device batch size (pre-training and fine-tuning)")
    p.add_argument("--mask_ratio", type=float, default=None, help="mask fine-tuning ratio")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience (0 = off)")
    p.add_argument("--learning_rate", type=float, default=2e-5, help="fine-tuning learning rate")
    p.add_argument("--pretrain_learning_rate", type=float, default=5e-4, help="pre-training learning rate")
    p.add_argument("--extra_finetune_args", default="", help="extra flags for finetune.py (one quoted string)")
    p.add_argument("--extra_pretrain_args", default="", help="extra flags for pretrain.py (one quoted string)")
    p.add_argument("--dry_run", action="store_true", help="print the commands without running them")
    args = p.parse_args(argv)
    for key, value in BUDGETS[args.budget].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.variants = [v for v in args.variants.split(",") if v]
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s]
    for t in args.tasks:
        if t not in TASKS:
            p.error(f"--tasks: unknown task {t!r} (choose among {', '.join(TASKS)})")
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown variant {v!r} (choose among {', '.join(VARIANTS)})")
    if not args.seeds:
        p.error("--seeds: give at least one seed")
    if not args.data_root:
        p.error("give --data_root or set ADV_MIDIBERT_DATA to the shared data folder")
    if not Path(args.data_root).is_dir():
        p.error(f"--data_root {args.data_root}: no such folder")
    return args


class Runner:
    """Runs the sub-commands one after the other, logging each to ``work_dir/logs``, never stopping on a failure.

    Args:
        work_dir: the ablation's folder.
        dry_run: print commands instead of running them.
    """

    def __init__(self, work_dir: Path, dry_run: bool = False):
        self.logs = work_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dry_run = dry_run
        self.failures: list[str] = []
        self.ran = 0
        self.skipped = 0
        # The examples import the package: make a source checkout importable without installing it.
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(EXAMPLES.parent), self.env.get("PYTHONPATH")) if p)

    def __call__(self, name: str, command: list[str]) -> bool:
        line = " ".join(shlex.quote(c) for c in command)
        if self.dry_run:
            print(line)
            return True
        log = self.logs / f"{name}.log"
        logger.info("running %s (log: %s)", name, log)
        start = time.time()
        with open(log, "w") as f:
            f.write(line + "\n\n")
            f.flush()
            code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, env=self.env)
        self.ran += 1
        if code != 0:
            self.failures.append(f"{name} (exit {code}, see {log})")
            logger.error("%s failed with exit code %d after %.0f s; see %s", name, code, time.time() - start, log)
            return False
        logger.info("%s done in %.0f s", name, time.time() - start)
        return True


def prepare_command(recipe: str, args, output: Path, max_files: int | None) -> list[str]:
    """The ``examples/prepare_data.py`` command building one data set."""
    command = [sys.executable, str(EXAMPLES / "prepare_data.py"), "--task", recipe, "--data_root", str(args.data_root),
               "--output_dir", str(output), "--max_seq_len", str(PRESET_SEQ_LEN[args.preset]), "--seed", "0"]
    if max_files is not None:
        command += ["--max_files", str(max_files)]
    return command


def pretrain_command(variant: str, args, dataset: Path, output: Path) -> list[str]:
    """The ``examples/pretrain.py`` command of one pre-training variant."""
    return [sys.executable, str(EXAMPLES / "pretrain.py"), "--dataset", str(dataset), "--preset", args.preset,
            *VARIANTS[variant], "--max_train_steps", str(args.pretrain_steps), "--per_device_train_batch_size",
            str(args.batch_size), "--learning_rate", str(args.pretrain_learning_rate), "--seed", "0",
            "--output_dir", str(output), "--checkpointing_steps", str(max(args.pretrain_steps // 10, 1)),
            *shlex.split(args.extra_pretrain_args)] + (
        ["--resume_from_checkpoint", "latest"] if output.is_dir() and any(output.glob("step_*")) else [])


def finetune_command(task: str, variant: str, seed: int, args, dataset: Path, pretrained: Path, output: Path):
    """The ``examples/finetune.py`` command of one (task, variant, seed) run."""
    init = ["--from_scratch", "--preset", args.preset] if variant == "scratch" else ["--model_name_or_path", str(pretrained)]
    command = [sys.executable, str(EXAMPLES / "finetune.py"), "--dataset", str(dataset), "--task", task, *init,
               "--num_train_epochs", str(args.finetune_epochs), "--early_stopping_patience", str(args.patience),
               "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size",
               str(args.batch_size), "--learning_rate", str(args.learning_rate), "--mask_ratio", str(args.mask_ratio),
               "--seed", str(seed), "--output_dir", str(output), "--overwrite_output_dir"]
    if task in PITCH_SHIFT_TASKS:
        command.append("--pitch_shift")
    return command + shlex.split(args.extra_finetune_args)


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def collect(work_dir: Path, tasks, variants, seeds) -> dict:
    """Read every fine-tuning run's test accuracy: ``{task: {variant: {"runs": [...], "missing": [...]}}}``."""
    table = {}
    for task in tasks:
        table[task] = {}
        for variant in variants:
            runs, missing = [], []
            for seed in seeds:
                path = work_dir / "finetune" / task / variant / f"seed{seed}" / "all_results.json"
                if path.is_file():
                    results = json.loads(path.read_text())
                    runs.append({"seed": seed, "test_accuracy": results.get("test_accuracy"),
                                 "test_f1_macro": results.get("test_f1_macro"), "epoch": results.get("epoch")})
                else:
                    missing.append(seed)
            table[task][variant] = {"runs": runs, "missing": missing}
    return table


def markdown_table(table: dict, variants, budget_line: str) -> str:
    """The results as markdown: one row per task, test accuracy (%) mean ± std over seeds per variant."""
    header = ["task", *variants, "paper", "majority", "simple baseline"]
    lines = [f"Test accuracy (%), mean ± std over seeds (n = number of finished seeds). {budget_line}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, row in table.items():
        cells = [task]
        for variant in variants:
            accs = [r["test_accuracy"] * 100 for r in row[variant]["runs"] if r["test_accuracy"] is not None]
            if not accs:
                cells.append("—")
                continue
            mean, std = _mean_std(accs)
            cells.append(f"{mean:.2f} ± {std:.2f} (n={len(accs)})")
        majority, simple = FLOORS[task]
        cells += [f"{PAPER[task]:.2f}", f"{majority:.1f}", simple]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Paper: Adversarial-MidiBERT, BERT-base, full pre-training. Floors: data README (same splits). "
              "Emotion uses the MidiBERT-Piano split, which leaks songs between train and test."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Run (or resume) the ablation and write the table; return the collected results."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    run = Runner(work_dir, args.dry_run)

    # 1. data sets (one per task, one for pre-training), all with the preset's segment length
    data = {}
    for recipe, max_files in [(t, args.max_files) for t in args.tasks] + [(args.pretrain_corpus, args.pretrain_max_files)]:
        folder = work_dir / "data" / recipe
        data[recipe] = folder
        if (folder / "task_info.json").is_file():
            run.skipped += 1
            continue
        run(f"prepare-{recipe}", prepare_command(recipe, args, folder, max_files))

    # 2. pre-training, once per variant
    for variant in args.variants:
        if VARIANTS[variant] is None:
            continue
        output = work_dir / "pretrain" / variant
        if (output / "config.json").is_file() and (output / "model.safetensors").is_file():
            run.skipped += 1
            continue
        run(f"pretrain-{variant}", pretrain_command(variant, args, data[args.pretrain_corpus], output))

    # 3. fine-tuning: every task x variant x seed, same budget
    for task in args.tasks:
        for variant in args.variants:
            pretrained = work_dir / "pretrain" / variant
            if VARIANTS[variant] is not None and not (pretrained / "config.json").is_file() and not args.dry_run:
                run.failures.append(f"finetune-{task}-{variant}: no pre-trained model in {pretrained}")
                continue
            for seed in args.seeds:
                output = work_dir / "finetune" / task / variant / f"seed{seed}"
                if (output / "all_results.json").is_file():
                    run.skipped += 1
                    continue
                run(f"finetune-{task}-{variant}-seed{seed}",
                    finetune_command(task, variant, seed, args, data[task], pretrained, output))

    # 4. the table
    table = collect(work_dir, args.tasks, args.variants, args.seeds)
    budget_line = (f"Budget `{args.budget}`: preset {args.preset}, {args.pretrain_steps} pre-training steps, "
                   f"{args.finetune_epochs} fine-tuning epochs, seeds {args.seeds}, max files per task {args.max_files}.")
    text = markdown_table(table, args.variants, budget_line)
    if run.failures:
        text += "\nFailed runs:\n" + "".join(f"- {f}\n" for f in run.failures)
    if not args.dry_run:
        (work_dir / "ablation.md").write_text(text)
        (work_dir / "ablation.json").write_text(json.dumps(
            {"budget": {k: v for k, v in vars(args).items() if k not in ("dry_run",)}, "results": table,
             "failures": run.failures}, indent=2, default=str))
    print(text)
    logger.info("%d runs, %d skipped (already done), %d failed", run.ran, run.skipped, len(run.failures))
    return {"results": table, "failures": run.failures}


if __name__ == "__main__":
    main()
