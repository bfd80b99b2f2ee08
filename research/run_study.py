#!/usr/bin/env python
"""The method study: does the adversary's choice of notes make a better encoder than random masking?

Arms (:data:`ARMS`; each pre-trained with every seed of ``--seeds`` on the same corpus, preset and schedule). They
differ only in which notes are masked: every masker arm masks ``k = round(0.15 x notes)`` of each segment's real notes,
taken among its unfrozen notes (``--mask_budget share``), as random masking does, and the study checks that the
masked shares match random's within :data:`MASKED_SHARE_TOLERANCE` over the run:

======================  ======================================================================================
arm                     pre-training
======================  ======================================================================================
``random``              random-token MLM (BERT, 15 % of the notes, 80/10/10)
``adversarial-topk``    the masker's top-k notes, no freezing (``--freeze_every 0``): the masker's choice alone
``adversarial``         the method: top-k under the mask book with the freezing of :data:`FREEZING`
``easiest``             the control: the same machinery, the notes the masker finds *easiest* (bottom-k)
``scratch``             no pre-training (random initialisation of the same preset, one per seed)
======================  ======================================================================================

A seed fixes both the initialisation and the data order of every arm (the loops seed torch with it before the model is
built, and Accelerate's seedable sampler orders epoch ``e`` with ``seed + e``), so the arms are paired by seed.

The corpus (``--stages data``): a seeded random sample of whole pieces of every source of the ``pretrain`` recipe
(:func:`adversarial_midibert.data.sampling.sample_pieces`): ``--validation_pieces_per_source`` pieces of each source
for validation, then ``--pretrain_share`` of each source's other pieces for training, tokenised into
``WORK_DIR/data/pretrain`` (the recipe leaves out every validation and test piece of the downstream tasks). The
results file counts pieces and segments per source and split from the rows of that folder.

Evaluations of every model (the encoders are frozen except in fine-tuning):

- ``melody-finetune-10pct`` (the primary evaluation, :data:`PRIMARY`): full fine-tuning of POP909 melody on a seeded
  random sample of 10 % of the training songs (the same songs for every model), at one learning rate fixed before the
  runs, per-note accuracy on the 86 test songs;
- ``melody-probe`` / ``velocity-probe``: a per-note linear probe (logistic regression on the last hidden state) trained
  on the notes of a seeded random sample of ``--probe_train_pieces`` POP909 training songs (the same for every model)
  and scored on every note of the test songs (velocity hidden from the whole input for velocity); the sample's majority
  class is reported beside the test set's;
- ``composer-cv``: stratified 5-fold cross-validation of a logistic regression on the piece embeddings of all 411
  Pianist8 pieces.

For each comparison (:data:`COMPARISONS`) and evaluation: the difference of the seed-mean accuracies, a paired
two-level 95 % bootstrap interval over pieces and seeds
(:func:`adversarial_midibert.confidence_intervals.paired_bootstrap_difference`), a seed-paired Student t interval
(:func:`~adversarial_midibert.confidence_intervals.paired_t_interval`, df = seeds - 1) and the minimum detectable
effect from the wider of the two. The primary comparison is fixed in :data:`PRE_REGISTRATION`, which the docs page
prints before any figure.

Every stage is resumable: a finished pre-training has ``all_results.json`` (an interrupted one resumes from its newest
epoch checkpoint), a finished probe its JSON file, a finished fine-tuning its ``all_results.json``. Run it again with
the same arguments to continue; ``--stages report`` rewrites the results file and the docs page from what is finished
(partial results are marked as such); ``--stages plan`` writes the docs page with the set-up and the pre-registration
only (before the runs); ``--stages docs`` rewrites the docs page from ``--results_file`` alone.

The defaults (preset, steps, corpus share, six seeds) are sized to fit about six hours of one CPU thread for every
arm, seed and evaluation; the command that runs them states the measured reason with ``--note``, which the docs page
prints. Example (one job, one thread; the work folder outside the repository)::

    OMP_NUM_THREADS=1 python -m research.run_study --data_root ../shared/data --work_dir ../runs/study \\
        --results_file results/study-cpu.json --docs docs/study.md --note "Scale: ..."
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from adversarial_midibert.atomic_io import atomic_write_json, atomic_write_text
from adversarial_midibert.checkpointing import latest_checkpoint
from adversarial_midibert.command_line import command_line
from adversarial_midibert.confidence_intervals import (
    minimum_detectable_effect,
    paired_bootstrap_difference,
    paired_t_interval,
    stack_piece_counts,
)
from adversarial_midibert.evaluation import PieceResults
from adversarial_midibert.presets import NARROW_FINETUNE_LEARNING_RATE
from research.probing import ProbeResult

# the same runner, floors, data commands and JSON reader as the ablation
from research.run_ablation import FLOORS as TASK_FLOORS
from research.run_ablation import Runner, portable_command, prepare_command, read_json

logger = logging.getLogger("run_study")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# ---- The arms. They differ only in which notes are masked. ---------------------------------------------------------
# Every masker arm masks k = round(0.15 x real notes) among the unfrozen notes of a segment, as random masking does.
SHARE_BUDGET = ["--mask_budget", "share"]
# The freezing of the adversarial arm and of its easiest-first control: the rule the masker gate found to work
# (docs/masker-gate.md: a note is frozen while its masker score is >= 0.5), a pass after every epoch (the reference
# code's 5 would give one or two passes at this scale), never after the last step. Written explicitly, so the study does
# not move if the package's defaults do.
FREEZING = ["--freeze_every", "1", "--freezing_rule", "evidence", "--freeze_score_threshold", "0.5"]
ARMS = {  # name -> pre-training flags, added after --pretrain_args (None: no pre-training)
    "random": ["--masking", "random"],
    "adversarial-topk": ["--masking", "adversarial", *SHARE_BUDGET, "--freeze_every", "0"],
    "adversarial": ["--masking", "adversarial", *SHARE_BUDGET, *FREEZING],
    "easiest": ["--masking", "easiest", *SHARE_BUDGET, *FREEZING],
    "scratch": None,
}
COMPARISONS = (("adversarial", "random"), ("adversarial-topk", "random"), ("adversarial", "adversarial-topk"),
               ("adversarial", "easiest"), ("random", "scratch"))
EVALUATIONS = ("melody-finetune-10pct", "melody-probe", "velocity-probe", "composer-cv")
# The primary comparison, fixed before the runs: its evaluation's song share and learning rate are not flags.
PRIMARY = {"a": "adversarial", "b": "random", "evaluation": "melody-finetune-10pct", "train_song_share": 0.1,
           "learning_rate": NARROW_FINETUNE_LEARNING_RATE}
PRE_REGISTRATION = (
    "**Primary comparison (pre-registered: fixed in `research/run_study.py` before the runs).** adversarial (the arm "
    "with freezing) − random on low-resource POP909 melody fine-tuning: every model fully fine-tuned on the same "
    "seeded random 10 % of the 693 training songs, at the one learning rate 5e-4 (the narrow presets' rate, chosen "
    "before the runs; no choice on validation), per-note accuracy on the 86 test songs, averaged over the paired "
    "seeds. It is reported with a seed-paired Student t interval (df = seeds − 1) beside the two-level bootstrap over "
    "pieces and seeds, and the minimum detectable effect (5 % two-sided, 80 % power) of the wider of the two. "
    "Adversarial masking is found better (worse) only if both 95 % intervals lie above (below) 0; otherwise no "
    "difference is detected at this resolution, and the minimum detectable effect says how large a difference could "
    "have gone unseen. Every other comparison and evaluation is secondary. Composer cross-validation is secondary: "
    "its minimum detectable effect (about 4.8 points in the earlier study) comes from its 411 pieces, and more seeds "
    "cannot shrink it."
)
MASKED_SHARE_TOLERANCE = 0.01  # a masker arm's masked share of real notes over the run may differ from random's by this
# The data README's floors (test accuracy %) that the study's evaluations sit beside.
FLOORS = {task: TASK_FLOORS[task] for task in ("melody", "velocity", "composer")}
STAGES = ("data", "pretrain", "probe", "finetune", "report", "plan", "docs")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root", default=os.environ.get("ADV_MIDIBERT_DATA"), help="shared data folder")
    p.add_argument("--work_dir", required=True, help="runs, logs and data sets (outside the repository)")
    p.add_argument("--stages", default="data,pretrain,probe,finetune,report", help=f"some of {', '.join(STAGES)}")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", default="0,1,2,3,4,5", help="pre-training seeds (scratch: initialisation seeds)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--max_seq_len", type=int, default=128)
    p.add_argument("--corpus_seed", type=int, default=0,
                   help="seed of every piece sample (pre-training corpus and its validation, the low-resource songs, "
                        "the probes' songs): the same for every arm and model seed")
    p.add_argument("--pretrain_share", type=float, default=0.25,
                   help="share of each source's pieces (after validation) in the pre-training corpus")
    p.add_argument("--validation_pieces_per_source", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3000, help="pre-training steps of every arm")
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--pretrain_args", default="--masker_loss_form reference",
                   help="flags added to every pre-training before the arm's own (the method's reference settings)")
    p.add_argument("--probe_train_pieces", type=int, default=150)
    p.add_argument("--finetune_epochs", type=int, default=4)
    p.add_argument("--task_max_files", type=int, default=None,
                   help="quick runs only: tokenise at most this many pieces of each evaluation task")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--bootstrap_resamples", type=int, default=2000)
    p.add_argument("--results_file", default=None, help="default: WORK_DIR/study.json")
    p.add_argument("--docs", default=None, help="write the generated markdown page here")
    p.add_argument("--step_cost_file", default=None,
                   help="a results file of benchmarks/pretrain_step.py at the study's preset, batch and length: the "
                        "step cost ratios measured in one run (the runs' wall times are noisy on a shared machine)")
    p.add_argument("--note", action="append", default=[],
                   help="a sentence printed under the set-up in the docs page (repeatable), e.g. why this scale")
    p.add_argument("--in_process", action="store_true", help=argparse.SUPPRESS)  # tests: runs in this process
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
    if set(args.stages) - set(STAGES):
        p.error(f"--stages: unknown {sorted(set(args.stages) - set(STAGES))}; known: {', '.join(STAGES)}")
    if not 0 < args.pretrain_share <= 1:
        p.error(f"--pretrain_share must be in (0, 1], got {args.pretrain_share}")
    args.work_dir = Path(args.work_dir)
    return args


# ----------------------------------------------------------------------------------------------------- stages
def corpus_folder(args) -> Path:
    return args.work_dir / "data" / "pretrain"


def low_resource_folder(args) -> Path:
    return args.work_dir / "data" / "melody-10pct"


def build_corpus(args) -> None:
    """The pre-training corpus: whole pieces of every source of the ``pretrain`` recipe, drawn with
    ``--corpus_seed``: validation first, then a share of each source's other pieces for training."""
    from adversarial_midibert.data import build_dataset, resolve_recipe
    from adversarial_midibert.data.sampling import sample_pieces
    from adversarial_midibert.tokenization_octuple import OctupleTokenizer

    spec = resolve_recipe("pretrain", args.data_root)
    ids = [r.piece_id for r in spec.records]
    validation = sample_pieces(ids, args.validation_pieces_per_source, seed=args.corpus_seed)
    held_out = set(validation)
    train = sample_pieces([p for p in ids if p not in held_out], args.pretrain_share, seed=args.corpus_seed)
    chosen = held_out | set(train)
    logger.info("pre-training corpus: %d training and %d validation pieces", len(train), len(validation))
    build_dataset([r for r in spec.records if r.piece_id in chosen], task_type="pretrain",
                  splits={"train": train, "validation": validation}, task="pretrain",
                  tokenizer=OctupleTokenizer(max_seq_len=args.max_seq_len), num_proc=1, output_dir=corpus_folder(args),
                  extra_info={**spec.extra_info, "piece_sample": {
                      "seed": args.corpus_seed, "validation_pieces_per_source": args.validation_pieces_per_source,
                      "train_share_per_source": args.pretrain_share}})


def build_low_resource(args) -> None:
    """The melody data set with the training songs cut to a seeded random share (validation and test whole)."""
    from datasets import DatasetDict

    from adversarial_midibert.data import load_task_dataset, save
    from adversarial_midibert.data.sampling import sample_pieces, select_pieces

    dataset, info, tokenizer = load_task_dataset(args.work_dir / "data" / "melody")
    songs = sample_pieces(dataset["train"]["piece_id"], PRIMARY["train_song_share"], seed=args.corpus_seed, group=None)
    subset = DatasetDict({"train": select_pieces(dataset["train"], songs),
                          **{name: split for name, split in dataset.items() if name != "train"}})
    subset.build_report = {**dataset.build_report, "training_songs_sampled": {
        "share": PRIMARY["train_song_share"], "seed": args.corpus_seed, "songs": len(songs)}}
    subset.task_info, subset.tokenizer = info, tokenizer
    save(subset, low_resource_folder(args))


def data_stage(args, runner: Runner) -> None:
    runs = [(f"data-{recipe}", prepare_command(recipe, args, args.work_dir / "data" / recipe, args.task_max_files),
             None) for recipe in ("melody", "velocity", "composer")
            if not (args.work_dir / "data" / recipe / "task_info.json").is_file()]
    runner.run_all(runs)
    if not (corpus_folder(args) / "task_info.json").is_file():
        build_corpus(args)
    if (args.work_dir / "data/melody/task_info.json").is_file() and not (
            low_resource_folder(args) / "task_info.json").is_file():
        build_low_resource(args)


def pretrain_folder(args, arm: str, seed: int) -> Path:
    return args.work_dir / "pretrain" / arm / f"seed{seed}"


def pretrain_command(args, arm: str, seed: int) -> list[str]:
    out = pretrain_folder(args, arm, seed)
    command = [sys.executable, str(EXAMPLES / "pretrain.py"), "--dataset", str(corpus_folder(args)),
               "--preset", args.preset, "--max_train_steps", str(args.steps), "--per_device_train_batch_size",
               str(args.batch_size), "--learning_rate", str(args.learning_rate), "--seed", str(seed),
               "--output_dir", str(out), "--checkpointing_steps", "epoch", "--checkpoints_total_limit", "1",
               *shlex.split(args.pretrain_args), *ARMS[arm]]  # the arm's flags last: they win
    if latest_checkpoint(out) is not None:
        command += ["--resume_from_checkpoint", "latest"]
    return command


def pretrain_stage(args, runner: Runner) -> None:
    runner.run_all([(f"pretrain-{arm}-seed{seed}", pretrain_command(args, arm, seed), None)
                    for seed in args.seeds  # seed-major: a partial study has every arm of its first seeds
                    for arm in args.arms
                    if ARMS[arm] is not None and not (pretrain_folder(args, arm, seed) / "all_results.json").is_file()])


def model_source(args, arm: str, seed: int) -> str:
    """A pre-trained folder, or ``scratch:<seed>`` for a random initialisation."""
    return f"scratch:{seed}" if ARMS[arm] is None else str(pretrain_folder(args, arm, seed))


def model_ready(args, arm: str, seed: int) -> bool:
    return ARMS[arm] is None or (pretrain_folder(args, arm, seed) / "all_results.json").is_file()


def probe_file(args, arm: str, seed: int) -> Path:
    return args.work_dir / "probe" / arm / f"seed{seed}.json"


def probe_stage(args, runner: Runner) -> None:
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            out = probe_file(args, arm, seed)
            if out.is_file() or not model_ready(args, arm, seed):
                continue
            runs.append((f"probe-{arm}-seed{seed}", [
                sys.executable, str(Path(__file__).resolve()), "--work_dir", str(args.work_dir), "--preset",
                args.preset, "--probe_train_pieces", str(args.probe_train_pieces), "--corpus_seed",
                str(args.corpus_seed), "--probe_model", model_source(args, arm, seed), "--probe_output", str(out)],
                None))
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


def majority_classes(train_labels: np.ndarray, test_labels: np.ndarray) -> dict:
    """The probe's training sample's majority class beside the test set's: each share on its own notes, and what
    always answering the sample's majority class would score on the test notes."""
    train_labels = train_labels[train_labels >= 0]
    test_labels = test_labels[test_labels >= 0]
    train_counts, test_counts = np.bincount(train_labels), np.bincount(test_labels)
    train_major, test_major = int(train_counts.argmax()), int(test_counts.argmax())
    return {"train_majority_class": train_major, "train_majority_share": float(train_counts[train_major]
                                                                               / train_counts.sum()),
            "test_majority_class": test_major, "test_majority_share": float(test_counts[test_major]
                                                                            / test_counts.sum()),
            "train_majority_on_test": float((test_labels == train_major).mean())}


def run_probes(args) -> None:
    """One model's probes (``--probe_model``), written to ``--probe_output``."""
    from datasets import concatenate_datasets

    from adversarial_midibert.data import load_task_dataset
    from research.probing import cross_validated_piece_probe, encode_dataset, fit_linear_probe

    start = time.time()
    results = {"model": args.probe_model}
    encoder = None
    for task in ("melody", "velocity"):
        dataset, info, tokenizer = load_task_dataset(args.work_dir / "data" / task)
        encoder = encoder or load_encoder(args.probe_model, args.preset, tokenizer.vocab_sizes)
        hidden = info.get("hidden_attributes") or []
        train = encode_dataset(encoder, dataset["train"], hidden_attributes=hidden, max_pieces=args.probe_train_pieces,
                               sample_seed=args.corpus_seed)
        test = encode_dataset(encoder, dataset["test"], hidden_attributes=hidden)
        probe = fit_linear_probe(train, test, seed=args.probe_seed)
        results[f"{task}-probe"] = {"accuracy": probe.accuracy, "piece_ids": probe.piece_ids,
                                    "correct": probe.correct.tolist(), "total": probe.total.tolist(),
                                    "train_pieces": train.piece_ids, "train_notes": int(train.note_features.shape[0]),
                                    "hidden_attributes": hidden, "label_names": info.get("label_names"),
                                    **majority_classes(train.note_labels, test.note_labels)}
    dataset, _, _ = load_task_dataset(args.work_dir / "data" / "composer")
    pieces = encode_dataset(encoder, concatenate_datasets([dataset[s] for s in ("train", "validation", "test")]))
    probe = cross_validated_piece_probe(pieces, folds=5, seed=args.probe_seed)
    results["composer-cv"] = {"accuracy": probe.accuracy, "piece_ids": probe.piece_ids,
                              "correct": probe.correct.tolist(), "total": probe.total.tolist()}
    results["runtime_s"] = round(time.time() - start, 1)
    Path(args.probe_output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.probe_output), results)


def finetune_folder(args, arm: str, seed: int) -> Path:
    return args.work_dir / "finetune" / arm / f"seed{seed}"


def finetune_stage(args, runner: Runner) -> None:
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            out = finetune_folder(args, arm, seed)
            if (out / "all_results.json").is_file() or not model_ready(args, arm, seed):
                continue
            init = (["--from_scratch", "--preset", args.preset] if ARMS[arm] is None
                    else ["--model_name_or_path", model_source(args, arm, seed)])
            runs.append((f"finetune-{arm}-seed{seed}", [
                sys.executable, str(EXAMPLES / "finetune.py"), "--dataset", str(low_resource_folder(args)), *init,
                "--num_train_epochs", str(args.finetune_epochs), "--learning_rate", str(PRIMARY["learning_rate"]),
                "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size", "64",
                "--early_stopping_patience", "0", "--metric_for_best_model", "accuracy", "--seed", str(100 + seed),
                "--output_dir", str(out), "--overwrite_output_dir"], None))
    runner.run_all(runs)


# ----------------------------------------------------------------------------------------------------- report
def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def arm_summary(args, arm: str) -> dict:
    """Seeds done, steps, freezing passes, masked share per epoch and over the run (each run's logs), run figures."""
    if ARMS[arm] is None:
        return {"seeds": [s for s in args.seeds if probe_file(args, arm, s).is_file()], "pretrain_steps": 0,
                "flags": None, "runs": []}
    runs = []
    for seed in args.seeds:
        folder = pretrain_folder(args, arm, seed)
        if not (folder / "all_results.json").is_file():
            continue
        results = read_json(folder / "all_results.json")
        train = _jsonl(folder / "train_log.jsonl")
        log = args.work_dir / "logs" / f"pretrain-{arm}-seed{seed}.log"  # every invocation's (older code: the last)
        resumed = log.is_file() and "Resumed from checkpoint" in log.read_text(encoding="utf-8", errors="replace")
        runs.append({
            "seed": seed,
            "steps": results.get("train_steps"),
            "resumed": resumed,
            # before feb3965 a resumed run's runtime counted its last stretch only: not a wall time to compare
            "runtime_s": None if resumed else results.get("train_runtime_s"),
            "freezing_passes": results.get("freezing_passes"),
            "freezing_steps": [row["step"] for row in _jsonl(folder / "freezing_log.jsonl")],
            "attribute_weight_updates": len(_jsonl(folder / "eval_log.jsonl")),
            "masked_share_by_epoch": results.get("masked_share_by_epoch"),
            "masked_share": _mean(row["masked_share"] for row in train),  # over every step of the run
            **{key: results.get(key) for key in ("frozen_fraction", "eval_loss", "eval_masker_spearman",
                                                 "eval_masker_spearman_within", "eval_token_cosine",
                                                 "eval_effective_rank")},
        })
    by_epoch = [r["masked_share_by_epoch"] for r in runs if r["masked_share_by_epoch"]]
    epochs = min((len(e) for e in by_epoch), default=0)
    summary = {"seeds": [r["seed"] for r in runs], "pretrain_steps": args.steps, "flags": ARMS[arm],
               "masked_share_by_epoch": [float(np.mean([e[i] for e in by_epoch])) for i in range(epochs)]}
    for key in ("freezing_passes", "attribute_weight_updates", "masked_share", "runtime_s", "eval_loss",
                "eval_masker_spearman", "eval_masker_spearman_within", "eval_token_cosine", "eval_effective_rank",
                "frozen_fraction"):
        summary[key] = _mean(r[key] for r in runs)
    summary["runs"] = runs
    return summary


def masked_share_check(arms: dict) -> None:
    """Each pre-trained arm's masked share of real notes over the run against random's (in place: ``masked_share_gap``
    and ``masked_share_matched``, within :data:`MASKED_SHARE_TOLERANCE`)."""
    reference = arms.get("random", {}).get("masked_share")
    for summary in arms.values():
        share = summary.get("masked_share")
        gap = share - reference if share is not None and reference is not None else None
        summary["masked_share_gap"] = gap
        summary["masked_share_matched"] = None if gap is None else bool(abs(gap) <= MASKED_SHARE_TOLERANCE)


def corpus_summary(args) -> dict:
    """Pieces and segments per source and split of the rows the runs used; the low-resource songs; the probes' songs
    and majority classes (from a probe file: every model's probe uses the same sample)."""
    from adversarial_midibert.data import load_task_dataset
    from adversarial_midibert.data.sampling import pieces_and_segments

    out: dict = {"seed": args.corpus_seed, "pretrain": None, "low_resource_melody": None, "probes": {}}
    if (corpus_folder(args) / "task_info.json").is_file():
        dataset, info, _ = load_task_dataset(corpus_folder(args), verify=False)
        out["pretrain"] = {name: pieces_and_segments(split["piece_id"]) for name, split in dataset.items()}
        out["pretrain_sample"] = info.get("piece_sample")
    if (low_resource_folder(args) / "task_info.json").is_file():
        dataset, _, _ = load_task_dataset(low_resource_folder(args), verify=False)
        train = dataset["train"]["piece_id"]
        out["low_resource_melody"] = {"songs": len(set(train)), "segments": len(train),
                                      **dataset.build_report.get("training_songs_sampled", {})}
    probe = next((read_json(probe_file(args, arm, seed)) for seed in args.seeds for arm in args.arms
                  if probe_file(args, arm, seed).is_file()), None)
    for task in ("melody-probe", "velocity-probe"):
        if probe is not None:
            entry = probe[task]
            out["probes"][task] = {"train_songs": len(entry["train_pieces"]), "train_notes": entry["train_notes"],
                                   **{k: entry[k] for k in entry if "majority" in k}, "labels": entry["label_names"]}
    return out


def evaluation_counts(args, arm: str, evaluation: str) -> tuple[list[int], list, list, list[float], list[str]]:
    """Per-seed ``(correct, total)`` rows over the evaluation's pieces, the seeds, the accuracies, the pieces."""
    seeds, correct, total, accuracies, order = [], [], [], [], None
    for seed in args.seeds:
        if evaluation == PRIMARY["evaluation"]:
            path = finetune_folder(args, arm, seed) / "test_piece_results.json"
            if not path.is_file():
                continue
            run = PieceResults.from_records(read_json(path))
        else:
            path = probe_file(args, arm, seed)
            if not path.is_file():
                continue
            entry = read_json(path)[evaluation]
            run = ProbeResult(entry["piece_ids"], np.asarray(entry["correct"]), np.asarray(entry["total"]))
        c, t, order = stack_piece_counts([run], "note", order)  # every seed in the first seed's piece order
        seeds.append(seed), correct.append(c[0]), total.append(t[0])
        accuracies.append(float(correct[-1].sum() / max(total[-1].sum(), 1)))
    return seeds, correct, total, accuracies, order or []


def compare(args, evaluation: str, a: dict, b: dict) -> dict:
    """Difference of the seed means, bootstrap and seed-paired t intervals, and the minimum detectable effect."""
    interval = paired_bootstrap_difference(np.stack(a["correct"]), np.stack(a["total"]), np.stack(b["correct"]),
                                           np.stack(b["total"]), n_resamples=args.bootstrap_resamples, seed=0)
    out = {"difference": interval.estimate, "ci95": [interval.low, interval.high],
           "excludes_zero": interval.excludes_zero, "pieces": len(a["order"]), "method": interval.method,
           "ci95_t": None, "seeds_paired": None}
    widest = (interval.high - interval.low, "bootstrap", None)
    paired = sorted(set(a["seeds"]) & set(b["seeds"]))
    if len(paired) >= 2:
        accuracy_a = [a["accuracies"][a["seeds"].index(s)] for s in paired]
        accuracy_b = [b["accuracies"][b["seeds"].index(s)] for s in paired]
        t = paired_t_interval(accuracy_a, accuracy_b)
        out.update(ci95_t=[t.low, t.high], excludes_zero_t=t.excludes_zero, seeds_paired=paired, t_df=t.df)
        widest = max(widest, (t.high - t.low, "t", t.df))
    out["mde"] = minimum_detectable_effect(-widest[0] / 2, widest[0] / 2, df=widest[2])
    out["mde_from"] = widest[1]
    return out


def comparisons(args) -> tuple[list[dict], dict]:
    table, cells, out = {}, {}, []
    for evaluation in EVALUATIONS:
        table[evaluation] = {}
        for arm in args.arms:
            seeds, correct, total, accuracies, order = evaluation_counts(args, arm, evaluation)
            cells[evaluation, arm] = {"seeds": seeds, "correct": correct, "total": total, "accuracies": accuracies,
                                      "order": order}
            table[evaluation][arm] = {"seeds": len(accuracies), "seed_ids": seeds, "accuracies": accuracies,
                                      "mean": _mean(accuracies),
                                      "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None}
    for evaluation in EVALUATIONS:
        for a, b in COMPARISONS:
            if a not in args.arms or b not in args.arms:
                continue
            entry = {"task": evaluation.split("-")[0], "evaluation": evaluation, "a": a, "b": b,
                     "primary": (a, b, evaluation) == (PRIMARY["a"], PRIMARY["b"], PRIMARY["evaluation"]),
                     "seeds_a": len(cells[evaluation, a]["seeds"]), "seeds_b": len(cells[evaluation, b]["seeds"])}
            ca, cb = cells[evaluation, a], cells[evaluation, b]
            if not ca["seeds"] or not cb["seeds"] or ca["order"] != cb["order"]:
                out.append({**entry, "difference": None, "ci95": None, "ci95_t": None, "mde": None,
                            "status": "not run yet"})
                continue
            out.append({**entry, **compare(args, evaluation, ca, cb)})
    return out, table


def commands_of(args) -> dict:
    path = args.work_dir / "commands.json"
    return read_json(path) if path.is_file() else {}


def benchmark_step_costs(path, arms) -> dict:
    """Per arm: median step time and counted FLOPs of its kind of step (random, or a masker step), relative to a
    random step, from one run of ``benchmarks/pretrain_step.py``."""
    if path is None:
        return {}
    bench = read_json(Path(path))
    times = {kind: bench["steps"][kind]["median_ms"] for kind in ("random", "adversarial")}
    flops = bench["flops_per_token"]["mflop_per_token"]
    kinds = {arm: "random" if arm == "random" else "adversarial" for arm, flags in arms.items() if flags}
    return {arm: {"time_ratio": times[kind] / times["random"], "flop_ratio": flops[kind] / flops["random"],
                  "benchmark": bench.get("command")} for arm, kind in kinds.items()}


def portable_paths(value, work_dir: Path, name: str = "WORK_DIR"):
    """``value`` with this machine's path of the work folder written ``name`` in every string (settings, commands,
    notes), so that the results file names no path of the machine it was made on."""
    if isinstance(value, dict):
        return {k: portable_paths(v, work_dir, name) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, work_dir, name) for v in value]
    if isinstance(value, str):
        for spelling in (str(work_dir.resolve()), str(work_dir)):
            value = value.replace(spelling, name)
        # a run spelled the folder with more ``../`` than the report (another working folder): the same folder
        return re.sub(rf"(?:\.\./)+{re.escape(name)}", name, value)
    return value


def settings_of(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if not k.startswith("probe_") or k == "probe_train_pieces"}


def report(args, command: str) -> dict:
    arms = {arm: arm_summary(args, arm) for arm in args.arms}
    masked_share_check(arms)
    measured = benchmark_step_costs(args.step_cost_file, {arm: ARMS[arm] for arm in args.arms})
    random_cost = arms.get("random", {}).get("runtime_s")
    for arm, summary in arms.items():
        cost = summary.get("runtime_s")
        # wall time of the runs themselves against random's, same steps (noisy when other jobs share the machine)
        summary["wall_step_cost_ratio"] = cost / random_cost if cost and random_cost else None
        bench = measured.get(arm)
        summary["step_cost_ratio"] = bench["time_ratio"] if bench else summary["wall_step_cost_ratio"]
        summary["step_flop_ratio"] = bench["flop_ratio"] if bench else None
    compared, accuracy = comparisons(args)
    expected = len(args.seeds) * len(args.arms)
    finished = sum(len(a["seeds"]) for a in arms.values())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=EXAMPLES, capture_output=True, text=True).stdout.strip()
    results = {
        "study": "adversarial vs random and easiest-first masking at matched masked shares; low-resource fine-tuning "
                 "(primary) and frozen probes",
        "complete": finished == expected and all(c["difference"] is not None for c in compared),
        "pre_registration": PRE_REGISTRATION,
        "primary": {**PRIMARY, "result": next((c for c in compared if c["primary"]), None)},
        "settings": settings_of(args),
        "masked_share_tolerance": MASKED_SHARE_TOLERANCE,
        "corpus": corpus_summary(args),
        "arms": arms,
        "accuracy": accuracy,
        "comparisons": compared,
        "floors": FLOORS,
        "step_cost_benchmark": next(iter(measured.values()))["benchmark"] if measured else None,
        "commit": commit,
        "command": command,
        "run_commands": {k: portable_command(v) for k, v in commands_of(args).items()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    return portable_paths(results, args.work_dir)


# ----------------------------------------------------------------------------------------------------- the page
def _num(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _pct(value, digits=1):
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _interval(pair) -> str:
    return "–" if pair is None else f"[{100 * pair[0]:+.2f}, {100 * pair[1]:+.2f}]"


def verdict(comparison: dict) -> str:
    """One sentence per comparison: a difference both intervals place on one side of 0, or none found at this
    resolution (with the minimum detectable effect)."""
    a, b, evaluation = comparison["a"], comparison["b"], comparison["evaluation"]
    label = "Primary (pre-registered): " if comparison["primary"] else ""
    if comparison["difference"] is None:
        return f"{label}{evaluation}: {a} vs {b} {comparison['status']}."
    size = (f"{100 * comparison['difference']:+.2f} points, bootstrap {_interval(comparison['ci95'])}, "
            f"t {_interval(comparison.get('ci95_t'))}")
    lows = [interval[0] for interval in (comparison["ci95"], comparison.get("ci95_t")) if interval]
    highs = [interval[1] for interval in (comparison["ci95"], comparison.get("ci95_t")) if interval]
    if comparison.get("ci95_t") and (min(lows) > 0 or max(highs) < 0):
        return f"{label}{evaluation}: {a} {'above' if comparison['difference'] > 0 else 'below'} {b}, {size}."
    return (f"{label}{evaluation}: no difference between {a} and {b} detected, {size}; this evaluation detects "
            f"{100 * comparison['mde']:.2f} points four times in five ({comparison['mde_from']} interval).")


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


def setup_lines(settings: dict) -> list[str]:
    """The set-up, the arms' flags and the pre-registration: all the page says before any figure."""
    lines = ["## Pre-registration", "", PRE_REGISTRATION, "",
             "## Set-up", "",
             f"Preset `{settings['preset']}`, segments of {settings['max_seq_len']} rows, {settings['steps']} "
             f"pre-training steps of batch {settings['batch_size']} for every arm, learning rate "
             f"{settings['learning_rate']} (linear decay, 5 % warm-up), seeds {settings['seeds']} (a seed fixes the "
             "initialisation and the data order of every arm: the arms are paired by seed), flags of every "
             f"pre-training `{settings['pretrain_args']}`. Corpus: whole pieces drawn with seed "
             f"{settings['corpus_seed']} from every source of the `pretrain` recipe (which leaves out every validation "
             f"and test piece of the downstream tasks): {settings['validation_pieces_per_source']} pieces of each "
             f"source for validation, then {settings['pretrain_share']:.0%} of each source's other pieces for "
             "training. The masker arms count their budget over the real notes (`--mask_budget share`): the reference "
             "budget `padded` is not used, and at this preset it would change nothing anyway, since its "
             "`max_position_embeddings` equals the segment length.", "",
             *[f"- {note}" for note in settings.get("note", [])], *([""] if settings.get("note") else []),
             "| arm | pre-training flags (after the common ones) |", "|---|---|"]
    for arm in settings["arms"]:
        flags = ARMS.get(arm)
        lines.append(f"| {arm} | {'no pre-training' if flags is None else '`' + ' '.join(flags) + '`'} |")
    return lines + [""]


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = ["# The method study (CPU)", "",
             "<!-- generated by research/run_study.py from its results file; do not edit by hand -->", "",
             f"Command: `{results['command']}` (`WORK_DIR` is the `--work_dir` of the runs; "
             f"commit `{results['commit'][:10]}`, {results['date']}). "
             + ("All runs finished." if results["complete"] else "**Partial: some runs have not finished yet**; "
                "the missing cells say so."), "",
             *setup_lines(settings)]
    primary = results["primary"]["result"]
    lines += ["## Primary result", "", f"- {verdict(primary)}" if primary else "- not run yet", ""]
    lines += ["## Corpus (pieces / segments, from the rows the runs used)", "",
              "| split | " + " | ".join(_sources(results["corpus"])) + " |",
              "|---|" + "---|" * len(_sources(results["corpus"]))]
    for split, counts in (results["corpus"].get("pretrain") or {}).items():
        lines.append(f"| {split} | " + " | ".join(
            f"{counts[s]['pieces']} / {counts[s]['segments']}" if s in counts else "0 / 0"
            for s in _sources(results["corpus"])) + " |")
    low = results["corpus"].get("low_resource_melody")
    if low:
        lines += ["", f"Low-resource melody fine-tuning: {low['songs']} training songs ({low['segments']} segments), "
                      f"a seeded random {low.get('share', 0):.0%} of the training songs."]
    for task, probe in results["corpus"].get("probes", {}).items():
        names = probe.get("labels") or []

        def label(index: int) -> str:
            return names[index] if index < len(names) else str(index)

        lines.append(f"- {task}: trained on {probe['train_songs']} songs drawn at random ({probe['train_notes']} "
                     f"notes); their majority class {label(probe['train_majority_class'])} is "
                     f"{_pct(probe['train_majority_share'])} % of them and {_pct(probe['train_majority_on_test'])} % "
                     f"of the test notes, whose own majority class {label(probe['test_majority_class'])} is "
                     f"{_pct(probe['test_majority_share'])} %.")
    lines += ["", "## Arms", "",
              "Masked share: per epoch, the mean over its steps of the share of each segment's real notes masked; "
              f"over the run it must match random's within {100 * results['masked_share_tolerance']:.0f} point. "
              "Step cost: " + (f"the benchmark's median step time and counted FLOPs relative to a random step, from "
                               f"`{results['step_cost_benchmark']}`, and the runs' own wall time (runs resumed from a "
                               "checkpoint left out)."
                               if results.get("step_cost_benchmark") else "the runs' own wall time against random's."),
              "",
              "| arm | seeds | steps | freezing passes | masked share over the run | vs random (points) | matched | "
              "masked share by epoch | step cost vs random: benchmark time / FLOPs / runs' wall time | frozen at "
              "the end | masker Spearman pooled / within | validation loss (random 15 %) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, a in results["arms"].items():
        spearman = ("–" if a.get("eval_masker_spearman") is None else
                    f"{_num(a['eval_masker_spearman'], '.2f')} / {_num(a.get('eval_masker_spearman_within'), '.2f')}")
        matched = {None: "–", True: "yes", False: "**no**"}[a.get("masked_share_matched")]
        by_epoch = " ".join(_pct(s) for s in a.get("masked_share_by_epoch") or []) or "–"
        lines.append(f"| {arm} | {len(a['seeds'])} | {a['pretrain_steps']} | {_num(a.get('freezing_passes'), '.0f')} "
                     f"| {_pct(a.get('masked_share'), 2)} % | {_num(_scaled(a.get('masked_share_gap')), '+.2f')} | "
                     f"{matched} | {by_epoch} | {_num(a.get('step_cost_ratio'), '.2f')} / "
                     f"{_num(a.get('step_flop_ratio'), '.2f')} / {_num(a.get('wall_step_cost_ratio'), '.2f')} | "
                     f"{_pct(a.get('frozen_fraction'))} % | {spearman} | {_num(a.get('eval_loss'), '.3f')} |")
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
    lines += ["", "## Comparisons (points)", "",
              "Bootstrap: paired two-level 95 % bootstrap over pieces (shared by both arms) and seeds (per arm). "
              "t: Student t interval of the per-seed differences (seeds paired, df = seeds − 1). Minimum detectable "
              "effect (5 % two-sided, 80 % power) from the wider of the two.", "",
              "| evaluation | comparison | difference | bootstrap 95 % | t 95 % | minimum detectable effect |",
              "|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        name = f"{c['a']} − {c['b']}" + (" (**primary**)" if c["primary"] else "")
        if c["difference"] is None:
            lines.append(f"| {c['evaluation']} | {name} | {c['status']} | | | |")
            continue
        lines.append(f"| {c['evaluation']} | {name} | {100 * c['difference']:+.2f} | {_interval(c['ci95'])} | "
                     f"{_interval(c.get('ci95_t'))} | {100 * c['mde']:.2f} ({c['mde_from']}) |")
    lines += ["", "## Reading (generated from the comparisons)", ""]
    lines += [f"- {verdict(c)}" for c in results["comparisons"] if not c["primary"]]
    lines += [f"- {sentence}" for sentence in floor_sentences(results)]
    lines += ["", "## Floors of the data README (test accuracy %)", "",
              "The probes and the low-resource fine-tuning are sharp, cheap evaluations of the encoders, not attempts "
              "at the floors; they are listed beside them as the brief asks.", ""]
    for task, floors in results["floors"].items():
        lines.append(f"- {task}: " + ", ".join(f"{k} {v}" for k, v in floors.items()))
    return "\n".join(lines) + "\n"


def _sources(corpus: dict) -> list[str]:
    return sorted({source for counts in (corpus.get("pretrain") or {}).values() for source in counts})


def _scaled(value):
    return None if value is None else 100 * value


def plan_markdown(args, command: str) -> str:
    """The page before the runs: the set-up and the pre-registration, no figure."""
    settings = portable_paths(settings_of(args), args.work_dir)
    return "\n".join(["# The method study (CPU): plan", "",
                      "<!-- generated by research/run_study.py --stages plan; do not edit by hand -->", "",
                      f"Command: `{portable_paths(command, args.work_dir)}`. No run has been made with this set-up "
                      "yet; the results will replace this page.", "", *setup_lines(settings)])


def main(argv=None):
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    args = parse_args(argv)
    if args.probe_model:
        run_probes(args)
        return
    command = command_line("python -m research.run_study", argv)
    results_file = Path(args.results_file or args.work_dir / "study.json")
    if "docs" in args.stages or "plan" in args.stages:
        if not args.docs:
            raise SystemExit("--stages docs / plan: --docs names the page to write")
        text = markdown(read_json(results_file)) if "docs" in args.stages else plan_markdown(args, command)
        Path(args.docs).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.docs), text)
        logger.info("page: %s", args.docs)
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.work_dir, jobs=args.jobs, threads_per_job=1, in_process=args.in_process)
    commands_path = args.work_dir / "commands.json"

    def keep_commands():
        merged = {**commands_of(args), **runner.commands}
        atomic_write_json(commands_path, merged)

    stages = {"data": data_stage, "pretrain": pretrain_stage, "probe": probe_stage, "finetune": finetune_stage}
    for name in ("data", "pretrain", "probe", "finetune"):
        if name in args.stages:
            if args.data_root is None and not (args.work_dir / "data").is_dir():
                raise SystemExit("--data_root (or ADV_MIDIBERT_DATA) is needed to build the data sets")
            stages[name](args, runner)
            keep_commands()
    if "report" in args.stages:
        results = report(args, command)
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
