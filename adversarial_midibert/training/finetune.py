#!/usr/bin/env python
"""Fine-tune Adversarial-MidiBERT on a downstream task (composer, emotion, melody, velocity...) with Accelerate.

The data set is a folder written by ``examples/prepare_data.py`` (its ``task_info.json`` names the task, its type,
the classes and the attributes hidden from the model); the model comes from a pre-trained folder (a fresh head
replaces the masked-LM heads) or a preset. Training (docs/method.md section 4) masks ``--mask_ratio`` of each training
segment's notes, transposes with ``--pitch_shift``, and scores the validation set each epoch or every
``--eval_steps``; early stopping counts evaluations, and the best weights are restored before the test set is scored.
The output folder receives the best model with its card, ``all_results.json``, ``training_curves.png`` and
``confusion_matrix.png``::

    python examples/finetune.py --dataset data/pianist8 --model_name_or_path runs/pretrain-adversarial \\
        --output_dir runs/composer --num_train_epochs 10 --pitch_shift
    accelerate launch examples/finetune.py ...        # several GPUs
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .. import hub
from ..atomic_io import atomic_write_json, write_folder_aside
from ..checkpointing import dataset_fingerprint
from ..command_line import command_line
from ..confidence_intervals import bootstrap_accuracy
from ..configuration_adv_midibert import AdvMidiBertConfig
from ..constants import ATTRIBUTE_NAMES, TOKENIZER_FILE_NAME
from ..data import DataCollatorForOctuple, load_task_dataset
from ..data.sampling import sample_rows
from ..evaluation import ClassificationEvaluator
from ..masking import step_seed
from ..modeling_adv_midibert import (
    AdvMidiBertForSequenceClassification,
    AdvMidiBertForTokenClassification,
)
from ..presets import (
    default_finetune_learning_rate,
    preset_config_kwargs,
)
from ..pretraining import TrainingProgress
from ..speed_and_memory import apply_acceleration
from ..tasks import TASKS
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

logger = logging.getLogger("finetune")

METRICS_FOR_BEST_MODEL = ("accuracy", "f1_macro", "piece_accuracy", "piece_f1_macro")


@dataclass
class FinetuneArguments(TrainingArguments):
    """The fine-tuning flags: the shared ones (:class:`~adversarial_midibert.training.setup.TrainingArguments`, some
    with other defaults here) and the task's."""

    dataset: str | None = flag(help="Folder written by examples/prepare_data.py (with task_info.json), or a Hub "
                                    "dataset id.", required=True)
    model_name_or_path: str | None = flag(help="Pre-trained folder (AdvMidiBertForMaskedLM) or Hub id.")
    per_device_train_batch_size: int = flag(12)
    per_device_eval_batch_size: int = flag(12)
    learning_rate: float | None = flag(help="Default: 5e-4 for models up to the small preset's width (hidden size "
                                            "256), the paper's 2e-5 for wider ones.")
    num_train_epochs: int | None = flag(10)
    num_warmup_steps: int | None = flag(0)
    output_dir: str | None = flag(required=True)
    task: str | None = flag(help=f"Task name ({', '.join(TASKS)} or any); default from task_info.json.")
    num_labels: int | None = flag(help="Number of classes when task_info.json has no label names.")
    mask_ratio: float = flag(0.3, "Mask fine-tuning: fraction of notes replaced by MASK (paper 0.3, reference code "
                                  "0.15, 0 = off).")
    mask_eval: bool = flag(False, "Also mask validation/test inputs (as the reference code).")
    pitch_shift: bool = flag(False, "Random transposition of training segments.")
    from_scratch: bool = flag(False, "Random initialisation from --preset (no pre-training).")
    freeze_backbone: bool = flag(False, "Probing: train only the classification head.")
    probe_layer: int | None = flag(help="Probing: features from hidden layer N (0 = embeddings).")
    trust_remote_code: bool = flag(False, "Allow remote code when loading from the Hub.")
    early_stopping_patience: int = flag(3, "Evaluations without a better eval metric before stopping; 0 = off.")
    metric_for_best_model: str = flag("accuracy", "Validation metric of early stopping and best-model selection "
                                                  "(piece_*: sequence tasks only).", choices=METRICS_FOR_BEST_MODEL)
    eval_steps: int | None = flag(help="Evaluate every N optimizer steps (and at the last one); default: at the end "
                                       "of each epoch.")
    mixed_precision: str | None = flag(help="Accelerate mixed precision.", choices=("no", "fp16", "bf16"))
    bootstrap_resamples: int = flag(2000, "Resamples of the 95%% bootstrap intervals over pieces in all_results.json "
                                          "(0 = none).")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argument_parser(FinetuneArguments, prog, __doc__.split("\n")[0])
    args = p.parse_args(argv)

    if args.from_scratch == (args.model_name_or_path is not None):
        p.error("give exactly one of --model_name_or_path (pre-trained folder) and --from_scratch")
    if not 0.0 <= args.mask_ratio < 1.0:
        p.error(f"--mask_ratio must be in [0, 1), got {args.mask_ratio}")
    if args.probe_layer is not None and not args.freeze_backbone:
        p.error("--probe_layer needs --freeze_backbone")
    if args.probe_layer is not None and args.probe_layer < 0:
        p.error(f"--probe_layer must be >= 0, got {args.probe_layer}")
    check_flags(p, args, at_least_one=("num_labels", "logging_steps", "eval_steps"),
                at_least_zero=("early_stopping_patience", "bootstrap_resamples"))
    return args


# ----------------------------------------------------------------------------------------------- helpers
class EarlyStopping:
    """Best validation metric so far and evaluations without improvement (checkpointed with the run), counted as
    transformers' ``EarlyStoppingCallback`` (which serves the ``Trainer`` only) does; ``patience`` 0 never stops."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_metric = -math.inf
        self.best_epoch = -1
        self.best_step = -1
        self.bad_evaluations = 0

    def update(self, metric: float, epoch: int, step: int) -> bool:
        """Record one evaluation's metric; return True when it is the best so far."""
        if metric > self.best_metric:
            self.best_metric, self.best_epoch, self.best_step, self.bad_evaluations = metric, epoch, step, 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evaluations >= self.patience

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class FinetuneProgress(TrainingProgress):
    """``TrainingProgress`` plus the training loss since the last logged step, the logged losses (``train_log``) and
    the evaluations (``history``): a resumed run reports what the uninterrupted one would."""

    def __init__(self):
        super().__init__()
        self.loss_sum = 0.0
        self.loss_batches = 0
        self.train_log: list[dict] = []
        self.history: list[dict] = []

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.loss_sum, self.loss_batches = float(state["loss_sum"]), int(state["loss_batches"])
        self.train_log, self.history = list(state["train_log"]), list(state["history"])


def _task_fields(task_info: dict, args: argparse.Namespace) -> tuple[str, str, list[str], list]:
    """(task, task_type, label_names, hidden_attributes) from task_info.json and the flags."""
    task = task_info.get("task")
    if args.task and task and args.task != task:
        logger.warning("--task %s given for a data set built for task %s; using %s", args.task, task, args.task)
    task = args.task or task
    if not task:
        raise ValueError(f"{args.dataset}: task_info.json names no task; give --task")
    task_type = task_info.get("task_type")
    if task_type not in ("sequence", "token"):
        raise ValueError(
            f"{args.dataset}: task_type {task_type!r} cannot be fine-tuned (need 'sequence' or 'token'); "
            "is this a pre-training data set?"
        )
    label_names = [str(n) for n in (task_info.get("label_names") or [])]
    if not label_names:
        if not args.num_labels:
            raise ValueError(f"{args.dataset}: task_info.json has no label_names; give --num_labels")
        label_names = [str(i) for i in range(args.num_labels)]
    elif args.num_labels and args.num_labels != len(label_names):
        raise ValueError(f"--num_labels {args.num_labels} but {args.dataset} has {len(label_names)} label names")
    hidden = [h if isinstance(h, str) else ATTRIBUTE_NAMES[int(h)] for h in task_info.get("hidden_attributes") or []]
    return task, task_type, label_names, hidden


def _truncate_encoder(model, num_layers: int) -> None:
    """Keep the first ``num_layers`` encoder layers (probing: the head sees ``hidden_states[num_layers]``)."""
    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    if num_layers > len(layers):
        raise ValueError(f"--probe_layer {num_layers} but the encoder has only {len(layers)} layers")
    base.encoder.layer = torch.nn.ModuleList(list(layers)[:num_layers])
    model.config.num_hidden_layers = num_layers


def evaluate_split(model, dataloader, accelerator, evaluator, is_token_task) -> float:
    """Run the model over one unshuffled split, feed the evaluator (with the segments' log-probabilities and note
    counts, for the piece-level results) and return the mean loss."""
    model.eval()
    losses = []
    for batch in tqdm(dataloader, desc="evaluating", leave=False, disable=not accelerator.is_local_main_process):
        masked = batch.pop("masked_positions", None)
        batch.pop("segment_id", None)
        with torch.no_grad():
            outputs = model(**batch)
        predictions = outputs.logits.argmax(-1)
        labels = batch["labels"]
        num_notes = batch["attention_mask"].sum(-1) - 2  # every segment holds BOS + notes + EOS
        if is_token_task:  # segments differ in length across processes: pad before gathering
            predictions = accelerator.pad_across_processes(predictions, dim=1, pad_index=-100)
            labels = accelerator.pad_across_processes(labels, dim=1, pad_index=-100)
            if masked is not None:
                masked = accelerator.pad_across_processes(masked, dim=1, pad_index=0)
            predictions, labels, num_notes = accelerator.gather_for_metrics((predictions, labels, num_notes))
            log_probs = None
        else:
            log_probs = torch.log_softmax(outputs.logits.float(), dim=-1)
            predictions, labels, num_notes, log_probs = accelerator.gather_for_metrics(
                (predictions, labels, num_notes, log_probs))
        if masked is not None and is_token_task:
            masked = accelerator.gather_for_metrics(masked)
        evaluator.add_batch(predictions, labels, masked if is_token_task else None, log_probs=log_probs,
                            num_notes=num_notes)
        if outputs.loss is not None:
            losses.append(accelerator.gather_for_metrics(outputs.loss.detach().reshape(1)).float().mean().item())
    return float(sum(losses) / len(losses)) if losses else float("nan")


def split_metrics(evaluator, piece_ids, loss: float, prefix: str) -> tuple[dict, object]:
    """Segment (or note) and piece-level metrics of one evaluated split, with the loss and the number of scored
    predictions, and the split's :class:`~adversarial_midibert.evaluation.PieceResults`: ``(metrics, pieces)``."""
    pieces = evaluator.piece_results(piece_ids)
    metrics = {**evaluator.compute(prefix), **pieces.compute(evaluator.num_labels, prefix),
               f"{prefix}loss": loss, f"num_{prefix}scored": evaluator.num_scored}
    return metrics, pieces


def bootstrap_intervals(pieces, prefix: str, n_resamples: int, seed: int) -> dict:
    """95 % bootstrap intervals over pieces: ``{prefix}accuracy_ci95`` (pieces resampled with all their segments or
    notes) and, for sequence tasks, ``{prefix}piece_accuracy_ci95``; empty when ``n_resamples`` is 0."""
    if n_resamples <= 0:
        return {}
    levels = {"accuracy": "segment", "piece_accuracy": "piece"} if pieces.is_sequence else {"accuracy": "note"}
    out = {}
    for name, level in levels.items():
        interval = bootstrap_accuracy(*pieces.counts(level), n_resamples=n_resamples, seed=seed)
        out[f"{prefix}{name}_ci95"] = [interval.low, interval.high]
    return out


# ----------------------------------------------------------------------------------------------- main
def main(args: argparse.Namespace | list[str] | None = None, prog: str | None = None) -> dict:
    """Run the fine-tuning on ``args`` (parsed flags, command-line strings, or None for ``sys.argv``; ``prog`` names
    the command in ``--help`` and in the recorded command); return the results written to ``all_results.json``."""
    if isinstance(args, argparse.Namespace):
        command = None
    else:
        argv = sys.argv[1:] if args is None else list(args)
        command = command_line(prog or "python examples/finetune.py", argv)
        args = parse_args(argv, prog)
    output_dir = Path(args.output_dir)
    check_output_dir(args, output_dir)

    accelerator = make_accelerator(args, output_dir, data_seed=args.seed, mixed_precision=args.mixed_precision)
    output_lock = start_run(accelerator, logger, args.seed, output_dir)
    if not accelerator.is_local_main_process:
        logger.setLevel(logging.WARNING)

    # --- data
    with accelerator.main_process_first():  # the main process checks the shards; the others load what it checked
        datasets, task_info, tokenizer = load_task_dataset(args.dataset, verify=accelerator.is_main_process)
    task, task_type, label_names, hidden = _task_fields(dict(task_info), args)
    is_token_task = task_type == "token"
    if is_token_task and args.metric_for_best_model.startswith("piece_"):
        raise ValueError(f"--metric_for_best_model {args.metric_for_best_model}: token tasks have no piece-level "
                         "label; use accuracy or f1_macro")
    for split in ("train", "validation", "test"):
        if split not in datasets:
            raise ValueError(f"{args.dataset}: split {split!r} is missing (splits: {sorted(datasets)})")
        if len(datasets[split]) == 0:
            raise ValueError(f"{args.dataset}: split {split!r} is empty")
    if args.max_train_samples is not None:
        datasets["train"] = sample_rows(datasets["train"], args.max_train_samples, seed=args.seed)
    if args.max_eval_samples is not None:
        for split in ("validation", "test"):
            datasets[split] = sample_rows(datasets[split], args.max_eval_samples, seed=args.seed)
    columns = [c for c in ("input_ids", "attention_mask", "labels", "segment_id")
               if c in datasets["train"].column_names]
    train_collator = DataCollatorForOctuple(
        tokenizer=tokenizer, pitch_shift=args.pitch_shift, mask_ratio=args.mask_ratio, seed=args.seed
    )
    eval_collator = DataCollatorForOctuple(
        tokenizer=tokenizer, mask_ratio=args.mask_ratio if args.mask_eval else 0.0, seed=args.seed + 1
    )

    def loader(split: str, collator, batch_size: int) -> DataLoader:
        return DataLoader(datasets[split].select_columns(columns), shuffle=split == "train", collate_fn=collator,
                          batch_size=batch_size, num_workers=args.preprocessing_num_workers)

    train_dataloader = loader("train", train_collator, args.per_device_train_batch_size)
    eval_dataloader = loader("validation", eval_collator, args.per_device_eval_batch_size)
    test_dataloader = loader("test", eval_collator, args.per_device_eval_batch_size)
    piece_ids = {split: datasets[split]["piece_id"] for split in ("validation", "test")}
    logger.info("task %s (%s), %d classes, segments: %s", task, task_type, len(label_names),
                {k: len(v) for k, v in datasets.items()})

    # --- model
    model_class = AdvMidiBertForTokenClassification if is_token_task else AdvMidiBertForSequenceClassification
    label_kwargs = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {n: i for i, n in enumerate(label_names)},
        "hidden_attributes": hidden,  # the model replaces them by MASK (velocity for velocity prediction)
    }
    if args.from_scratch:
        config_kwargs = preset_config_kwargs(args.preset, args.config_overrides)
        config = AdvMidiBertConfig(vocab_sizes=list(tokenizer.vocab_sizes), **config_kwargs, **label_kwargs)
        model = model_class(config)
    else:
        model = model_class.from_pretrained(
            args.model_name_or_path, trust_remote_code=args.trust_remote_code, **label_kwargs
        )
        if list(model.config.vocab_sizes) != list(tokenizer.vocab_sizes):
            raise ValueError(
                f"the data set's tokenizer has vocabulary sizes {list(tokenizer.vocab_sizes)} but "
                f"{args.model_name_or_path} was pre-trained with {list(model.config.vocab_sizes)}: rebuild the data "
                "set with the pre-trained model's tokenizer"
            )
    tokenizer_max = int(tokenizer.max_seq_len)
    if tokenizer_max > model.config.max_position_embeddings:
        raise ValueError(
            f"the data set's segments hold up to {tokenizer_max} rows but the model handles "
            f"{model.config.max_position_embeddings} positions; rebuild the data set with a smaller max_seq_len"
        )
    model.config.finetuning_task = task
    if args.freeze_backbone:
        if args.probe_layer is not None:
            _truncate_encoder(model, args.probe_layer)
        for parameter in getattr(model, model.base_model_prefix).parameters():
            parameter.requires_grad_(False)
    apply_acceleration(model, args.gradient_checkpointing, args.torch_compile,
                       args.torch_compile_backend, args.torch_compile_mode)
    trainable = [p for p in model.parameters() if p.requires_grad]
    logger.info("parameters: %d trainable of %d", sum(p.numel() for p in trainable),
                sum(p.numel() for p in model.parameters()))

    # --- optimiser and schedule
    if args.learning_rate is None:
        args.learning_rate = default_finetune_learning_rate(model.config.hidden_size)
        logger.info("learning rate %g (the default for hidden size %d)", args.learning_rate, model.config.hidden_size)
    optimizer = torch.optim.AdamW(optimizer_groups(model, args.weight_decay, {"": args.learning_rate}),
                                  lr=args.learning_rate)
    epoch_steps = steps_per_epoch(len(train_dataloader), accelerator.num_processes, args.gradient_accumulation_steps)
    training_length(args, epoch_steps, default_epochs=args.num_train_epochs)
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer=optimizer,
        num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    model, optimizer, train_dataloader, eval_dataloader, test_dataloader, scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, test_dataloader, scheduler
    )
    stopping = EarlyStopping(args.early_stopping_patience)
    progress = FinetuneProgress()
    # The run state lives in safetensors/JSON beside Accelerate's files, written atomically (never a pickle).
    checkpoints, checkpoint = checkpoints_and_resume(
        accelerator, args, output_dir, {"early_stopping": stopping, "progress": progress},
        dataset_fingerprint(datasets["train"], datasets["validation"]), model, optimizer, "finetune")
    if checkpoint is not None:
        logger.info("resumed from %s (epoch %d, step %d)", checkpoint, progress.epoch, progress.completed_steps)

    # --- train
    best_dir = output_dir / "best_model"
    if best_dir.is_dir() and checkpoint is None and accelerator.is_main_process:
        import shutil

        shutil.rmtree(best_dir)  # left by an earlier run in this folder
    best_key = "eval_" + args.metric_for_best_model
    eval_metrics: dict = {}
    eval_pieces = None
    progress.start_clock()
    progress_bar = tqdm(total=args.max_train_steps, initial=progress.completed_steps, desc="fine-tuning",
                        disable=not accelerator.is_local_main_process)

    def log_training_loss(epoch: int) -> None:
        """The mean training loss since the last logged step, as transformers' Trainer logs it."""
        row = {"step": progress.completed_steps, "epoch": epoch,
               "train_loss": progress.loss_sum / progress.loss_batches, "learning_rate": scheduler.get_last_lr()[0]}
        progress.train_log.append(row)
        progress.loss_sum, progress.loss_batches = 0.0, 0
        logger.info("step %d: train loss %.4f, learning rate %.3g", row["step"], row["train_loss"],
                    row["learning_rate"])
        if args.with_tracking:
            accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def score(dataloader, split: str, prefix: str) -> tuple:
        """``(metrics, pieces, evaluator)`` of one split."""
        evaluator = ClassificationEvaluator(len(label_names), label_names)
        loss = evaluate_split(model, dataloader, accelerator, evaluator, is_token_task)
        return (*split_metrics(evaluator, piece_ids[split], loss, prefix), evaluator)

    def evaluate_and_keep_best(epoch: int) -> None:
        nonlocal eval_metrics, eval_pieces
        metrics, pieces, _ = score(eval_dataloader, "validation", "eval_")
        progress.history.append({"step": progress.completed_steps, "epoch": epoch, **metrics})
        logger.info("step %d (epoch %d): eval loss %.4f, eval accuracy %.4f, eval macro-F1 %.4f%s",
                    progress.completed_steps, epoch, metrics["eval_loss"], metrics["eval_accuracy"],
                    metrics["eval_f1_macro"],
                    "" if is_token_task else f", eval piece accuracy {metrics['eval_piece_accuracy']:.4f}")
        if args.with_tracking:
            accelerator.log({**metrics, "epoch": epoch}, step=progress.completed_steps)
        if stopping.update(metrics[best_key], epoch, progress.completed_steps):
            eval_metrics, eval_pieces = dict(metrics), pieces  # a copy: the history row stays as computed
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                with write_folder_aside(best_dir) as tmp:
                    accelerator.unwrap_model(model).save_pretrained(tmp, save_function=accelerator.save)
        model.train()
        if stopping.should_stop:
            logger.info("early stopping: no better %s in %d evaluations", best_key, stopping.bad_evaluations)

    while (progress.epoch < args.num_train_epochs and not stopping.should_stop
           and progress.completed_steps < args.max_train_steps):
        epoch = progress.epoch
        model.train()
        train_dataloader.set_epoch(epoch)  # the epoch's order and augmentations depend on (seed, epoch) only
        train_collator.set_epoch(epoch)
        loader = train_dataloader
        if progress.epoch_micro_step:
            loader = accelerator.skip_first_batches(train_dataloader, progress.epoch_micro_step)
        for batch in loader:
            batch.pop("masked_positions", None)
            batch.pop("segment_id", None)
            torch.manual_seed(step_seed(args.seed, progress.micro_step, accelerator.process_index))  # dropout
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            progress.micro_step += 1
            progress.epoch_micro_step += 1
            progress.loss_sum += loss.detach().float().item()
            progress.loss_batches += 1
            if not accelerator.sync_gradients:
                continue
            progress.completed_steps += 1
            progress_bar.update(1)
            last_step = progress.completed_steps >= args.max_train_steps
            if progress.completed_steps % args.logging_steps == 0:
                log_training_loss(epoch)
            if args.eval_steps and (progress.completed_steps % args.eval_steps == 0 or last_step):
                evaluate_and_keep_best(epoch)  # before the step's checkpoint, which then holds it
            if args.checkpointing_steps and args.checkpointing_steps.isdigit():
                if progress.completed_steps % int(args.checkpointing_steps) == 0:
                    checkpoints.save(f"step_{progress.completed_steps}", progress.completed_steps)
            if last_step or stopping.should_stop:
                break

        if not args.eval_steps:
            evaluate_and_keep_best(epoch)
        run_ends = (stopping.should_stop or epoch + 1 >= args.num_train_epochs
                    or progress.completed_steps >= args.max_train_steps)
        if run_ends and progress.loss_batches:
            log_training_loss(epoch)  # the steps since the last logged one
        progress.epoch, progress.epoch_micro_step = epoch + 1, 0
        if args.checkpointing_steps == "epoch":
            checkpoints.save(f"epoch_{epoch}", progress.completed_steps)
    progress_bar.close()
    train_runtime = progress.runtime()  # every stretch of a resumed run

    # --- best weights back, test
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if (best_dir / "model.safetensors").is_file():
        from safetensors.torch import load_file

        unwrapped.load_state_dict(load_file(best_dir / "model.safetensors"))  # strict: every weight, nothing more
        logger.info("restored the best weights (step %d, epoch %d, %s %.4f)", stopping.best_step,
                    stopping.best_epoch, best_key, stopping.best_metric)
    history = progress.history
    if eval_pieces is None:  # resumed after the best epoch, or no epoch ran: score validation again
        eval_metrics, eval_pieces, _ = score(eval_dataloader, "validation", "eval_")
    eval_metrics.update(bootstrap_intervals(eval_pieces, "eval_", args.bootstrap_resamples, args.seed))
    test_metrics, test_pieces, evaluator = score(test_dataloader, "test", "test_")
    test_metrics.update(bootstrap_intervals(test_pieces, "test_", args.bootstrap_resamples, args.seed))
    logger.info("test accuracy %.4f, macro-F1 %.4f%s", test_metrics["test_accuracy"], test_metrics["test_f1_macro"],
                "" if is_token_task else f"; per piece {test_metrics['test_piece_accuracy']:.4f}, "
                f"macro-F1 {test_metrics['test_piece_f1_macro']:.4f}")

    results = {
        **test_metrics,
        **eval_metrics,
        "task": task,
        "task_type": task_type,
        "split_source": task_info.get("split_source"),  # which split of the data set the figures are on
        "label_names": label_names,
        "epoch": stopping.best_epoch,
        "best_step": stopping.best_step,
        "epochs_run": progress.epoch,
        "train_steps": progress.completed_steps,
        "train_runtime": train_runtime,
        "seed": args.seed,
        "metric_for_best_model": args.metric_for_best_model,
        "learning_rate": args.learning_rate,
        "bootstrap": {"n_resamples": args.bootstrap_resamples, "confidence": 0.95, "seed": args.seed,
                      "method": "percentile bootstrap over pieces, each piece resampled with all its segments/notes"},
        "mask_ratio": args.mask_ratio,
        "mask_eval": args.mask_eval,
        "pitch_shift": args.pitch_shift,
        "hidden_attributes": hidden,
        "init": "scratch:" + args.preset if args.from_scratch else str(args.model_name_or_path),
        "probe_layer": args.probe_layer,
        "num_train_segments": len(datasets["train"]),
        "num_eval_segments": len(datasets["validation"]),
        "num_test_segments": len(datasets["test"]),
        "command": command or "finetune.main(" + " ".join(shlex.quote(f"{k}={v}") for k, v in vars(args).items()) + ")",
        "history": history,
        "train_log": progress.train_log,
    }
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir, save_function=accelerator.save)
        tokenizer.save_pretrained(output_dir)
        if not (output_dir / TOKENIZER_FILE_NAME).is_file():
            logger.warning("the tokenizer did not write %s into %s", TOKENIZER_FILE_NAME, output_dir)
        for prefix, pieces in (("eval", eval_pieces), ("test", test_pieces)):
            atomic_write_json(output_dir / f"{prefix}_piece_results.json", pieces.records(label_names))
        title = f"{task}: test accuracy {test_metrics['test_accuracy']:.3f}"
        evaluator.plot(output_dir / "confusion_matrix.png", title=title)
        if history or progress.train_log:
            model_name = f"{args.preset} preset from scratch" if args.from_scratch else args.model_name_or_path
            plot_training_curves(progress.train_log + history, output_dir / "training_curves.png", x="step",
                                 title=f"{task} fine-tuning of {model_name}")
        _write_card(output_dir, args, task, task_type, results)
        atomic_write_json(output_dir / "all_results.json", results)  # last: its presence marks a finished run
        if best_dir.is_dir() and not args.checkpointing_steps:  # kept for a resumed run to restore
            import shutil

            shutil.rmtree(best_dir)
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        hub.push_folder_to_hub(output_dir, args.hub_model_id, token=args.hub_token,
                               commit_message=f"Fine-tuned on {task}: test accuracy "
                                              f"{test_metrics['test_accuracy']:.4f}")
    if output_lock is not None:
        output_lock.release()
    return results


def _write_card(output_dir: Path, args, task: str, task_type: str, results: dict) -> None:
    """The model card, with the data set in its metadata (the code files came with save_pretrained); the
    hyper-parameters it lists go into ``results`` (all_results.json), so that a card rewritten from them keeps them."""
    results["hyperparameters"] = {k: getattr(args, k) for k in (
        "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
        "max_train_steps", "mask_ratio", "mask_eval", "pitch_shift", "early_stopping_patience", "seed",
        "freeze_backbone", "probe_layer")}
    hub.write_model_card(
        output_dir,
        repo_id=args.hub_model_id,
        base_model=None if args.from_scratch or Path(args.model_name_or_path).exists() else args.model_name_or_path,
        task=task,
        task_type=task_type,
        datasets=[Path(args.dataset).name if Path(args.dataset).exists() else args.dataset],
        training_command=results["command"],
        results=results,
    )


if __name__ == "__main__":
    main()
