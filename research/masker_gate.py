"""The masker gate: does the adversary find the notes that context cannot give away?

Pre-trains the ``tiny`` preset on segments with planted context-free notes (:mod:`research.planted_corpus`) with
each masking arm and several seeds, and at every freezing pass reports, against the planted ground truth:

- ``auroc``: the masker's within-segment AUROC for planted notes on held-out segments (mean over segments);
- ``freeze_precision`` / ``freeze_recall``: the notes frozen at that pass against the planted notes (training
  segments), and ``frozen_precision`` / ``frozen_recall`` for every note frozen after it;
- ``frozen_share``: the training notes frozen after the pass; ``masked_share``: the real notes masked per step
  since the previous pass;
- ``recovery_accuracy``: the recoverer's accuracy on planted and on determined notes of the held-out segments
  under one fixed random 15 % masking (the random arm is the reference).

The reading, stated before the runs (docs/masker-gate.md): a masker arm *works* if its AUROC at the first freezing
pass is >= 0.8 and its first-pass freezing precision is >= 3x the planted share (means over seeds); it *fails* if
the AUROC is <= 0.6 or the precision <= 1.5x the planted share; otherwise it is *partial*.

Each (arm, seed) run writes its own JSON file into ``--run_dir`` as it ends, so an interrupted gate resumes where it
stopped; ``--report`` rebuilds the results file, the docs page and its figure from those files::

    python -m research.masker_gate --run_dir runs/gate-synthetic --output results/masker-gate.json
    python -m research.masker_gate --corpus real --dataset data/pretrain --run_dir runs/gate-real \
        --output results/masker-gate.json
    python -m research.masker_gate --report results/masker-gate.json --docs docs/masker-gate.md
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from adversarial_midibert import AdvMidiBertConfig, AdvMidiBertForMaskedLM, OctupleTokenizer
from adversarial_midibert.atomic_io import atomic_write_json, atomic_write_text
from adversarial_midibert.constants import BAR, NUM_SPECIAL_TOKENS, PITCH
from adversarial_midibert.mask_book import MaskerScoreCache, PackedMaskBook
from adversarial_midibert.masking import choose_random_positions, corrupt, maskable_positions
from adversarial_midibert.presets import preset_config_kwargs
from adversarial_midibert.pretraining import (
    MASKER_METHODS,
    AdversarialMLM,
    AttributeWeights,
    UniformSampler,
    freezing_pass,
    step_generator,
)
from benchmarks.results_file import ResultsFile

from .planted_corpus import PlantedSegments, planted_real_segments, synthetic_corpus

__all__ = ["GateArm", "ARMS", "GateSettings", "within_segment_auroc", "freezing_precision_recall", "verdict",
           "run_arm", "summarise", "markdown"]


@dataclass(frozen=True)
class GateArm:
    """One way of choosing the masked notes; the arms differ only in the fields that are not at their defaults."""

    masking: str = "adversarial"
    masker_grad_scale: float = 1.0
    mask_budget: str = "notes"
    freezing_rule: str = "reference"
    masker_scores_from: str = "pass"

    def step_options(self) -> dict:
        """Keyword arguments of :class:`AdversarialMLM` for this arm (``masker_scores_from`` only for a cache)."""
        options = {"masking": self.masking, "masker_grad_scale": self.masker_grad_scale,
                   "mask_budget": self.mask_budget}
        if self.masker_scores_from != "pass":
            options["masker_scores_from"] = self.masker_scores_from
        return options


ARMS = {
    "random": GateArm(masking="random"),
    "adversarial": GateArm(),  # the reference schedule: u ~ U(0.1, 0.3) of the unfrozen notes, reference freezing
    "easiest": GateArm(masking="easiest"),
    "detached": GateArm(masker_grad_scale=0.0),
    "evidence": GateArm(mask_budget="share", freezing_rule="evidence"),
    "cached": GateArm(masker_scores_from="cache"),
    "cached-evidence": GateArm(mask_budget="share", freezing_rule="evidence", masker_scores_from="cache"),
}
MASKER_ARMS = tuple(name for name, arm in ARMS.items() if arm.masking in MASKER_METHODS)
WORKS_AUROC, FAILS_AUROC = 0.8, 0.6
WORKS_PRECISION_RATIO, FAILS_PRECISION_RATIO = 3.0, 1.5


@dataclass
class GateSettings:
    """The gate's training recipe (the same for every arm)."""

    preset: str = "tiny"
    train_segments: int = 1024
    heldout_segments: int = 256
    planted_share: float = 0.15
    epochs: int = 38
    first_freeze_epoch: int = 19
    freeze_every: int = 4
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    max_grad_norm: float = 3.0
    freeze_score_threshold: float = 0.5
    corpus_seed: int = 0
    num_bars: int = 4
    motif_notes: int = 3
    real_window: int = 96

    def is_freezing_epoch(self, epoch: int) -> bool:
        """Whether a freezing pass follows this (1-based) epoch: from ``first_freeze_epoch`` on, every
        ``freeze_every`` epochs, never after the last."""
        return (self.first_freeze_epoch <= epoch < self.epochs
                and (epoch - self.first_freeze_epoch) % self.freeze_every == 0)


# ------------------------------------------------------------------------------------------------------ metrics
def within_segment_auroc(scores: np.ndarray, planted: np.ndarray, notes: np.ndarray) -> float:
    """Mean over segments of the AUROC of ``scores`` for planted notes among the segment's real notes.

    Segments with no planted note or no other note are left out (their AUROC is undefined); NaN if none is left.

    Args:
        scores (`np.ndarray` of shape `(S, L)`), planted (`np.ndarray` of shape `(S, L)`, bool), notes (`np.ndarray`
        of shape `(S, L)`, bool): the real notes (not BOS, EOS or padding).
    """
    values = []
    for row_scores, row_planted, row_notes in zip(scores, planted, notes):
        labels = row_planted[row_notes]
        if labels.all() or not labels.any():
            continue
        values.append(roc_auc_score(labels, row_scores[row_notes]))
    return float(np.mean(values)) if values else math.nan


def freezing_precision_recall(frozen: np.ndarray, planted: np.ndarray, notes: np.ndarray) -> tuple[float, float]:
    """Precision and recall of ``frozen`` notes against ``planted`` ones, over the real notes (NaN precision when
    nothing is frozen)."""
    labels, predicted = planted[notes], frozen[notes]
    precision = precision_score(labels, predicted, zero_division=np.nan) if predicted.any() else math.nan
    return float(precision), float(recall_score(labels, predicted, zero_division=np.nan))


def verdict(auroc: float, precision: float, planted_share: float) -> str:
    """The reading stated before the runs: ``"works"``, ``"fails"`` or ``"partial"`` (NaN counts as failing)."""
    ratio = round(precision / planted_share, 9)  # 0.225 / 0.15 is 1.5 here, not 1.5000000000000002
    if not (auroc > FAILS_AUROC) or not (ratio > FAILS_PRECISION_RATIO):
        return "fails"
    if auroc >= WORKS_AUROC and ratio >= WORKS_PRECISION_RATIO:
        return "works"
    return "partial"


# ------------------------------------------------------------------------------------------------------ corpus
def make_corpus(args, settings: GateSettings, tokenizer: OctupleTokenizer) -> tuple[PlantedSegments, PlantedSegments,
                                                                                      dict]:
    """Training and held-out segments, and what they are (recorded in the results)."""
    total = settings.train_segments + settings.heldout_segments
    if args.corpus == "synthetic":
        corpus = synthetic_corpus(tokenizer, total, settings.planted_share, seed=settings.corpus_seed,
                                  num_bars=settings.num_bars, motif_notes=settings.motif_notes)
        source = {"kind": "synthetic", "segments": total}
    else:
        from adversarial_midibert.data import load_task_dataset

        data, _, _ = load_task_dataset(args.dataset)
        split = data["train"]
        rng = np.random.default_rng(settings.corpus_seed)
        chosen = np.sort(rng.choice(len(split), size=min(total, len(split)), replace=False))
        rows = split.select(chosen)
        windows = []
        for ids in rows["input_ids"]:
            ids = np.asarray(ids, dtype=np.int64)[1:-1]  # the notes (segments are stored without padding)
            start = int(rng.integers(max(len(ids) - settings.real_window, 0) + 1))
            window = ids[start : start + settings.real_window].copy()
            window[:, BAR] -= window[0, BAR] - NUM_SPECIAL_TOKENS  # bars count from the window's first note
            windows.append(window)
        max_notes = preset_config_kwargs(settings.preset)["max_position_embeddings"] - 2
        corpus = planted_real_segments(windows, settings.planted_share, seed=settings.corpus_seed,
                                       max_notes=max_notes)
        pieces = [str(p) for p in rows["piece_id"]]
        sources = {}
        for piece in pieces:
            name = piece.split("/")[0]
            sources[name] = sources.get(name, 0) + 1
        source = {"kind": "real", "dataset": Path(args.dataset).name, "segments": len(rows),
                  "pieces": len(set(pieces)), "segments_per_source": sources, "window_notes": settings.real_window}
    order = np.random.default_rng(settings.corpus_seed + 1).permutation(len(corpus))
    train, heldout = corpus.subset(order[: settings.train_segments]), corpus.subset(order[settings.train_segments:])
    source["train_segments"], source["heldout_segments"] = len(train), len(heldout)
    source["planted_share"] = {"train": round(train.planted_share, 4), "heldout": round(heldout.planted_share, 4)}
    return train, heldout, source


def batches(segments: PlantedSegments, batch_size: int, order: np.ndarray | None = None):
    """Batches of a corpus as the step takes them (``segment_id`` = the row in ``segments``)."""
    order = np.arange(len(segments)) if order is None else order
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield {"input_ids": torch.from_numpy(segments.input_ids[index]),
               "attention_mask": torch.from_numpy(segments.attention_mask[index]),
               "segment_id": torch.from_numpy(index.astype(np.int64))}


# ------------------------------------------------------------------------------------------------------ one run
@torch.no_grad()
def heldout_figures(step: AdversarialMLM, heldout: PlantedSegments, batch_size: int) -> dict:
    """AUROC of the masker (masker arms) and recovery accuracy on planted and determined notes."""
    step.eval()
    scores, hits, cells, pitch_hits = [], [], [], []
    recovery_mask_seed = 1234  # one fixed random masking for every arm, seed and pass
    for i, batch in enumerate(batches(heldout, batch_size)):
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if step.masking in MASKER_METHODS:
            scores.append(step(batch, score_only=True).masker_scores.float().numpy())
        generator = torch.Generator().manual_seed(recovery_mask_seed + i)
        maskable = maskable_positions(input_ids, attention_mask)
        chosen = choose_random_positions(maskable, 0.15, generator)
        corrupted, labels, _ = corrupt(input_ids, chosen, step.vocab_sizes, step.mask_token_id, generator)
        logits = step.model(corrupted, attention_mask=attention_mask, compute_masker=False).logits
        predictions = torch.stack([logit.argmax(-1) for logit in logits], dim=-1)
        correct = (predictions == input_ids) & chosen.unsqueeze(-1)
        hits.append(correct.sum(-1).numpy())
        pitch_hits.append(correct[..., PITCH].numpy())
        cells.append(chosen.numpy())
    step.train()
    chosen, hits, pitch_hits = np.concatenate(cells), np.concatenate(hits), np.concatenate(pitch_hits)
    figures = {}
    for group, flags in (("planted", heldout.planted), ("determined", ~heldout.planted)):
        where = chosen & flags
        figures[group] = {"masked_notes": int(where.sum()),
                          "accuracy": float(hits[where].sum() / max(8 * where.sum(), 1)),
                          "pitch_accuracy": float(pitch_hits[where].sum() / max(where.sum(), 1))}
    result = {"recovery_accuracy": figures}
    if scores:
        notes = maskable_positions(torch.from_numpy(heldout.input_ids),
                                   torch.from_numpy(heldout.attention_mask)).numpy()
        result["auroc"] = within_segment_auroc(np.concatenate(scores), heldout.planted, notes)
    return result


def run_arm(name: str, seed: int, train: PlantedSegments, heldout: PlantedSegments, settings: GateSettings,
            vocab_sizes) -> dict:
    """Pre-train one arm with one seed and measure it at every freezing pass and at the end."""
    arm = ARMS[name]
    torch.manual_seed(seed)
    config = AdvMidiBertConfig(vocab_sizes=list(vocab_sizes), **preset_config_kwargs(settings.preset))
    model = AdvMidiBertForMaskedLM(config)
    length = train.input_ids.shape[1]
    book = PackedMaskBook(len(train), length, segment_lengths=train.attention_mask.sum(1))
    weights = AttributeWeights()
    cache = MaskerScoreCache(len(train), length) if arm.masker_scores_from == "cache" else None
    step = AdversarialMLM(model, mask_book=book, attribute_weights=weights, score_cache=cache, **arm.step_options())
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    notes = maskable_positions(torch.from_numpy(train.input_ids), torch.from_numpy(train.attention_mask)).numpy()
    notes_per_segment = notes.sum(1)  # for the masked share of real notes
    order_generator = np.random.default_rng(seed)
    freeze_options = {} if arm.freezing_rule == "reference" else {
        "rule": arm.freezing_rule, "score_threshold": settings.freeze_score_threshold}
    passes, micro_step, masked, real = [], 0, 0, 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for epoch in range(settings.epochs):
        for batch in batches(train, settings.batch_size, order_generator.permutation(len(train))):
            out = step(batch, generator=step_generator(seed, micro_step))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            weights.update(out.attribute_correct, out.attribute_total)
            masked += int(out.num_masked.sum())
            real += int(notes_per_segment[batch["segment_id"].numpy()].sum())
            micro_step += 1
        weights.end_epoch()
        last = epoch + 1 == settings.epochs
        if not last and not settings.is_freezing_epoch(epoch + 1):
            continue
        record = {"epoch": epoch + 1, "step": micro_step, "masked_share": masked / max(real, 1)}
        masked = real = 0
        if not last and arm.masking in MASKER_METHODS:
            before = ~book.rows(torch.arange(len(train)), length).numpy() & notes
            freezing_pass(step, batches(train, settings.batch_size), book, UniformSampler(0.1, 0.3),
                          UniformSampler(0.0, 0.1), generator=step_generator(seed, 10**9 + epoch), **freeze_options)
            after = ~book.rows(torch.arange(len(train)), length).numpy() & notes
            record["freeze_precision"], record["freeze_recall"] = freezing_precision_recall(
                after & ~before, train.planted, notes)
            record["frozen_precision"], record["frozen_recall"] = freezing_precision_recall(after, train.planted, notes)
            record["frozen_share"] = float(after.sum() / notes.sum())
            record["newly_frozen_share"] = float((after & ~before).sum() / notes.sum())
        record.update(heldout_figures(step, heldout, settings.batch_size))
        record["kind"] = "end" if last else "pass"
        passes.append(record)
    return {"arm": name, "seed": seed, "settings": asdict(arm), "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu_started, 1),
            "steps": micro_step, "checkpoints": passes}


# ------------------------------------------------------------------------------------------------------ report
def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


def summarise(runs: list[dict], planted_share: float) -> dict:
    """Per arm: the figures of every pass as means (and per-seed lists) over seeds, and the verdict."""
    arms = {}
    for name in ARMS:
        arm_runs = sorted((r for r in runs if r["arm"] == name), key=lambda r: r["seed"])
        if not arm_runs:
            continue
        count = len(arm_runs[0]["checkpoints"])
        per_pass = []
        for i in range(count):
            rows = [r["checkpoints"][i] for r in arm_runs]
            entry = {"epoch": rows[0]["epoch"], "kind": rows[0]["kind"]}
            for key in ("auroc", "freeze_precision", "freeze_recall", "frozen_precision", "frozen_recall",
                        "frozen_share", "newly_frozen_share", "masked_share"):
                if key in rows[0]:
                    entry[key] = {"mean": _mean([row[key] for row in rows]), "per_seed": [row[key] for row in rows]}
            for group in ("planted", "determined"):
                entry[f"recovery_accuracy_{group}"] = _mean([row["recovery_accuracy"][group]["accuracy"]
                                                             for row in rows])
                entry[f"pitch_accuracy_{group}"] = _mean([row["recovery_accuracy"][group]["pitch_accuracy"]
                                                          for row in rows])
            per_pass.append(entry)
        summary = {"seeds": [r["seed"] for r in arm_runs], "settings": arm_runs[0]["settings"],
                   "seconds_per_run": _mean([r["seconds"] for r in arm_runs]),
                   "cpu_seconds_per_run": _mean([r.get("cpu_seconds") for r in arm_runs]), "passes": per_pass}
        if name in MASKER_ARMS:
            first = per_pass[0]
            auroc, precision = first["auroc"]["mean"], first["freeze_precision"]["mean"]
            summary["first_pass"] = {"auroc": auroc, "freeze_precision": precision,
                                     "precision_over_planted_share": None if precision is None
                                     else precision / planted_share}
            summary["verdict"] = verdict(auroc if auroc is not None else math.nan,
                                         precision if precision is not None else math.nan, planted_share)
        arms[name] = summary
    return arms


def _fmt(value, digits=2, percent=False):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.{digits}f}"


def figure(results: dict, path: Path) -> None:
    """AUROC and freezing precision per pass, one line per masker arm (mean over seeds), one column per corpus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = [c for c in ("synthetic", "real") if c in results["corpora"]]
    fig, axes = plt.subplots(2, len(corpora), figsize=(5.5 * len(corpora), 6.5), squeeze=False, sharex="col")
    for column, corpus in enumerate(corpora):
        arms = results["corpora"][corpus]["arms"]
        for name in MASKER_ARMS:
            if name not in arms:
                continue
            passes = [p for p in arms[name]["passes"] if p["kind"] == "pass"]
            epochs = [p["epoch"] for p in passes]
            axes[0, column].plot(epochs, [p["auroc"]["mean"] for p in passes], marker="o", label=name)
            axes[1, column].plot(epochs, [p["freeze_precision"]["mean"] for p in passes], marker="o", label=name)
        share = results["corpora"][corpus]["corpus"]["planted_share"]["train"]
        axes[0, column].axhline(WORKS_AUROC, color="green", lw=0.8, ls="--")
        axes[0, column].axhline(FAILS_AUROC, color="red", lw=0.8, ls="--")
        axes[1, column].axhline(WORKS_PRECISION_RATIO * share, color="green", lw=0.8, ls="--")
        axes[1, column].axhline(FAILS_PRECISION_RATIO * share, color="red", lw=0.8, ls="--")
        axes[1, column].axhline(share, color="grey", lw=0.8, ls=":")
        axes[0, column].set_title(f"{corpus} corpus: masker AUROC for planted notes (held out)")
        axes[1, column].set_title("precision of the notes frozen at the pass")
        axes[1, column].set_xlabel("epoch of the freezing pass")
        axes[0, column].set_ylim(0.3, 1.0)
        axes[1, column].set_ylim(0, 1.0)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict, figure_name: str) -> str:
    """docs/masker-gate.md from the results file."""
    lines = [
        "# The masker gate: does the adversary find context-free notes?",
        "",
        "Generated by `python -m research.masker_gate --report results/masker-gate.json --docs docs/masker-gate.md`"
        " from `results/masker-gate.json`; the runs' commands are in that file.",
        "",
        "The method's claim is a mechanism: the masker learns which notes their context cannot give away, and the "
        "freezing pass stops masking those. The gate checks it where the answer is known: segments in which most "
        "notes follow from their context (a motif repeated bar by bar on a chord root, each note doubled an octave "
        "below, constant velocity and tempo) and a planted share whose pitch, duration and velocity come from a "
        "random note of another segment, so they follow the corpus's own distribution and nothing in their segment "
        "predicts them (`research/planted_corpus.py`, tested in `tests/test_planted_corpus.py`). The real-music "
        "version plants the same kind of notes into a seeded random sample of the pre-training corpus.",
        "",
        "**The reading, stated before the runs**: a masker arm *works* if its held-out within-segment AUROC for "
        f"planted notes at the first freezing pass is >= {WORKS_AUROC} and the precision of the notes frozen at that "
        f"pass is >= {WORKS_PRECISION_RATIO:g}x the planted share (means over seeds); it *fails* if the AUROC is <= "
        f"{FAILS_AUROC} or the precision <= {FAILS_PRECISION_RATIO:g}x the planted share; otherwise it is "
        "*partial*.",
        "",
        f"![AUROC and freezing precision per pass]({figure_name})",
        "",
        "The arms (every other setting is the same; `random` is the reference for the recoverer's accuracy):",
        "",
        "| arm | masking | masker pass | budget of k | freezing |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {name} | {arm.masking} | "
          + ("–" if arm.masking not in MASKER_METHODS else
             "cached scores of the previous visit" if arm.masker_scores_from == "cache" else
             "detached (masker head only)" if arm.masker_grad_scale == 0 else "full (the method)")
          + f" | {arm.mask_budget if arm.masking in MASKER_METHODS else '15 % of the notes'} | "
          + (arm.freezing_rule if arm.masking in MASKER_METHODS else "–") + " |"
          for name, arm in ARMS.items()],
        "",
        "The schedule (first freezing pass once the recoverer has learnt the determined notes) was set from three "
        "pilot runs before the gate (two adversarial, one random; random masking recovered 90 % of the determined "
        "notes' attributes after 640 steps, 94 % after 1,536); the reading was written down before the gate's runs.",
        "",
    ]
    for corpus, block in results["corpora"].items():
        info, arms, settings = block["corpus"], block["arms"], block["settings"]
        share = info["planted_share"]["train"]
        lines += [f"## {corpus.capitalize()} corpus", ""]
        described = (f"{info['train_segments']} training and {info['heldout_segments']} held-out segments, planted "
                     f"share {100 * share:.1f} % (train) / {100 * info['planted_share']['heldout']:.1f} % (held out)")
        if corpus == "real":
            described += (f"; {info['segments']} segments from {info['pieces']} pieces, per source "
                          + ", ".join(f"{k} {v}" for k, v in sorted(info["segments_per_source"].items()))
                          + f"; a random window of {info['window_notes']} notes each")
        cost = ", ".join(f"{name} {arm['cpu_seconds_per_run']:.0f}" for name, arm in arms.items()
                         if arm.get("cpu_seconds_per_run") is not None)
        described += f"; CPU seconds per run (one thread): {cost}"
        lines += [f"{described}. Preset `{settings['preset']}`, {settings['epochs']} epochs of batch "
                  f"{settings['batch_size']}, freezing passes after epoch {settings['first_freeze_epoch']} and every "
                  f"{settings['freeze_every']} epochs after it (none after the last), learning rate "
                  f"{settings['learning_rate']:g}. Command: `{block['command']}`.", ""]
        lines += ["| arm | seeds | verdict | AUROC, first pass | AUROC, last pass | freezing precision, first pass "
                  "(x planted share) | recall, first pass | frozen share, end | masked share, last epochs | "
                  f"recovery acc. planted / {'determined' if corpus == 'synthetic' else 'other'} notes, end |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, arm in arms.items():
            passes = [p for p in arm["passes"] if p["kind"] == "pass"]
            end = arm["passes"][-1]
            first, last = (passes[0], passes[-1]) if passes else ({}, {})

            def mean(entry, key):
                return entry.get(key, {}).get("mean") if entry else None

            precision = mean(first, "freeze_precision")
            ratio = "" if precision is None else f" ({precision / share:.1f}x)"
            lines.append(
                f"| {name} | {len(arm['seeds'])} | {arm.get('verdict', '(reference)')} | {_fmt(mean(first, 'auroc'))} "
                f"| {_fmt(mean(last, 'auroc'))} | {_fmt(precision)}{ratio} | {_fmt(mean(first, 'freeze_recall'))} "
                f"| {_fmt(mean(last, 'frozen_share'), percent=True)} % "
                f"| {_fmt(mean(end, 'masked_share'), percent=True)} % "
                f"| {_fmt(end['recovery_accuracy_planted'], percent=True)} / "
                f"{_fmt(end['recovery_accuracy_determined'], percent=True)} % |")
        lines += ["", "Per pass (means over seeds; AUROC / freezing precision / frozen share):", ""]
        epochs = [p["epoch"] for p in next(iter(arms.values()))["passes"] if p["kind"] == "pass"]
        lines += ["| arm | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
                  "| --- |" + " --- |" * len(epochs)]
        for name in MASKER_ARMS:
            if name not in arms:
                continue
            cells = [f"{_fmt(p['auroc']['mean'])} / {_fmt(p['freeze_precision']['mean'])} / "
                     f"{_fmt(p['frozen_share']['mean'], percent=True)} %"
                     for p in arms[name]["passes"] if p["kind"] == "pass"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Reading", ""] + [f"- {sentence}" for sentence in reading(results)]
    return "\n".join(lines) + "\n"


def reading(results: dict) -> list[str]:
    """The stated rule applied to every masker arm of every corpus, in words."""
    sentences = []
    for corpus, block in results["corpora"].items():
        share = block["corpus"]["planted_share"]["train"]
        for name, arm in block["arms"].items():
            if "verdict" not in arm:
                continue
            first = arm["first_pass"]
            precision = first["freeze_precision"]
            sentences.append(
                f"{corpus} corpus, {name}: **{arm['verdict']}** (AUROC {_fmt(first['auroc'])} at the first pass; "
                f"freezing precision {_fmt(precision)}, "
                f"{'–' if precision is None else f'{precision / share:.1f}'}x the planted share of "
                f"{100 * share:.1f} %; {len(arm['seeds'])} seeds).")
    return sentences


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--dataset", default=None, help="real corpus: a prepared pre-training data set folder")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated pre-training seeds")
    parser.add_argument("--run_dir", type=Path, default=None, help="per-run JSON files (resumable)")
    parser.add_argument("--output", type=Path, default=None, help="the results file (its other corpus is kept)")
    parser.add_argument("--report", type=Path, default=None, help="only rebuild --docs from this results file")
    parser.add_argument("--docs", type=Path, default=None, help="the docs page to write (with its figure beside it)")
    parser.add_argument("--threads", type=int, default=1)
    for field, value in asdict(GateSettings()).items():
        parser.add_argument(f"--{field}", type=type(value), default=None, help=f"default: {value}")
    args = parser.parse_args(argv)
    if args.report is None and args.run_dir is None:
        parser.error("--run_dir is required to run the gate")
    if args.corpus == "real" and args.report is None and not args.dataset:
        parser.error("--corpus real needs --dataset (a folder made by `adv-midibert prepare --task pretrain`)")
    unknown = set(args.arms.split(",")) - set(ARMS)
    if unknown:
        parser.error(f"--arms: unknown arm(s) {sorted(unknown)}; known: {', '.join(ARMS)}")
    return args


def write_docs(results: dict, docs: Path) -> None:
    figure_path = docs.with_suffix(".png")
    figure(results, figure_path)
    atomic_write_text(docs, markdown(results, figure_path.name))
    print(f"wrote {docs} and {figure_path}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report is not None:
        write_docs(json.loads(args.report.read_text()), args.docs or Path("docs/masker-gate.md"))
        return
    torch.set_num_threads(args.threads)
    defaults = asdict(GateSettings())
    settings = GateSettings(**{k: getattr(args, k) if getattr(args, k) is not None else v
                               for k, v in defaults.items()})
    results_file = ResultsFile(args.output, settings={"corpus": args.corpus, "arms": args.arms, "seeds": args.seeds})
    tokenizer = OctupleTokenizer(max_seq_len=preset_config_kwargs(settings.preset)["max_position_embeddings"])
    train, heldout, corpus_info = make_corpus(args, settings, tokenizer)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.arms.split(","):
            path = args.run_dir / f"{name}-seed{seed}.json"
            if path.exists():
                runs.append(json.loads(path.read_text()))
                continue
            run = run_arm(name, seed, train, heldout, settings, tokenizer.vocab_sizes)
            run["git"] = results_file.git
            atomic_write_json(path, run)
            runs.append(run)
            first = run["checkpoints"][0]
            print(f"{name} seed {seed}: {run['seconds']} s, first pass AUROC {first.get('auroc')}, "
                  f"precision {first.get('freeze_precision')}", flush=True)
    block = {"command": results_file.command, "settings": asdict(settings), "corpus": corpus_info,
             "arms": summarise(runs, corpus_info["planted_share"]["train"])}
    previous = json.loads(args.output.read_text()) if args.output and args.output.exists() else {}
    corpora = dict(previous.get("corpora", {}))
    corpora[args.corpus] = block
    results_file.write(corpora=corpora)
    if args.docs:
        write_docs(json.loads(args.output.read_text()), args.docs)


if __name__ == "__main__":
    main()
