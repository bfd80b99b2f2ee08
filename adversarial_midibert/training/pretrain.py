#!/usr/bin/env python
"""Pre-train Adversarial-MidiBERT (adversarial masked LM) with Accelerate.

Shaped like transformers' ``run_mlm_no_trainer.py``: arguments, set-up, data, model, optimizer, ``prepare``, the
loop, evaluation, checkpoints, the final Hub-ready folder; the method itself lives in
:mod:`adversarial_midibert.pretraining`. With no ``--dataset`` it builds (once) the small ``music21-pretrain`` corpus
and pre-trains the ``small`` preset in a few minutes on a CPU; on your own data (a folder written by
``examples/prepare_data.py``)::

    accelerate launch --mixed_precision bf16 examples/pretrain.py --dataset data/pop1k7 --preset base \\
        --num_train_epochs 100 --per_device_train_batch_size 12 --output_dir outputs/pretrain-base \\
        --checkpointing_steps epoch --with_tracking
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from accelerate import DistributedDataParallelKwargs
from accelerate.logging import get_logger
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .. import hub
from ..atomic_io import atomic_write_json
from ..checkpointing import dataset_fingerprint, truncate_jsonl
from ..command_line import command_line
from ..constants import ATTRIBUTE_NAMES
from ..data.collators import pad_octuple_batch
from ..data.sampling import sample_rows
from ..data.streaming import StreamingBatches, StreamingDataset
from ..mask_book import MaskerScoreCache, PackedMaskBook
from ..masking import step_seed
from ..presets import preset_config_kwargs
from ..pretraining import (
    DEFAULT_MASKER_GRAD_SCALE,
    DEFAULT_RECONSTRUCTION_WEIGHT,
    FREEZING_RULES,
    MASK_BUDGETS,
    MASKER_LOSS_FORMS,
    MASKER_METHODS,
    MASKER_SCORE_SOURCES,
    MASKING_METHODS,
    AdversarialMLM,
    AttributeWeights,
    TrainingProgress,
    UniformSampler,
    batch_to_device,
    freezing_pass,
    step_generator,
)
from ..pretraining_evaluation import evaluate_pretraining
from ..speed_and_memory import apply_acceleration
from ..visualization import plot_training_curves
from .setup import (
    TrainingArguments,
    argument_parser,
    check_flags,
    check_output_dir,
    checkpoints_and_resume,
    flag,
    make_accelerator,
    optimizer_groups,
    start_run,
    steps_per_epoch,
    training_length,
)

logger = get_logger(__name__)
_PROCESS_START = time.time()  # the elapsed time printed at the end counts the data build

DEFAULT_CORPUS = "music21-pretrain"
DEFAULT_OUTPUT_DIR = "outputs/pretrain-music21"
# The main job (no data argument): the small preset for a fixed number of steps, a few minutes on 2 CPU cores.
DEFAULT_MAX_TRAIN_STEPS = 80
FREEZING_LOG = "freezing_log.jsonl"  # one row per freezing pass: step, epoch, frozen fraction afterwards
DETACHED_MASKER_LR_FACTOR = 10.0  # masker head learning rate / --learning_rate when the masker is detached
DEFAULT_STREAMING_EVAL_SAMPLES = 1000  # --streaming: validation segments read (--max_eval_samples changes it)
COMPILE_PAD_MULTIPLE = 64  # --torch_compile: lengths padded to a multiple of the attention's 64-row blocks
SHORT_NAMES = ("bar", "pos", "prg", "pit", "dur", "vel", "ts", "tmp")


@dataclass
class PretrainArguments(TrainingArguments):
    """The pre-training flags: the shared ones (:class:`~adversarial_midibert.training.setup.TrainingArguments`) and
    the method's."""

    dataset: str | None = flag(help="Folder written by examples/prepare_data.py, or a Hub dataset id published by it "
                                    "(task 'pretrain' or any task: labels are ignored). Default: the embedded "
                                    "music21-pretrain corpus, built once into --cache_dir.")
    model_name_or_path: str | None = flag(help="Continue pre-training from this model folder instead of a fresh "
                                               "--preset model.")
    num_train_epochs: int | None = flag(help="Epochs (default: 3 on a given --dataset; derived from --max_train_steps "
                                             "otherwise).")
    max_train_steps: int | None = flag(help="Optimizer steps; overrides --num_train_epochs (main job default: "
                                            f"{DEFAULT_MAX_TRAIN_STEPS}).")
    num_warmup_steps: int | None = flag(help="Warm-up steps (default: 5%% of the training steps).")
    output_dir: str | None = flag(help=f"Default: {DEFAULT_OUTPUT_DIR}.")
    cache_dir: str | None = flag(help="Where the default corpus is built (default: ~/.cache/adversarial_midibert).")
    streaming: bool = flag(False, "Stream the training split shard by shard instead of opening it whole (corpora "
                                  "larger than memory): --dataset is a folder or a Hub dataset id; the mask book is "
                                  "kept on disk in output_dir/mask_book.")
    shuffle_buffer_size: int = flag(1000, "--streaming: rows in the shuffle buffer (shards are shuffled per epoch too; "
                                          "0 = no buffer).")
    masking: str = flag("adversarial", "adversarial (the method), random (BERT 15%%), bar (MusicBERT bar-level) or "
                                       "easiest (the control: the notes the masker finds easiest).",
                        choices=MASKING_METHODS)
    masker_grad_scale: float = flag(DEFAULT_MASKER_GRAD_SCALE,
                                    "Share of the masker loss's gradient that reaches the encoder: 1 = the reference "
                                    "code, 0 = detached (only the masker head learns from it; cheaper). Default: "
                                    "%(default)s.")
    detach_masker: bool = flag(False, "Same as --masker_grad_scale 0.")
    masker_loss_weight: float = flag(1.0, "Weight of the masker MSE loss.")
    masker_loss_form: str = flag("pooled", "pooled: one MSE over the batch's selected notes; reference: per segment "
                                           "hard-group mean + easy-group mean, averaged over segments (the reference "
                                           "code, about twice the scale).", choices=MASKER_LOSS_FORMS)
    max_mask_ratio: float = flag(0.15, "Cap on the masked share (adversarial: k <= ratio x budget length; random/bar: "
                                       "the ratio).")
    mask_budget: str = flag("share", "share (default): --max_mask_ratio of the real notes, taken among the unfrozen "
                                     "ones; notes: k = u x the unfrozen notes, capped by --max_mask_ratio of the notes "
                                     "(the reference code's rule); padded: the same over the padded length "
                                     "(docs/method.md section 9).", choices=MASK_BUDGETS)
    masker_scores_from: str = flag("pass", "pass: a masker pass over the uncorrupted segment chooses the notes (the "
                                           "method); cache: the segment's scores from its previous visit choose them "
                                           "and the recoverer's pass rescores it (one encoder pass per step; not with "
                                           "--streaming; fails the masker gate, docs/masker-gate.md).",
                                   choices=MASKER_SCORE_SOURCES)
    reconstruction_weight: float = flag(DEFAULT_RECONSTRUCTION_WEIGHT,
                                        "Weight of the all-token reconstruction term (the reference code: 1; the paper "
                                        "does not mention it: 0). Without it the masker's gradient collapses the "
                                        "encoder's representations (docs/results.md).")
    attribute_weights_from: str = flag("validation", "Dynamic attribute weights from the previous epoch's masked "
                                                     "accuracy on the validation split with random 15%% masking (the "
                                                     "reference code; default) or on the training batches with the "
                                                     "run's own masking.", choices=("validation", "train"))
    freeze_every: int | None = flag(help="Run the freezing pass every this many epochs (reference code: 5, the default "
                                         "with --dataset; 0 disables). The main job (no --dataset) uses 1, so its "
                                         "short run shows the whole method.")
    freeze_fraction: float | None = flag(help="Freeze this constant fraction of the still-maskable notes per segment "
                                              "(the paper's summary: 0.15, with --freeze_every 15). Default: u ~ "
                                              "U(0.1, 0.3) per segment (reference).")
    unfreeze_max: float = flag(0.1, "Unfreeze each frozen note with probability p ~ U(0, unfreeze_max) per segment.")
    freezing_rule: str = flag("evidence", "evidence (default): every note rescored and frozen iff its masker score >= "
                                          "--freeze_score_threshold; reference: freeze a fraction of the maskable "
                                          "notes, unfreeze at random (the reference code).", choices=FREEZING_RULES)
    freeze_score_threshold: float = flag(0.5, "--freezing_rule evidence: masker score from which a note is frozen "
                                              "(0.5: found harder more often than easier).")
    masker_learning_rate: float | None = flag(help="Learning rate of the masker head (default: --learning_rate; ten "
                                                   "times it for a detached masker, --masker_grad_scale 0).")
    pad_to_multiple_of: int | None = flag(help=f"Pad every batch to a multiple of this many rows (default: "
                                               f"{COMPILE_PAD_MULTIPLE} with --torch_compile, so that batch lengths "
                                               "fall into few compiled shapes; none otherwise).")


def parse_args(argv=None, prog=None):
    p = argument_parser(PretrainArguments, prog, "Adversarial masked-LM pre-training of Adversarial-MidiBERT")
    args = p.parse_args(argv)
    args.command = command_line(prog or "python examples/pretrain.py", argv)  # for the model card

    if args.detach_masker:
        args.masker_grad_scale = 0.0
    for name in ("freeze_fraction", "masker_grad_scale", "unfreeze_max", "freeze_score_threshold"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            p.error(f"--{name} must be in [0, 1], got {value}")
    if args.masker_learning_rate is None and args.learning_rate is not None:
        # A detached masker head learns from features it cannot shape: at the shared rate it barely ranks the notes
        # (docs/results.md, "Representation health").
        factor = DETACHED_MASKER_LR_FACTOR if args.masker_grad_scale == 0 else 1.0
        args.masker_learning_rate = factor * args.learning_rate
    check_flags(p, args, at_least_one=("logging_steps",),
                at_least_zero=("freeze_every", "masker_loss_weight", "reconstruction_weight"),
                above_zero=("learning_rate", "masker_learning_rate"))
    if not 0 < args.max_mask_ratio <= 1:
        p.error(f"--max_mask_ratio must be in (0, 1], got {args.max_mask_ratio}")
    if args.freezing_rule == "evidence" and args.freeze_fraction is not None:
        p.error("--freeze_fraction belongs to --freezing_rule reference (evidence freezes by --freeze_score_threshold)")
    if args.masker_scores_from == "cache" and args.masking not in MASKER_METHODS:
        p.error(f"--masker_scores_from cache needs a masker method (--masking {' or '.join(MASKER_METHODS)})")
    if args.masker_scores_from == "cache" and args.streaming:
        p.error("--masker_scores_from cache keeps the scores in memory, one byte per position: not with --streaming")
    if args.streaming and args.dataset is None:
        p.error("--streaming needs --dataset (a folder written by examples/prepare_data.py or a Hub dataset id)")
    if args.streaming and args.preprocessing_num_workers:
        p.error("--streaming reads in the training process (exact mid-epoch resume): --preprocessing_num_workers 0")
    if args.pad_to_multiple_of is None and (args.torch_compile or args.torch_compile_backend
                                            or args.torch_compile_mode):
        args.pad_to_multiple_of = COMPILE_PAD_MULTIPLE
    if args.pad_to_multiple_of is not None and args.pad_to_multiple_of < 1:
        p.error(f"--pad_to_multiple_of must be >= 1, got {args.pad_to_multiple_of}")
    if args.shuffle_buffer_size < 0:
        p.error(f"--shuffle_buffer_size must be >= 0, got {args.shuffle_buffer_size}")
    if args.dataset is None and args.max_train_steps is None and args.num_train_epochs is None:  # the main job
        args.max_train_steps = DEFAULT_MAX_TRAIN_STEPS
    if args.freeze_every is None:
        args.freeze_every = 1 if args.dataset is None else 5
    args.output_dir = args.output_dir or DEFAULT_OUTPUT_DIR
    return args


# ---------------------------------------------------------------------------------------------------- data


def resolve_dataset_dir(args, max_seq_len: int) -> Path:
    """The dataset folder: ``--dataset`` (a folder or a Hub id), or the ``music21-pretrain`` recipe built once into
    ``<cache>/datasets/music21-pretrain-L<max_seq_len>`` (``<cache>``: ``--cache_dir`` or the parent of the music21
    MIDI cache, ``~/.cache/adversarial_midibert`` by default)."""
    if args.dataset is not None:
        path = Path(args.dataset)
        if path.is_dir():
            return path
        from ..data import download_task_dataset

        return download_task_dataset(args.dataset)  # a Hub dataset id (cached; FileNotFoundError if neither)
    from ..data import build_recipe, default_cache_dir
    from ..data.builder import TASK_INFO_NAME

    midi_cache = Path(args.cache_dir) / "music21_midi" if args.cache_dir else default_cache_dir()
    target = midi_cache.parent / "datasets" / f"{DEFAULT_CORPUS}-L{max_seq_len}"
    if (target / TASK_INFO_NAME).is_file():
        logger.info(f"default corpus: reusing {target}")
        return target
    logger.info(f"default corpus: building {DEFAULT_CORPUS} (MIDI cache {midi_cache}) into {target}")
    build_recipe(DEFAULT_CORPUS, max_seq_len=max_seq_len, music21_cache_dir=str(midi_cache),
                 num_proc=max(1, min(2, os.cpu_count() or 1)), output_dir=target)
    return target


class InMemoryTrainingData:
    """The training split opened whole (memory-mapped): a shuffled ``DataLoader`` whose order depends on (seed, epoch)
    only, resumed mid-epoch by skipping the batches done; the mask book in memory."""

    def __init__(self, args, accelerator, collate_fn, max_len: int, output_dir: Path):
        from ..data import load_task_dataset

        with accelerator.main_process_first():
            self.dataset_dir = resolve_dataset_dir(args, max_len)
            # the main process checks the shards; the others then load what it checked
            raw, _, self.tokenizer = load_task_dataset(self.dataset_dir, verify=accelerator.is_main_process)
        for split in ("train", "validation"):
            if split not in raw:
                raise ValueError(f"dataset {self.dataset_dir} has no '{split}' split (splits: {list(raw)})")
        train_ds, self.eval_ds = raw["train"], raw["validation"]
        if "segment_id" not in train_ds.column_names:
            raise ValueError(f"dataset {self.dataset_dir}: the train split has no 'segment_id' column (the mask "
                             "book's key)")
        if args.max_train_samples is not None:
            train_ds = sample_rows(train_ds, args.max_train_samples, seed=args.seed)
        self.train_ds = train_ds.select_columns(["input_ids", "attention_mask", "segment_id"]).with_format("numpy")
        if len(self.train_ds) == 0:
            raise ValueError(f"dataset {self.dataset_dir}: the train split is empty")
        segment_ids = torch.as_tensor(self.train_ds["segment_id"], dtype=torch.long)
        lengths = torch.as_tensor([int(m.sum()) for m in self.train_ds["attention_mask"]], dtype=torch.long)
        if int(lengths.max()) > max_len:
            raise ValueError(f"dataset {self.dataset_dir}: a training segment has {int(lengths.max())} rows, the "
                             f"model takes at most {max_len} (rebuild the dataset with this max_seq_len)")
        book_lengths = torch.zeros(int(segment_ids.max()) + 1, dtype=torch.long)
        book_lengths[segment_ids] = lengths
        # One bit per position, in memory, off the accelerator: every process applies the same freezing updates.
        self.mask_book = PackedMaskBook(len(book_lengths), max_len, segment_lengths=book_lengths)
        self.num_train = len(self.train_ds)
        self.loader = DataLoader(self.train_ds, shuffle=True, collate_fn=collate_fn,
                                 batch_size=args.per_device_train_batch_size,
                                 num_workers=args.preprocessing_num_workers,
                                 pin_memory=accelerator.device.type == "cuda")
        self.freeze_loader = DataLoader(self.train_ds, shuffle=False, collate_fn=collate_fn,
                                        batch_size=args.per_device_eval_batch_size)

    def epoch_steps(self, accelerator) -> int:
        return steps_per_epoch(len(self.loader), accelerator.num_processes, accelerator.gradient_accumulation_steps)

    def prepare(self, accelerator, step_model, optimizer, eval_dataloader, lr_scheduler) -> tuple:
        # The training batches stay on the host until batch_to_device (mask book looked up there, no sync).
        step_model, optimizer, self.loader, self.freeze_loader, eval_dataloader, lr_scheduler = accelerator.prepare(
            step_model, optimizer, self.loader, self.freeze_loader, eval_dataloader, lr_scheduler,
            device_placement=[None, None, False, None, None, None])
        return step_model, optimizer, eval_dataloader, lr_scheduler

    def fingerprint(self) -> str:
        return dataset_fingerprint(self.train_ds, self.eval_ds)

    def epoch_batches(self, epoch: int, progress: TrainingProgress, accelerator):
        self.loader.set_epoch(epoch)
        if progress.epoch_micro_step > 0:
            return accelerator.skip_first_batches(self.loader, progress.epoch_micro_step)
        return self.loader

    def epoch_done(self, progress: TrainingProgress) -> bool:
        return progress.epoch_micro_step >= len(self.loader)

    def freeze_batches(self):
        return self.freeze_loader


class StreamedTrainingData:
    """The training split read shard by shard (``--streaming``; corpora larger than memory): each process reads its
    own shards, its position saved with every checkpoint; the mask book on disk in ``output_dir/mask_book``."""

    def __init__(self, args, accelerator, collate_fn, max_len: int, output_dir: Path):
        stream = StreamingDataset(args.dataset, verify=accelerator.is_main_process)  # the main process checks
        self.stream, self.dataset_dir, self.tokenizer = stream, Path(args.dataset), stream.tokenizer
        self.num_train = stream.num_rows("train")
        if not self.num_train:
            raise ValueError(f"--streaming --dataset {args.dataset}: no training segments listed (a shards.json "
                             "written by examples/prepare_data.py sizes the mask book)")
        if stream.tokenizer.max_seq_len > max_len:
            raise ValueError(f"dataset {args.dataset}: segments of up to {stream.tokenizer.max_seq_len} rows, the "
                             f"model takes at most {max_len} (rebuild the dataset with this max_seq_len)")
        self.train = StreamingBatches(stream.split("train"), args.per_device_train_batch_size, collate_fn,
                                      accelerator, seed=args.seed, shuffle_buffer_size=args.shuffle_buffer_size,
                                      group_size=args.gradient_accumulation_steps)
        self.freeze = StreamingBatches(stream.split("train"), args.per_device_eval_batch_size, collate_fn,
                                       accelerator, shuffle_buffer_size=0)
        eval_ds = stream.head("validation", args.max_eval_samples or DEFAULT_STREAMING_EVAL_SAMPLES)
        self.eval_ds = eval_ds if eval_ds is not None else datasets.Dataset.from_dict({"segment_id": []})
        # One bit per position, on disk: read per batch, written by the main process.
        self.mask_book = PackedMaskBook(self.num_train, max_len, directory=output_dir / "mask_book",
                                        writer=accelerator.is_main_process)
        accelerator.wait_for_everyone()
        self.batch_size = args.per_device_train_batch_size

    def epoch_steps(self, accelerator) -> int:  # an estimate: processes may hold a few segments more or fewer
        return max(1, self.num_train // (self.batch_size * accelerator.num_processes
                                         * accelerator.gradient_accumulation_steps))

    def prepare(self, accelerator, step_model, optimizer, eval_dataloader, lr_scheduler) -> tuple:
        # The stream is not handed to Accelerate. Its position and the on-disk mask book go into every checkpoint
        # folder (all processes).
        accelerator.register_save_state_pre_hook(
            lambda models, weights, folder: (self.train.save(folder),
                                             self.mask_book.save_files(Path(folder) / "mask_book")))
        accelerator.register_load_state_pre_hook(
            lambda models, folder: (self.train.load(folder),
                                    self.mask_book.load_files(Path(folder) / "mask_book", accelerator)))
        return accelerator.prepare(step_model, optimizer, eval_dataloader, lr_scheduler)

    def fingerprint(self) -> str:
        return self.stream.fingerprint()

    def epoch_batches(self, epoch: int, progress: TrainingProgress, accelerator):
        return self.train.epoch_batches(epoch)  # resumes mid-epoch from the checkpoint's stream state

    def epoch_done(self, progress: TrainingProgress) -> bool:
        return self.train.exhausted

    def freeze_batches(self):
        return self.freeze.all_batches()


# ---------------------------------------------------------------------------------------------------- model


def model_config_kwargs(args) -> dict:
    """Config arguments of the model to train: the --preset with --config_overrides, or the saved model's."""
    if args.model_name_or_path:
        from ..configuration_adv_midibert import AdvMidiBertConfig

        return AdvMidiBertConfig.from_pretrained(args.model_name_or_path).to_dict()
    return preset_config_kwargs(args.preset, args.config_overrides)


def build_model(args, config_kwargs: dict, tokenizer):
    from ..configuration_adv_midibert import AdvMidiBertConfig
    from ..modeling_adv_midibert import AdvMidiBertForMaskedLM

    if args.model_name_or_path:
        model = AdvMidiBertForMaskedLM.from_pretrained(args.model_name_or_path)
        if tokenizer is not None and list(model.config.vocab_sizes) != list(tokenizer.vocab_sizes):
            raise ValueError(f"--model_name_or_path {args.model_name_or_path}: vocabulary sizes "
                             f"{list(model.config.vocab_sizes)} differ from the dataset tokenizer's "
                             f"{list(tokenizer.vocab_sizes)}")
        return model
    kwargs = dict(config_kwargs)
    kwargs.setdefault("vocab_sizes", list(tokenizer.vocab_sizes))
    return AdvMidiBertForMaskedLM(AdvMidiBertConfig(**kwargs))


def _accuracy_text(correct: torch.Tensor, total: torch.Tensor) -> str:
    acc = (correct / total.clamp_min(1)).tolist()
    return " ".join(f"{n}{a:.2f}" for n, a in zip(SHORT_NAMES, acc))


# ---------------------------------------------------------------------------------------------------- main


def run_evaluation(args, accelerator, step_model, eval_dataloader, step: int, output_dir: Path,
                   log: bool = True) -> dict:
    """Validation figures (:func:`~adversarial_midibert.pretraining_evaluation.evaluate_pretraining`), logged and
    (with ``log``) appended to ``eval_log.jsonl``; ``{}`` without a validation split."""
    if len(eval_dataloader) == 0:
        return {}
    batches = tqdm(eval_dataloader, desc="evaluating", leave=False, disable=not accelerator.is_local_main_process)
    results = evaluate_pretraining(step_model, batches, accelerator, seed=args.seed)
    logger.info(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in results.items()
                                              if "accuracy_" not in k))
    if log and accelerator.is_main_process:
        with open(output_dir / "eval_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **results}) + "\n")
    return results


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    output_dir = Path(args.output_dir)

    accelerator = make_accelerator(  # the baselines never use the masker head
        args, output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=args.masking not in MASKER_METHODS)])
    check_output_dir(args, output_dir)
    output_lock = start_run(accelerator, logger, args.seed, output_dir)
    logger.info(accelerator.state, main_process_only=False)

    # ---- data ----
    collate_fn = functools.partial(pad_octuple_batch, pad_to_multiple_of=args.pad_to_multiple_of)
    config_kwargs = model_config_kwargs(args)
    max_len = int(config_kwargs["max_position_embeddings"])
    data_class = StreamedTrainingData if args.streaming else InMemoryTrainingData
    data = data_class(args, accelerator, collate_fn, max_len, output_dir)
    dataset_dir, tokenizer, eval_ds, mask_book = data.dataset_dir, data.tokenizer, data.eval_ds, data.mask_book
    if args.max_eval_samples is not None:
        eval_ds = sample_rows(eval_ds, args.max_eval_samples, seed=args.seed)
    eval_ds = eval_ds.select_columns([c for c in ("input_ids", "attention_mask", "segment_id")
                                      if c in eval_ds.column_names]).with_format("numpy")
    data.eval_ds = eval_ds  # what the run's fingerprint covers
    if len(eval_ds) == 0:
        logger.warning(f"dataset {dataset_dir}: the validation split is empty, no evaluation")
    model = build_model(args, config_kwargs, tokenizer)
    apply_acceleration(model, args.gradient_checkpointing, args.torch_compile, args.torch_compile_backend,
                       args.torch_compile_mode)

    # ---- run state ----
    attribute_weights = AttributeWeights(len(ATTRIBUTE_NAMES), device=accelerator.device)
    progress = TrainingProgress()
    progress.start_clock(_PROCESS_START)
    # Every process writes its own segments' scores; sync() shares them at the end of each epoch and before a save.
    score_cache = MaskerScoreCache(mask_book.num_segments, max_len) if args.masker_scores_from == "cache" else None

    step_model = AdversarialMLM(
        model,
        mask_book=mask_book,
        attribute_weights=attribute_weights,
        masking=args.masking,
        masker_grad_scale=args.masker_grad_scale,
        masker_loss_weight=args.masker_loss_weight,
        reconstruction_weight=args.reconstruction_weight,
        max_mask_ratio=args.max_mask_ratio,
        mask_budget=args.mask_budget,
        masker_loss_form=args.masker_loss_form,
        masker_scores_from=args.masker_scores_from,
        score_cache=score_cache,
    )

    eval_dataloader = DataLoader(eval_ds, shuffle=False, collate_fn=collate_fn,
                                 batch_size=args.per_device_eval_batch_size)

    # The masker head may learn faster than the rest.
    learning_rates = {"": args.learning_rate, "masker.": args.masker_learning_rate or args.learning_rate}
    optimizer = torch.optim.AdamW(optimizer_groups(model, args.weight_decay, learning_rates), lr=args.learning_rate)

    training_length(args, data.epoch_steps(accelerator), default_epochs=3)
    if args.num_warmup_steps is None:
        args.num_warmup_steps = int(0.05 * args.max_train_steps)
    lr_scheduler = get_scheduler(
        name=args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )

    step_model, optimizer, eval_dataloader, lr_scheduler = data.prepare(accelerator, step_model, optimizer,
                                                                         eval_dataloader, lr_scheduler)
    checkpoints, path = checkpoints_and_resume(
        accelerator, args, output_dir, {"mask_book": mask_book, "attribute_weights": attribute_weights,
                                        "progress": progress,
                                        **({"masker_score_cache": score_cache} if score_cache is not None else {})},
        data.fingerprint(), model, optimizer, "adversarial_midibert_pretrain")

    total_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running adversarial pre-training *****")
    logger.info(f"  Dataset = {dataset_dir}, masking = {args.masking}, masker_grad_scale = "
                f"{args.masker_grad_scale}, reconstruction_weight = {args.reconstruction_weight}")
    logger.info(f"  Train segments = {data.num_train}{' (streamed)' if args.streaming else ''}, validation segments = "
                f"{len(eval_ds)}, mask book {mask_book.nbytes() / 2**20:.1f} MiB in memory per process")
    logger.info(f"  Model parameters = {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M")
    logger.info(f"  Epochs = {args.num_train_epochs}, total batch size = {total_batch}, "
                f"optimization steps = {args.max_train_steps}")

    if path is not None:
        accelerator.print(f"Resumed from checkpoint: {path} (step {progress.completed_steps})")

    unwrapped = accelerator.unwrap_model(step_model).model
    fraction_sampler = (UniformSampler(0.1, 0.3) if args.freeze_fraction is None
                        else UniformSampler(args.freeze_fraction, args.freeze_fraction))
    unfreeze_sampler = UniformSampler(0.0, args.unfreeze_max)
    log_path = output_dir / "train_log.jsonl"
    if accelerator.is_main_process:  # what comes after the checkpoint is run (and logged) again
        truncate_jsonl(log_path, lambda row: row.get("step", 0) <= progress.completed_steps)
        # an evaluation at the checkpoint's own step comes after it unless its epoch was closed before it was saved
        evaluated = progress.completed_steps if progress.epoch_micro_step == 0 else progress.completed_steps - 1
        for name in ("eval_log.jsonl", FREEZING_LOG):  # the freezing pass closes its epoch just before the evaluation
            truncate_jsonl(output_dir / name, lambda row: row.get("step", 0) <= evaluated)
    logged_eval_step = progress.completed_steps if path is not None and progress.epoch_micro_step == 0 else -1
    progress_bar = tqdm(range(args.max_train_steps), initial=progress.completed_steps,
                        disable=not accelerator.is_local_main_process)
    eval_results: dict = {}
    eval_step = -1
    pending_log: list[dict] = []  # the steps' figures, still on the device: read back every --logging_steps steps
    step_correct = torch.zeros(len(ATTRIBUTE_NAMES), device=accelerator.device)
    step_total = torch.zeros_like(step_correct)

    def flush_train_log() -> list[dict]:
        """Write the pending steps to train_log.jsonl: one host sync for all of them (none in the steps between)."""
        if not pending_log:
            return []
        keys = ("loss", "masker_loss", "masked_share", "frozen")
        values = torch.stack([torch.stack([row[k].float() for k in keys]) for row in pending_log]).tolist()
        rows = [{"step": row["step"], "epoch": row["epoch"], **dict(zip(keys[:3], v[:3])), "lr": row["lr"],
                 "frozen": v[3]} for row, v in zip(pending_log, values)]
        pending_log.clear()
        if accelerator.is_main_process:
            with open(log_path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        return rows

    def save_checkpoint(name: str):
        flush_train_log()  # the log holds every step the checkpoint holds
        if score_cache is not None:
            score_cache.sync(accelerator)  # the main process saves every process's scores
        checkpoints.save(name, progress.completed_steps)

    step_model.train()
    while progress.epoch < args.num_train_epochs and progress.completed_steps < args.max_train_steps:
        epoch = progress.epoch
        micro_losses = []
        for batch in data.epoch_batches(epoch, progress, accelerator):
            # Looked up in the mask book on the host, then copied without waiting (the loader leaves it on the host).
            batch = batch_to_device(batch, accelerator.device, mask_book if args.masking in MASKER_METHODS else None,
                                    score_cache)
            seed = step_seed(args.seed, progress.micro_step, accelerator.process_index)
            torch.manual_seed(seed)  # dropout: the same after a resume as in an uninterrupted run
            gen = step_generator(args.seed, progress.micro_step, accelerator.process_index, accelerator.device)
            with accelerator.accumulate(step_model):
                out = step_model(batch, generator=gen)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(step_model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            progress.micro_step += 1
            progress.epoch_micro_step += 1
            attribute_weights.update(out.attribute_correct, out.attribute_total)
            step_correct += out.attribute_correct.sum(0)
            step_total += out.attribute_total.sum(0)
            micro_losses.append(out.loss.detach())
            if not accelerator.sync_gradients:
                continue
            progress.completed_steps += 1
            progress_bar.update(1)
            pending_log.append({"step": progress.completed_steps, "epoch": epoch,
                                "loss": torch.stack(micro_losses).mean(), "masker_loss": out.masker_loss,
                                "masked_share": out.masked_share.float().mean(), "lr": lr_scheduler.get_last_lr()[0],
                                "frozen": out.frozen_fraction})
            micro_losses = []
            if progress.completed_steps % args.logging_steps == 0 or progress.completed_steps == 1:
                rows = flush_train_log()
                progress_bar.set_postfix_str(f"loss {rows[-1]['loss']:.3f} | {_accuracy_text(step_correct, step_total)}"
                                             f" | frozen {rows[-1]['frozen']:.1%}")
                if args.with_tracking:
                    accelerator.log({"train_loss": sum(r["loss"] for r in rows) / len(rows),
                                     "masker_loss": sum(r["masker_loss"] for r in rows) / len(rows),
                                     "frozen_fraction": mask_book.frozen_fraction(),
                                     **{f"train_accuracy_{n}": float(c / max(t, 1)) for n, c, t in
                                        zip(ATTRIBUTE_NAMES, step_correct.tolist(), step_total.tolist())}},
                                    step=progress.completed_steps)
                step_correct.zero_()
                step_total.zero_()
            if (args.checkpointing_steps not in (None, "epoch")
                    and progress.completed_steps % int(args.checkpointing_steps) == 0):
                save_checkpoint(f"step_{progress.completed_steps}")
            if progress.completed_steps >= args.max_train_steps:
                break

        flush_train_log()
        if progress.completed_steps >= args.max_train_steps and not data.epoch_done(progress):
            break
        # ---- end of epoch: weights from this epoch's accuracies, freezing, evaluation ----
        accuracies = attribute_weights.end_epoch(accelerator)
        if score_cache is not None:
            score_cache.sync(accelerator)
        logger.info(f"epoch {epoch}: train masked accuracy "
                    + " ".join(f"{n}={a:.3f}" for n, a in zip(ATTRIBUTE_NAMES, accuracies.tolist())))
        # (never after the last step: the book would change nothing)
        if (args.masking in MASKER_METHODS and args.freeze_every > 0 and (epoch + 1) % args.freeze_every == 0
                and progress.completed_steps < args.max_train_steps):
            gen = step_generator(args.seed, -(epoch + 1), accelerator.process_index, accelerator.device)
            batches = tqdm(data.freeze_batches(), desc="freezing pass", leave=False,
                           disable=not accelerator.is_local_main_process)
            # Through the prepared step module (score_only): FSDP gathers, autocast and compile apply as in training.
            frozen = freezing_pass(step_model, batches, mask_book, fraction_sampler, unfreeze_sampler, accelerator,
                                   generator=gen, rule=args.freezing_rule, score_threshold=args.freeze_score_threshold,
                                   keep_unfrozen=args.max_mask_ratio if args.mask_budget == "share" else 0.0)
            logger.info(f"epoch {epoch}: freezing pass, frozen fraction of the training notes = {frozen:.2%}")
            if accelerator.is_main_process:
                with open(output_dir / FREEZING_LOG, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": progress.completed_steps, "epoch": epoch, "frozen_fraction": frozen})
                            + "\n")
        eval_results = run_evaluation(args, accelerator, step_model, eval_dataloader, progress.completed_steps,
                                      output_dir)
        eval_step = progress.completed_steps
        if args.attribute_weights_from == "validation" and eval_results:
            attribute_weights.set_accuracies([eval_results[f"eval_accuracy_{n}"] for n in ATTRIBUTE_NAMES])
        logger.info(f"epoch {epoch}: attribute weights from {args.attribute_weights_from} -> "
                    + " ".join(f"{w:.3f}" for w in attribute_weights.weights.tolist()))
        if args.with_tracking:
            accelerator.log({**eval_results, "epoch": epoch, "frozen_fraction": mask_book.frozen_fraction()},
                            step=progress.completed_steps)
        progress.epoch += 1
        progress.epoch_micro_step = 0
        if args.checkpointing_steps == "epoch":
            save_checkpoint(f"epoch_{epoch}")

    progress_bar.close()
    if eval_step != progress.completed_steps:  # the run stopped inside an epoch (or resumed at its end): evaluate
        eval_results = run_evaluation(args, accelerator, step_model, eval_dataloader, progress.completed_steps,
                                      output_dir, log=progress.completed_steps != logged_eval_step)
    if args.with_tracking:
        accelerator.end_training()

    # ---- final Hub-ready folder ----
    accelerator.wait_for_everyone()
    # The whole weights, also when FSDP or DeepSpeed shard them (a collective call), without the step's "model." prefix.
    state_dict = {k.removeprefix("model."): v for k, v in accelerator.get_state_dict(step_model).items()}
    unwrapped.save_pretrained(str(output_dir), is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save, state_dict=state_dict)
    elapsed = progress.runtime()
    if accelerator.is_main_process:
        finish_folder(args, output_dir, dataset_dir, tokenizer, eval_results, mask_book, elapsed)
    accelerator.wait_for_everyone()
    if args.push_to_hub and accelerator.is_main_process:
        hub.push_folder_to_hub(output_dir, args.hub_model_id, token=args.hub_token,
                               commit_message="Adversarial-MidiBERT pre-training")
    if output_lock is not None:
        output_lock.release()
    accelerator.print(f"Pre-trained model saved to {output_dir.resolve()} "
                      f"({progress.completed_steps} steps, {progress.runtime():.1f} s elapsed)")


def finish_folder(args, output_dir: Path, dataset_dir: Path, tokenizer, eval_results, mask_book, elapsed):
    """The tokenizer (with its config and code), ``all_results.json`` and the model card beside the saved weights."""
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    curves = [json.loads(line) for name in ("train_log.jsonl", "eval_log.jsonl") if (output_dir / name).is_file()
              for line in (output_dir / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    shares: dict[int, list[float]] = {}  # the steps' masked share of real notes (train_log.jsonl), per epoch
    for row in curves:
        if "masked_share" in row:
            shares.setdefault(row["epoch"], []).append(row["masked_share"])
    passes = (output_dir / FREEZING_LOG).read_text(encoding="utf-8").splitlines() if (
        output_dir / FREEZING_LOG).is_file() else []
    hyperparameters = {k: args.__dict__[k] for k in (  # the card's table, kept in all_results.json for a rewrite
        "preset", "masking", "masker_grad_scale", "reconstruction_weight", "max_mask_ratio", "mask_budget",
        "masker_loss_form", "masker_scores_from", "freezing_rule", "freeze_score_threshold", "attribute_weights_from",
        "max_grad_norm", "freeze_every", "freeze_fraction", "learning_rate", "masker_learning_rate", "max_train_steps",
        "per_device_train_batch_size", "gradient_accumulation_steps", "seed")}
    results = {"task": "pretrain", "masking": args.masking, **eval_results,
               "frozen_fraction": mask_book.frozen_fraction(), "train_steps": args.max_train_steps,
               "masked_share_by_epoch": [sum(v) / len(v) for _, v in sorted(shares.items())],
               "freezing_passes": sum(1 for line in passes if line.strip()),
               "train_runtime_s": round(elapsed, 1), "command": args.command, "hyperparameters": hyperparameters}
    atomic_write_json(output_dir / "all_results.json", results)
    if curves:
        plot_training_curves(curves, output_dir / "training_curves.png", x="step", title="pre-training "
                                                                                         f"({args.masking})")
    hub.write_model_card(output_dir, repo_id=args.hub_model_id, datasets=str(dataset_dir.name), task="pretrain",
                         results=results)

if __name__ == "__main__":
    main()
