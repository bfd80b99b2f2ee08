"""What the pre-training and fine-tuning loops share, written once: the flags (a dataclass, as transformers'
``HfArgumentParser`` reads them) and their checks, logging, seed and the output folder's lock, optimizer groups, the
number of steps, and the trackers' configuration."""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from transformers import HfArgumentParser
from transformers.trainer_pt_utils import get_parameter_names

from ..atomic_io import FolderLock
from ..checkpointing import CheckpointManager, list_checkpoints
from ..data.builder import is_dataset_folder
from ..presets import PRESETS
from ..speed_and_memory import COMPILE_MODES, slow_bf16_warning

SCHEDULER_TYPES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
# Flags both loops check the same way (each loop adds its own).
AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                "num_train_epochs", "max_train_steps", "max_train_samples", "max_eval_samples",
                "checkpoints_total_limit")
AT_LEAST_ZERO = ("num_warmup_steps", "preprocessing_num_workers", "max_grad_norm", "weight_decay")


def flag(default=None, help: str | None = None, **argparse_kwargs):
    """A dataclass field as ``HfArgumentParser`` reads it: the default, the help and any other ``add_argument``
    keyword (``choices``, ``required``)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class TrainingArguments:
    """The flags both loops take, with the names of transformers' ``run_mlm_no_trainer.py`` and ``TrainingArguments``;
    each loop's dataclass adds its own, and may give one of these another default."""

    dataset: str | None = flag(help="Folder written by examples/prepare_data.py, or a Hub dataset id published by it.")
    model_name_or_path: str | None = flag(help="Model folder or Hub id to start from.")
    preset: str = flag("small", "Model size of a fresh model: tiny (tests), small (CPU), base (the paper's).",
                       choices=sorted(PRESETS))
    config_overrides: str | None = flag(help='Override config attributes of a fresh model, e.g. '
                                             '"hidden_size=128,num_hidden_layers=2".')
    max_train_samples: int | None = flag(help="Use N training segments drawn at random with --seed (not the first N: a "
                                              "split lists its rows in piece order); pre-training: not with "
                                              "--streaming.")
    max_eval_samples: int | None = flag(help="Use N validation (and test) segments drawn at random with --seed "
                                             "(pre-training with --streaming: the first N).")
    per_device_train_batch_size: int = flag(8)
    per_device_eval_batch_size: int = flag(8)
    learning_rate: float | None = flag(5e-4)
    weight_decay: float = flag(0.01)
    num_train_epochs: int | None = flag()
    max_train_steps: int | None = flag(help="Optimizer steps; overrides --num_train_epochs.")
    gradient_accumulation_steps: int = flag(1)
    lr_scheduler_type: str = flag("linear", "transformers.get_scheduler name", choices=SCHEDULER_TYPES)
    num_warmup_steps: int | None = flag()
    max_grad_norm: float = flag(3.0, "Clip the gradient norm to this value (the reference code: 3.0; 0 = no clipping).")
    seed: int = flag(42)
    output_dir: str | None = flag()
    checkpointing_steps: str | None = flag(help="Save the run state every N optimizer steps, or 'epoch'.")
    checkpoints_total_limit: int | None = flag(help="Keep at most this many checkpoints (the newest by step); older "
                                                    "ones are deleted.")
    resume_from_checkpoint: str | None = flag(help="A checkpoint folder, or 'latest' for the newest complete "
                                                   "step_*/epoch_* in --output_dir (none yet: start anew).")
    overwrite_output_dir: bool = flag(False, "Start anew in a folder that already holds a run's results or "
                                             "checkpoints (its logs are rewritten, its checkpoints replaced).")
    with_tracking: bool = flag(False, "Log metrics with the --report_to trackers.")
    report_to: str = flag("tensorboard", "Tracker(s) for --with_tracking: tensorboard, wandb, all...")
    logging_steps: int = flag(10, "Log the training loss every N optimizer steps.")
    preprocessing_num_workers: int = flag(0, "DataLoader workers.")
    cpu: bool = flag(False, "Force the CPU even when a GPU is present.")
    gradient_checkpointing: bool = flag(False, "Recompute each encoder layer in the backward pass instead of keeping "
                                               "its activations (less memory, about one more forward pass of compute).")
    torch_compile: bool = flag(False, "Compile the model with torch.compile.")
    torch_compile_backend: str | None = flag(help="torch.compile backend (default: inductor); implies --torch_compile.")
    torch_compile_mode: str | None = flag(help="torch.compile mode; implies --torch_compile.", choices=COMPILE_MODES)
    push_to_hub: bool = flag(False, "Upload the final folder to the Hub.")
    hub_model_id: str | None = flag(help="namespace/name for --push_to_hub.")
    hub_token: str | None = flag(help="Hub token (default: HF_TOKEN or the login).")


def argument_parser(arguments: type, prog: str | None, description: str) -> HfArgumentParser:
    """``HfArgumentParser`` of a loop's dataclass, its help as written (no defaults appended)."""
    return HfArgumentParser(arguments, prog=prog, description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, at_least_one=(), at_least_zero=(),
                above_zero=("learning_rate",)) -> None:
    """Exit through ``parser.error`` with a message naming the flag when a shared flag (or one named here) is out of
    range; flags left at None are not checked. (``HfArgumentParser`` checks types and choices, not ranges.)"""
    if args.checkpointing_steps is not None and args.checkpointing_steps != "epoch":
        if not args.checkpointing_steps.isdigit() or int(args.checkpointing_steps) < 1:
            parser.error("--checkpointing_steps must be a positive integer or 'epoch', got "
                         f"{args.checkpointing_steps!r}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id namespace/name")
    for names, fails, bound in ((AT_LEAST_ONE + tuple(at_least_one), lambda v: v < 1, ">= 1"),
                                (AT_LEAST_ZERO + tuple(at_least_zero), lambda v: v < 0, ">= 0"),
                                (above_zero, lambda v: not v > 0, "> 0")):
        for name in names:
            value = getattr(args, name)
            if value is not None and fails(value):
                parser.error(f"--{name} must be {bound}, got {value}")


def make_accelerator(args, output_dir: Path, data_seed: int | None = None, **kwargs) -> Accelerator:
    """The run's ``Accelerator``: gradient accumulation, the CPU when asked, trackers writing into ``output_dir``, and a
    seedable sampler (an epoch's order depends on the seed and the epoch only: a resumed run sees the same batches)."""
    return Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps, cpu=args.cpu,
                       log_with=args.report_to if args.with_tracking else None, project_dir=str(output_dir),
                       dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=data_seed),
                       **kwargs)


def check_output_dir(args, output_dir: Path) -> None:
    """Refuse a fresh start in a folder that holds a run (its results or a complete checkpoint) unless
    ``--overwrite_output_dir``: starting anew there would rewrite its logs and replace its checkpoints."""
    checkpoints = [checkpoint.path.name for checkpoint in list_checkpoints(output_dir, warn=False)]
    # 'latest' with no checkpoint starts anew: refused like any fresh start
    resuming = args.resume_from_checkpoint and (args.resume_from_checkpoint != "latest" or checkpoints)
    if args.overwrite_output_dir or resuming:
        return
    held = [name for name in ("all_results.json",) if (output_dir / name).is_file()] + checkpoints
    if held:
        resume = "continue it with --resume_from_checkpoint latest, or " if checkpoints else ""
        raise FileExistsError(f"--output_dir {output_dir} holds a run ({', '.join(held)}): {resume}start anew with "
                              "--overwrite_output_dir or in another folder")


def start_run(accelerator: Accelerator, logger, seed: int, output_dir: Path) -> FolderLock | None:
    """Logging, the slow-bf16 warning, the seed, and the output folder: refused if it holds a data set, else locked by
    the main process (one run per folder) and created. Returns the lock for the caller to release (None elsewhere)."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO)
    verbosity = "warning" if accelerator.is_local_main_process else "error"
    getattr(datasets.utils.logging, f"set_verbosity_{verbosity}")()
    getattr(transformers.utils.logging, f"set_verbosity_{verbosity}")()
    slow_bf16 = slow_bf16_warning(accelerator.device, accelerator.mixed_precision)
    if slow_bf16:
        logger.warning(slow_bf16)
    set_seed(seed)
    output_lock = None
    if accelerator.is_main_process:
        if is_dataset_folder(output_dir):
            raise FileExistsError(f"--output_dir {output_dir} holds a dataset; write the run to another folder")
        output_lock = FolderLock(output_dir).acquire()
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return output_lock


def checkpoints_and_resume(accelerator: Accelerator, args, output_dir: Path, states: dict, data_fingerprint: str,
                           model: torch.nn.Module, optimizer, project: str) -> tuple[CheckpointManager, Path | None]:
    """The run's :class:`CheckpointManager` (disk space checked when checkpoints are asked for), the trackers started,
    and the checkpoint the run resumes from, loaded (None: the run starts anew)."""
    checkpoints = CheckpointManager(accelerator, output_dir, states=states, total_limit=args.checkpoints_total_limit,
                                    data_fingerprint=data_fingerprint)
    if args.checkpointing_steps:
        checkpoints.check_disk_space(model, optimizer)
    if args.with_tracking:
        accelerator.init_trackers(project, tracker_config(args))
    resumed = checkpoints.resolve(args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    if resumed is not None:
        checkpoints.load(resumed)
    return checkpoints, resumed


def optimizer_groups(model: torch.nn.Module, weight_decay: float, learning_rates: dict[str, float]) -> list[dict]:
    """AdamW parameter groups of the trainable parameters: weight decay except on biases and LayerNorm weights (the
    Trainer's rule), times one learning rate per name prefix of ``learning_rates`` (``""``: the rest)."""
    decay_names = set(get_parameter_names(model, [torch.nn.LayerNorm], ["bias"]))
    prefixes = sorted(learning_rates, key=len, reverse=True)
    named: dict[str, list] = {prefix: [] for prefix in learning_rates}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            named[next(p for p in prefixes if name.startswith(p))].append((name, parameter))
    groups = []
    for prefix, lr in learning_rates.items():
        decay = [p for n, p in named[prefix] if n in decay_names]
        no_decay = [p for n, p in named[prefix] if n not in decay_names]
        groups += [{"params": decay, "weight_decay": weight_decay, "lr": lr},
                   {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
    return [group for group in groups if group["params"]]


def steps_per_epoch(batches_per_epoch: int, num_processes: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in an epoch of ``batches_per_epoch`` batches shared by the processes."""
    return max(1, math.ceil(batches_per_epoch / (num_processes * gradient_accumulation_steps)))


def training_length(args: argparse.Namespace, epoch_steps: int, default_epochs: int) -> None:
    """``--max_train_steps`` wins over ``--num_train_epochs``; sets both on ``args``."""
    if args.max_train_steps is None:
        args.num_train_epochs = args.num_train_epochs or default_epochs
        args.max_train_steps = args.num_train_epochs * epoch_steps
    else:
        args.num_train_epochs = math.ceil(args.max_train_steps / epoch_steps)


def tracker_config(args: argparse.Namespace) -> dict:
    """The flags as a tracker stores them: numbers, strings and booleans (enums by their value)."""
    return {k: (v.value if hasattr(v, "value") else v) for k, v in vars(args).items()
            if isinstance(v, (int, float, str, bool)) or hasattr(v, "value")}
