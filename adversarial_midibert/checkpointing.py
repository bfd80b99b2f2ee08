"""Crash-safe checkpoints of the training loops (``step_N`` / ``epoch_N`` folders in ``--output_dir``).

A checkpoint (Accelerate's ``save_state`` plus the loop's own state in safetensors and JSON, never a pickle) is written
into a hidden ``.tmp-<name>`` folder, flushed, sealed by the marker ``checkpoint_complete.json`` (every file's size
and SHA-256, the step, the run's id, the training data's fingerprint) and renamed into place; checkpoints beyond
``total_limit`` are then removed. ``latest`` is the complete checkpoint with the highest step whose files still hash
to what was written (others are skipped with a warning naming them). Not Accelerate's
``automatic_checkpoint_naming``: it writes in place, deletes old folders first and numbers by save count, not step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic_io import (
    TMP_PREFIX,
    TRASH_PREFIX,
    atomic_write_text,
    file_sha256,
    fsync_path,
    fsync_tree,
    remove_path,
    replace_folder,
)

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIXES = ("step", "epoch")
COMPLETE_MARKER = "checkpoint_complete.json"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
CHECKPOINT_FORMAT = 2  # 2: the marker holds each file's SHA-256 and the run id
_NAME = re.compile(r"^(step|epoch)_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used (incomplete, damaged, another data set, no disk space)."""


# ---- Logs --------------------------------------------------------------------------------------------------


def truncate_jsonl(path: str | os.PathLike, keep) -> int:
    """Keep the rows of a JSON-lines log for which ``keep(row)`` is true (a resumed run rewrites the rest); a torn
    last line of a killed run is dropped. Returns the number of rows removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, removed = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            removed += 1
            continue
        if keep(row):
            kept.append(line)
        else:
            removed += 1
    if removed:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return removed


# ---- The loop's own state: safetensors + JSON, never a pickle ----------------------------------------------


def _json_safe(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, torch.Tensor):  # numpy scalars and arrays
        return _json_safe(value.tolist(), where)
    raise TypeError(f"training state {where}: cannot store a {type(value).__name__} (tensors, numbers, strings, "
                    "lists and dicts only)")


def save_training_state(folder: str | os.PathLike, states: Mapping[str, Any]) -> list[str]:
    """Write ``{name: obj.state_dict()}`` as one safetensors file (the tensors) and one JSON file (the rest); return
    the names of the files written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict] = {}
    for name, obj in states.items():
        state = obj.state_dict() if hasattr(obj, "state_dict") else obj
        plain[name] = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                plain[name][key] = _json_safe(value, f"{name}.{key}")
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_JSON).write_text(json.dumps(plain, indent=2) + "\n", encoding="utf-8")
    return [STATE_TENSORS, STATE_JSON]


def load_training_state(folder: str | os.PathLike) -> dict[str, dict]:
    """Read what :func:`save_training_state` wrote: ``{name: state_dict}``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        plain = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {folder}: cannot read the training state: {error}") from error
    if not isinstance(plain, dict):
        raise CheckpointError(f"checkpoint {folder}: {STATE_JSON} is not a JSON object")
    for key, tensor in tensors.items():
        name, _, field = key.partition(".")
        plain.setdefault(name, {})[field] = tensor
    return plain


# ---- Finding checkpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder and what its marker says."""

    path: Path
    step: int
    marker: dict

    @property
    def order(self) -> tuple[int, int, int]:
        """Sort key: training step, then ``epoch_N`` after ``step_N`` (written later at the same step)."""
        kind, number = _NAME.match(self.path.name).groups()
        return self.step, int(kind == "epoch"), int(number)


def _folder_files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def check_checkpoint(path: str | os.PathLike, verify_content: bool = False) -> dict:
    """The marker of a complete checkpoint folder; :class:`CheckpointError` saying what is wrong otherwise.

    Complete: the marker is readable and every file it lists is present at its size, with no other file. With
    ``verify_content`` every file must also hash to its recorded SHA-256 (format-1 markers have no hashes).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: no such folder")
    marker_path = path / COMPLETE_MARKER
    if not marker_path.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: no {COMPLETE_MARKER} (the run that wrote it was "
                              "interrupted, or it was written by an older version)")
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        files = {str(k): int(v) for k, v in marker["files"].items()}
        int(marker["step"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"checkpoint {path}: unreadable {COMPLETE_MARKER}: {error}") from error
    present = _folder_files(path)
    present.pop(COMPLETE_MARKER, None)
    for name, size in files.items():
        if name not in present:
            raise CheckpointError(f"checkpoint {path} is damaged: {name} is missing")
        if present[name] != size:
            raise CheckpointError(f"checkpoint {path} is damaged: {name} has {present[name]} bytes, "
                                  f"{size} were written")
    extra = sorted(set(present) - set(files))
    if extra:
        raise CheckpointError(f"checkpoint {path}: files not written by the run: {', '.join(extra)} (refusing to "
                              "load a checkpoint that was changed)")
    if verify_content:
        hashes = marker.get("sha256") or {}
        if not isinstance(hashes, dict):
            raise CheckpointError(f"checkpoint {path}: unreadable {COMPLETE_MARKER}: 'sha256' is not an object")
        for name in sorted(files):
            if name in hashes and file_sha256(path / name) != hashes[name]:
                raise CheckpointError(f"checkpoint {path} is damaged: {name} is not what was written (its SHA-256 "
                                      "differs from the one recorded when it was saved)")
    return marker


def list_checkpoints(output_dir: str | os.PathLike, warn: bool = True) -> list[Checkpoint]:
    """The complete ``step_*`` / ``epoch_*`` checkpoints of ``output_dir``, oldest first by training step (the
    others skipped, with a warning naming each one and why)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        if not _NAME.match(path.name) or not path.is_dir():
            continue
        try:
            marker = check_checkpoint(path)
        except CheckpointError as error:
            if warn:
                logger.warning(f"skipping {error}")
            continue
        found.append(Checkpoint(path, int(marker["step"]), marker))
    return sorted(found, key=lambda c: c.order)


def latest_checkpoint(output_dir: str | os.PathLike, verify_content: bool = True) -> Path | None:
    """The newest *complete* checkpoint of ``output_dir`` by training step (``--resume_from_checkpoint latest``), or
    ``None``. With ``verify_content`` the candidates are hashed newest first, a damaged one skipped with a warning."""
    found = list_checkpoints(output_dir)
    damaged = []
    for checkpoint in reversed(found):
        try:
            if verify_content:
                check_checkpoint(checkpoint.path, verify_content=True)
        except CheckpointError as error:
            damaged.append(str(error))
            continue
        if damaged:
            logger.warning(f"skipping {'; '.join(damaged)}; falling back to {checkpoint.path}")
        return checkpoint.path
    if damaged:
        logger.warning(f"skipping {'; '.join(damaged)}; no undamaged checkpoint left in {output_dir}")
    return None


# ---- Fingerprint of the training data ----------------------------------------------------------------------


def _hash_arrow(digest, array) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    kind = array.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        digest.update(pc.list_value_length(array).fill_null(-1).to_numpy(zero_copy_only=False).tobytes())
        _hash_arrow(digest, array.flatten())
    elif pa.types.is_fixed_size_list(kind):
        digest.update(f"[{kind.list_size}]".encode())
        _hash_arrow(digest, array.flatten())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        for value in array.to_pylist():
            digest.update(b"\x00" if value is None else value.encode("utf-8") + b"\x01")
    else:
        digest.update(array.to_numpy(zero_copy_only=False).tobytes())


def dataset_fingerprint(*splits, columns: Iterable[str] = ("input_ids", "attention_mask", "labels", "segment_id"),
                        batch_size: int = 8192) -> str:
    """A content hash of the rows a run trains on (``datasets.Dataset`` splits, in order): the same data gives the
    same fingerprint wherever it was built; any other data (same size or not) a different one."""
    digest = hashlib.blake2b(digest_size=16)
    for split in splits:
        names = [c for c in columns if c in split.column_names]
        digest.update(json.dumps([len(split), names]).encode())
        arrow = split.select_columns(names).with_format("arrow")
        for start in range(0, len(split), batch_size):
            table = arrow[start:start + batch_size]
            for name in names:
                _hash_arrow(digest, table.column(name))
    return digest.hexdigest()


# ---- Disk space --------------------------------------------------------------------------------------------


def estimate_checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                              states: Mapping[str, Any] | None = None) -> int:
    """About how many bytes one checkpoint takes: the model's state, the optimizer's (AdamW keeps two tensors the
    size of each trainable parameter, counted even before its first step) and the loop's tensors."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))
    if optimizer is not None:
        inner = getattr(optimizer, "optimizer", optimizer)
        for group in inner.param_groups:
            for p in group["params"]:
                state = inner.state.get(p, {})
                tensors = [t for t in state.values() if isinstance(t, torch.Tensor) and t.numel() > 1]
                total += (sum(t.numel() * t.element_size() for t in tensors) if tensors
                          else 2 * p.numel() * p.element_size() if p.requires_grad else 0)
    for obj in (states or {}).values():
        state = obj.state_dict() if hasattr(obj, "state_dict") else obj
        total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return total + (1 << 20)  # random states, scheduler, JSON


def check_disk_space(folder: str | os.PathLike, needed: int, what: str = "a checkpoint") -> None:
    """Raise :class:`CheckpointError` when the file system of ``folder`` has less than ``needed`` bytes free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise CheckpointError(f"not enough disk space in {folder}: {what} needs about {needed / 2**20:.1f} MiB, "
                              f"{free / 2**20:.1f} MiB are free (free some space, use another --output_dir, or "
                              "save fewer checkpoints)")


# ---- The manager used by examples/pretrain.py and examples/finetune.py -------------------------------------


class CheckpointManager:
    """Atomic save, ``latest``, rotation and checked loading of a run's checkpoints.

    Args:
        accelerator (`accelerate.Accelerator`): the run's accelerator (after ``prepare``).
        output_dir (`str` or `Path`): where the ``step_N`` / ``epoch_N`` folders go.
        states (`dict`): the loop's own state objects by name (``state_dict`` / ``load_state_dict`` of tensors,
            numbers, strings, lists and dicts), saved as safetensors + JSON (not also with
            ``accelerator.register_for_checkpointing``).
        total_limit (`int`, *optional*): keep at most this many complete checkpoints (the newest by step).
        data_fingerprint (`str`, *optional*): :func:`dataset_fingerprint` of the training data; a checkpoint made
            on other data is refused when loading.
    """

    def __init__(self, accelerator, output_dir: str | os.PathLike, states: Mapping[str, Any] | None = None,
                 total_limit: int | None = None, data_fingerprint: str | None = None):
        if total_limit is not None and total_limit < 1:
            raise ValueError(f"total_limit must be >= 1 or None, got {total_limit}")
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.states = dict(states or {})
        self.total_limit = total_limit
        self.data_fingerprint = data_fingerprint
        self.run_id = uuid.uuid4().hex  # a resumed run takes the id of the checkpoint it loads
        self._verified: dict[Path, tuple] = {}  # checkpoints hashed by resolve(), not hashed again by load()
        if accelerator.is_main_process:
            self._clean_leftovers()

    # ---- before training
    def check_disk_space(self, model: torch.nn.Module, optimizer=None) -> int:
        """Fail before training when the disk cannot hold one more checkpoint; return the estimate in bytes."""
        needed = estimate_checkpoint_bytes(model, optimizer, self.states)
        check_disk_space(self.output_dir, needed)
        return needed

    # ---- save
    def save(self, name: str, step: int) -> Path:
        """Write checkpoint ``name`` (``step_N`` / ``epoch_N``) of training step ``step``; return its folder. On failure
        the partial folder is removed and :class:`CheckpointError` names the newest complete checkpoint left."""
        if not _NAME.match(name):
            raise ValueError(f"checkpoint name must be step_N or epoch_N, got {name!r}")
        acc = self.accelerator
        final = self.output_dir / name
        tmp = self.output_dir / f"{TMP_PREFIX}{name}"
        failure: BaseException | None = None
        if acc.is_main_process:
            self._clean_leftovers()
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            if acc.is_main_process:
                save_training_state(tmp, self.states)
        except Exception as error:  # a full disk is an OSError, or torch.save's RuntimeError
            failure = error  # "unexpected pos": every process reaches the barrier below
        acc.wait_for_everyone()
        failed = torch.tensor([failure is not None], device=acc.device)
        if acc.num_processes > 1:
            failed = acc.reduce(failed.long(), reduction="sum") > 0
        if bool(failed.any()):
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            newest = latest_checkpoint(self.output_dir)
            raise CheckpointError(f"checkpoint {final} could not be written ({failure or 'on another process'}); "
                                  f"the partial folder was removed; newest complete checkpoint: {newest}") from failure
        if acc.is_main_process:
            try:
                self._seal(tmp, name, step)
                replace_folder(tmp, final)  # over a folder of the same name: a re-run from an older checkpoint
            except OSError as error:
                shutil.rmtree(tmp, ignore_errors=True)
                raise CheckpointError(f"checkpoint {final} could not be written ({error}); the partial folder was "
                                      f"removed; newest complete checkpoint: {latest_checkpoint(self.output_dir)}"
                                      ) from error
            self.rotate(keep=final)
            self._warn_other_runs(final, step)
        acc.wait_for_everyone()
        return final

    def _seal(self, tmp: Path, name: str, step: int) -> None:
        """fsync every file, then write the marker last (itself flushed)."""
        files = _folder_files(tmp)
        fsync_tree(tmp)
        marker = {
            "format": CHECKPOINT_FORMAT,
            "name": name,
            "step": int(step),
            "run_id": self.run_id,
            "data_fingerprint": self.data_fingerprint,
            "num_processes": self.accelerator.num_processes,
            "states": sorted(self.states),
            "files": files,
            "sha256": {name: file_sha256(tmp / name) for name in files},  # read back from the page cache
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with open(tmp / COMPLETE_MARKER, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(marker, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        fsync_path(tmp)

    def _clean_leftovers(self) -> None:
        """Remove this manager's temporary and half-deleted folders left by a killed run."""
        if not self.output_dir.is_dir():
            return
        for path in self.output_dir.iterdir():
            if path.is_dir() and path.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                logger.warning(f"removing {path}, left by an interrupted checkpoint write")
                remove_path(path)  # a symlinked checkpoint: the link only

    def rotate(self, keep: str | os.PathLike | None = None) -> list[Path]:
        """Delete the oldest complete checkpoints beyond ``total_limit`` (each renamed away first, a symlink losing
        its link only), never the newest nor ``keep`` (the one just saved); return the folders deleted."""
        if self.total_limit is None:
            return []
        found = list_checkpoints(self.output_dir, warn=False)
        keep = Path(keep) if keep is not None else None
        doomed = [c.path for c in found[:max(0, len(found) - self.total_limit)] if c.path != keep]
        for path in doomed:
            trash = path.with_name(f"{TRASH_PREFIX}{path.name}")
            os.replace(path, trash)
            remove_path(trash)
        if doomed:
            logger.info(f"checkpoints_total_limit {self.total_limit}: deleted {', '.join(p.name for p in doomed)}")
        return doomed

    def _warn_other_runs(self, saved: Path, step: int) -> None:
        """Say clearly when ``output_dir`` holds checkpoints of another run at later steps: ``latest`` would pick
        them rather than the one just saved."""
        later = [c for c in list_checkpoints(self.output_dir, warn=False)
                 if c.step > int(step) and c.marker.get("run_id") != self.run_id]
        if later:
            logger.warning(f"{self.output_dir} holds checkpoints of another run at later steps than {saved.name} "
                           f"(step {step}): {', '.join(c.path.name for c in later)}; --resume_from_checkpoint latest "
                           f"would pick {later[-1].path.name}, not this run's: remove them or use another "
                           "--output_dir")

    # ---- load
    def resolve(self, resume_from_checkpoint: str) -> Path | None:
        """The folder named by ``--resume_from_checkpoint``: ``latest`` (``None`` when no complete checkpoint exists
        yet: the run starts from the beginning, with a warning) or a path, which must be a complete checkpoint."""
        if resume_from_checkpoint == "latest":
            path = latest_checkpoint(self.output_dir)
            if path is None:
                logger.warning(f"--resume_from_checkpoint latest: no complete step_*/epoch_* checkpoint in "
                               f"{self.output_dir}; starting from the beginning")
            else:
                self._verified[path] = _stamp(path)
            return path
        path = Path(resume_from_checkpoint)
        check_checkpoint(path, verify_content=True)
        self._verified[path] = _stamp(path)
        return path

    def load(self, path: str | os.PathLike) -> dict:
        """Restore the Accelerate state and the loop's states from a complete checkpoint; return its marker.
        :class:`CheckpointError` when the folder is incomplete, damaged, changed, or made on other data."""
        path = Path(path)
        marker = check_checkpoint(path, verify_content=self._verified.get(path) != _stamp(path))
        stored = marker.get("data_fingerprint")
        if self.data_fingerprint is not None and stored is not None and stored != self.data_fingerprint:
            raise CheckpointError(
                f"checkpoint {path} was made on other training data (fingerprint {stored}, this run's data "
                f"{self.data_fingerprint}): resume with the same --dataset and sample limits, or start a new run")
        pickles = sorted(p.name for p in path.glob("custom_checkpoint_*.pkl"))
        if pickles:
            raise CheckpointError(f"checkpoint {path} holds {', '.join(pickles)}: pickled custom states are not "
                                  "loaded (checkpoints of this version keep the training state in safetensors/JSON)")
        self._check_random_states(path, marker)
        states = load_training_state(path)
        missing = sorted(set(self.states) - set(states))
        if missing:
            raise CheckpointError(f"checkpoint {path}: no saved state for {', '.join(missing)}")
        try:
            self.accelerator.load_state(str(path))
        except Exception as error:  # re-raised with the folder named
            raise CheckpointError(f"checkpoint {path}: Accelerate could not restore the run state: "
                                  f"{type(error).__name__}: {error}") from error
        for name, obj in self.states.items():
            obj.load_state_dict(states[name])
        self.run_id = str(marker.get("run_id") or self.run_id)  # the resumed run continues the loaded one
        return marker

    def _check_random_states(self, path: Path, marker: dict) -> None:
        """Read the random states first (``weights_only=True``) and fail clearly: Accelerate's own restore only logs a
        failure, and the resumed run would silently differ. Processes beyond those that wrote it get a warning."""
        from accelerate.utils import load as accelerate_load

        rng_file = path / f"random_states_{self.accelerator.process_index}.pkl"
        written_by = int(marker.get("num_processes", 1))
        if not rng_file.exists() and self.accelerator.process_index >= written_by:
            logger.warning(f"checkpoint {path} was written by {written_by} process(es): process "
                           f"{self.accelerator.process_index} starts from fresh random states, so the resumed run "
                           "will not repeat an uninterrupted one exactly")
            return
        try:
            states = accelerate_load(rng_file, map_location="cpu")
            states["torch_manual_seed"]
        except Exception as error:  # any failure means the resumed run would differ
            raise CheckpointError(f"checkpoint {path}: cannot read {rng_file.name} with weights_only=True "
                                  f"({type(error).__name__}: {error})") from error


def _stamp(path: Path) -> tuple:
    """Sizes and modification times of a checkpoint's files: unchanged since it was hashed, it need not be again."""
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file())
