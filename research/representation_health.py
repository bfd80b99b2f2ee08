#!/usr/bin/env python
"""Representation health of pre-training variants: which coupling of masker and encoder collapses the encoder?

Pre-trains a small model with each configuration below (``examples/pretrain.py``, same data, same steps, several
seeds) and reads the validation figures every run writes (:mod:`adversarial_midibert.pretraining_evaluation`):

- ``eval_token_cosine``: mean cosine similarity between the notes of a segment (higher = more collapsed);
- ``eval_effective_rank``: effective rank of a segment's note representations (lower = more collapsed);
- ``eval_loss``: masked-LM loss on the random-15 % yardstick (same positions for every run; lower = better);
- ``eval_masker_spearman``: does the masker rank notes by their real recovery loss (adversarial runs only)?

Configurations (``--configs`` picks some): the baselines ``random`` (with and without the reconstruction term) and
the adversarial method with the masker's gradient into the encoder at full strength (1, the reference code), a
tenth (0.1) or none (0, detached), each without (the paper) and with the reference code's reconstruction term.

The runs are resumable (a finished run is read back, not run again); the table is printed and written to
``--output`` (JSON, aside then renamed). Example (the figures of docs/results.md; about 40 minutes on 2 CPU cores)::

    python -m research.representation_health --data_root ../shared/data --work_dir runs/health \\
        --output results/representation-health.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from adversarial_midibert.atomic_io import atomic_write_json
from benchmarks.results_file import typed_command

ROOT = Path(__file__).resolve().parents[1]

CONFIGS: dict[str, list[str]] = {
    "random": ["--masking", "random", "--reconstruction_weight", "0"],
    "random+recon": ["--masking", "random", "--reconstruction_weight", "1"],
    "adv g1": ["--masking", "adversarial", "--masker_grad_scale", "1", "--reconstruction_weight", "0"],
    "adv g1+recon": ["--masking", "adversarial", "--masker_grad_scale", "1", "--reconstruction_weight", "1"],
    "adv g0.1": ["--masking", "adversarial", "--masker_grad_scale", "0.1", "--reconstruction_weight", "0"],
    "adv g0.1+recon": ["--masking", "adversarial", "--masker_grad_scale", "0.1", "--reconstruction_weight", "1"],
    "adv g0": ["--masking", "adversarial", "--masker_grad_scale", "0", "--reconstruction_weight", "0"],
    "adv g0+recon": ["--masking", "adversarial", "--masker_grad_scale", "0", "--reconstruction_weight", "1"],
    "adv g0 masker-lr x10": ["--masking", "adversarial", "--masker_grad_scale", "0", "--reconstruction_weight", "0",
                             "--masker_learning_rate", "1e-2"],
}
METRICS = ("eval_token_cosine", "eval_effective_rank", "eval_loss", "eval_accuracy", "eval_masker_spearman")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default=os.environ.get("ADV_MIDIBERT_DATA"), help="the shared data folder")
    p.add_argument("--work_dir", required=True, help="data set, runs and logs")
    p.add_argument("--output", default=None, help="JSON file for the table (written aside, then renamed)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated among: " + ", ".join(CONFIGS))
    p.add_argument("--seeds", default="0,1", help="pre-training seeds")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--max_seq_len", type=int, default=128)
    p.add_argument("--max_files", type=int, default=400, help="pieces of the pretrain recipe")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--max_eval_samples", type=int, default=256)
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"--configs: unknown {unknown}; choose among {list(CONFIGS)}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.data_root or not Path(args.data_root).is_dir():
        p.error("give --data_root (or ADV_MIDIBERT_DATA): the shared data folder")
    return args


def run(command: list[str], log: Path) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with open(log, "w") as f:
        f.write(" ".join(shlex.quote(c) for c in command) + "\n\n")
        f.flush()
        return subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, env=env)


def summarise(values: list[float]) -> dict:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}


def main(argv=None):
    args = parse_args(argv)
    work = Path(args.work_dir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not (data / "task_info.json").is_file():
        code = run([sys.executable, str(ROOT / "examples" / "prepare_data.py"), "--task", "pretrain", "--data_root",
                    args.data_root, "--output_dir", str(data), "--max_seq_len", str(args.max_seq_len),
                    "--max_files", str(args.max_files), "--num_proc", "2"], work / "logs" / "prepare.log")
        if code:
            sys.exit(f"building the data set failed (exit {code}); see {work / 'logs' / 'prepare.log'}")
    runs, failures, commands = {}, [], {}
    for name in args.configs:
        for seed in args.seeds:
            out = work / "runs" / name.replace(" ", "_").replace("+", "_") / f"seed{seed}"
            results_file = out / "all_results.json"
            flags = list(CONFIGS[name])
            if "--masker_learning_rate" not in flags:  # the masker head at the shared rate (pretrain.py's default
                flags += ["--masker_learning_rate", str(args.learning_rate)]  # for a detached masker is ten times it)
            command = [sys.executable, str(ROOT / "examples" / "pretrain.py"), "--dataset", str(data), "--preset",
                       args.preset, *flags, "--max_train_steps", str(args.steps),
                       "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size",
                       str(args.batch_size), "--learning_rate", str(args.learning_rate), "--max_eval_samples",
                       str(args.max_eval_samples), "--seed", str(seed), "--freeze_every", "1", "--output_dir",
                       str(out)]
            commands[f"{name} seed{seed}"] = typed_command(command[1:])
            if not results_file.is_file():
                start = time.time()
                code = run(command, work / "logs" / f"{out.parent.name}-seed{seed}.log")
                print(f"{name} seed {seed}: exit {code} in {time.time() - start:.0f} s", flush=True)
                if code:
                    failures.append(f"{name} seed {seed} (exit {code})")
                    continue
            runs.setdefault(name, []).append({"seed": seed, **{m: json.loads(results_file.read_text()).get(m)
                                                               for m in METRICS}})
    table = {name: {m: summarise([r[m] for r in rows]) for m in METRICS} for name, rows in runs.items()}
    header = f"{'configuration':24s}" + "".join(f"{m.replace('eval_', ''):>22s}" for m in METRICS)
    print(header)
    for name, row in table.items():
        cells = []
        for m in METRICS:
            s = row[m]
            cells.append(f"{s['mean']:>13.3f} ± {s['std']:.3f}" if s["mean"] is not None else f"{'-':>22s}")
        print(f"{name:24s}" + "".join(f"{c:>22s}" for c in cells))
    if failures:
        print("failed:", ", ".join(failures))
    if args.output:
        payload = {"setup": {k: v for k, v in vars(args).items()}, "configs": {c: CONFIGS[c] for c in args.configs},
                   "commands": commands, "runs": runs, "table": table, "failures": failures}
        target = Path(args.output)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target, payload)
        print(f"written {target}")


if __name__ == "__main__":
    main()
