"""Crash-safe checkpoints: atomic folders, ``latest`` by step among complete ones, rotation, disk space, safe loading.

In-process with a real ``Accelerator`` and a tiny model; the kill tests of the training scripts are in
``test_fault_tolerance.py``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

from adversarial_midibert import checkpointing
from adversarial_midibert.atomic_io import atomic_write_json, write_folder_aside
from adversarial_midibert.checkpointing import (
    COMPLETE_MARKER,
    CheckpointError,
    CheckpointManager,
    check_checkpoint,
    dataset_fingerprint,
    latest_checkpoint,
    load_training_state,
    save_training_state,
    truncate_jsonl,
)


class Counter:
    def __init__(self):
        self.step, self.values, self.best = 0, torch.zeros(3), -float("inf")

    def state_dict(self):
        return {"step": self.step, "values": self.values.clone(), "best": self.best, "note": None}

    def load_state_dict(self, state):
        self.step, self.values, self.best = state["step"], state["values"].clone(), state["best"]


@pytest.fixture
def run(tmp_path):
    """(manager, model, optimizer, counter) on a tiny Linear model."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    counter = Counter()
    manager = CheckpointManager(accelerator, tmp_path / "out", states={"counter": counter}, data_fingerprint="abc")
    return manager, model, optimizer, counter


def _train_step(model, optimizer, counter):
    loss = model(torch.ones(2, 4)).pow(2).sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    counter.step += 1
    counter.values += 1


def _save_steps(manager, model, optimizer, counter, steps):
    for step in steps:
        while counter.step < step:
            _train_step(model, optimizer, counter)
        manager.save(f"step_{step}", step)


def test_save_is_complete_and_loads_back(run):
    manager, model, optimizer, counter = run
    _save_steps(manager, model, optimizer, counter, [2])
    folder = manager.output_dir / "step_2"
    marker = check_checkpoint(folder)
    assert marker["step"] == 2 and marker["data_fingerprint"] == "abc"
    assert {"model.safetensors", "optimizer.bin", "training_state.safetensors", "training_state.json"} <= set(
        marker["files"])
    assert not list(folder.glob("*.pkl")) or all(p.name.startswith("random_states") for p in folder.glob("*.pkl"))
    assert not [p for p in manager.output_dir.iterdir() if p.name.startswith(".")]  # no temporary folder left
    weights = model.weight.detach().clone()
    _train_step(model, optimizer, counter)
    manager.load(folder)
    assert torch.equal(model.weight, weights) and counter.step == 2
    assert torch.equal(counter.values, torch.full((3,), 2.0))
    assert counter.best == -float("inf")


def test_latest_is_newest_complete_by_step_not_by_time(run, caplog):
    """Issue 11 failure 1: `latest` took the newest folder by modification time, complete or not."""
    manager, model, optimizer, counter = run
    _save_steps(manager, model, optimizer, counter, [2, 10])
    out = manager.output_dir
    # a newer, killed write: the folder exists with some files and no marker
    (out / "step_42").mkdir()
    (out / "step_42" / "optimizer.bin").write_bytes(b"\x80\x02partial")
    (out / "epoch_3").mkdir()  # empty
    # touching an older checkpoint must not make it the latest
    time.sleep(0.01)
    (out / "step_2" / "training_state.json").touch()
    os.utime(out / "step_2")
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(out) == out / "step_10"
    assert "step_42 is incomplete" in caplog.text and "epoch_3 is incomplete" in caplog.text
    assert manager.resolve("latest") == out / "step_10"
    with pytest.raises(CheckpointError, match="incomplete"):
        manager.resolve(str(out / "step_42"))
    # epoch_N comes after step_N at the same step (written later)
    manager.save("epoch_0", 10)
    assert latest_checkpoint(out) == out / "epoch_0"


def test_damaged_or_changed_checkpoints_are_refused(run):
    manager, model, optimizer, counter = run
    _save_steps(manager, model, optimizer, counter, [1, 2])
    out = manager.output_dir
    optimizer_file = out / "step_2" / "optimizer.bin"
    optimizer_file.write_bytes(optimizer_file.read_bytes()[:100])  # torn write
    with pytest.raises(CheckpointError, match=r"step_2 is damaged: optimizer.bin has 100 bytes"):
        manager.load(out / "step_2")
    assert latest_checkpoint(out) == out / "step_1"
    (out / "step_1" / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="files not written by the run: notes.txt"):
        check_checkpoint(out / "step_1")
    assert latest_checkpoint(out) is None
    assert manager.resolve("latest") is None  # nothing usable: the run starts from the beginning


class _Payload:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def _forge(folder: Path, name: str, payload: bytes) -> None:
    """Replace a file of a complete checkpoint and rewrite the marker to match (an attacker who edits both)."""
    (folder / name).write_bytes(payload)
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    marker["files"][name] = len(payload)
    (folder / COMPLETE_MARKER).write_text(json.dumps(marker))


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_loading_never_runs_code_from_a_checkpoint(run, tmp_path, name):
    """Issue 11 failure 2: Accelerate's custom_checkpoint_*.pkl were loaded with weights_only=False."""
    manager, model, optimizer, counter = run
    _save_steps(manager, model, optimizer, counter, [1])
    proof = tmp_path / "code_ran"
    _forge(manager.output_dir / "step_1", name, pickle.dumps(_Payload(proof)))
    with pytest.raises(CheckpointError, match=rf"step_1.*({name}|weights_only|Unpickl)"):
        manager.load(manager.output_dir / "step_1")
    assert not proof.exists()


def test_rotation_keeps_the_newest_complete_checkpoints(run):
    """--checkpoints_total_limit: the oldest complete ones go after each save; incomplete folders stay."""
    manager, model, optimizer, counter = run
    manager.total_limit = 2
    (manager.output_dir).mkdir(parents=True)
    (manager.output_dir / "step_99").mkdir()  # not ours to judge: left alone
    _save_steps(manager, model, optimizer, counter, [1, 2, 3, 4])
    names = sorted(p.name for p in manager.output_dir.iterdir())
    assert names == ["step_3", "step_4", "step_99"]
    manager.total_limit = 1
    manager.rotate()
    assert latest_checkpoint(manager.output_dir) == manager.output_dir / "step_4"
    with pytest.raises(ValueError, match="total_limit"):
        CheckpointManager(manager.accelerator, manager.output_dir, total_limit=0)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 361600 vs 361488"),  # torch.save's
])
def test_full_disk_leaves_no_partial_checkpoint(run, monkeypatch, error):
    """Issue 11 failure 1: a full disk left a partial step_2 behind (torch.save raises the RuntimeError above on a
    full 2 MiB tmpfs)."""
    manager, model, optimizer, counter = run
    _save_steps(manager, model, optimizer, counter, [1])
    real_save = checkpointing.save_training_state

    def full_disk(folder, states):
        (Path(folder) / "training_state.safetensors").write_bytes(b"partial")
        raise error

    monkeypatch.setattr(checkpointing, "save_training_state", full_disk)
    with pytest.raises(CheckpointError, match=r"step_2 could not be written.*(No space left|unexpected pos).*newest "
                                              r"complete checkpoint: .*step_1"):
        _save_steps(manager, model, optimizer, counter, [2])
    assert sorted(p.name for p in manager.output_dir.iterdir()) == ["step_1"]
    monkeypatch.setattr(checkpointing, "save_training_state", real_save)
    manager.save("step_3", 3)
    assert latest_checkpoint(manager.output_dir).name == "step_3"


def test_disk_space_is_checked_before_training(run, monkeypatch):
    manager, model, optimizer, counter = run
    needed = manager.check_disk_space(model, optimizer)
    assert needed >= 3 * sum(p.numel() * 4 for p in model.parameters())  # weights + two AdamW moments
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 20, 10 << 20, 1000))
    with pytest.raises(CheckpointError, match=r"not enough disk space in .*out: a checkpoint needs about"):
        manager.check_disk_space(model, optimizer)


def test_checkpoint_of_other_data_is_refused(run):
    """Issue 11 failure 6: resuming with another dataset of the same size was accepted silently."""
    manager, model, optimizer, counter = run
    _save_steps(manager, model, optimizer, counter, [1])
    manager.data_fingerprint = "other"
    with pytest.raises(CheckpointError, match="made on other training data"):
        manager.load(manager.output_dir / "step_1")


def test_dataset_fingerprint_follows_content():
    import datasets
    import numpy as np

    def build(labels, ids=None):
        ids = (np.ones((3, 8)), np.zeros((2, 8))) if ids is None else ids
        return datasets.Dataset.from_dict({"input_ids": [a.astype(np.int16) for a in ids], "labels": labels,
                                           "segment_id": [0, 1], "piece_id": ["a", "b"]})

    a = build([1, 2])
    assert dataset_fingerprint(a) == dataset_fingerprint(build([1, 2]))  # rebuilt: same content, same print
    assert dataset_fingerprint(a) != dataset_fingerprint(build([1, 3]))  # same size, other labels
    assert dataset_fingerprint(a) != dataset_fingerprint(a.select([1, 0]))
    assert dataset_fingerprint(a) != dataset_fingerprint(build([1, 2], (np.ones((3, 8)), np.ones((2, 8)))))
    assert dataset_fingerprint(a, a.select([0])) != dataset_fingerprint(a)


def test_training_state_is_safetensors_and_json(tmp_path):
    counter = Counter()
    counter.values += 3
    save_training_state(tmp_path, {"counter": counter, "plain": {"history": [{"epoch": 0, "acc": 0.5}]}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_state.json", "training_state.safetensors"]
    state = load_training_state(tmp_path)
    assert torch.equal(state["counter"]["values"], torch.full((3,), 3.0))
    assert state["counter"]["best"] == -float("inf") and state["plain"]["history"][0]["acc"] == 0.5
    with pytest.raises(TypeError, match="counter.obj"):
        save_training_state(tmp_path, {"counter": {"obj": object()}})


def test_truncate_jsonl_drops_rows_to_be_rerun_and_torn_lines(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 10)) + '{"step": 1')
    assert truncate_jsonl(log, lambda row: row["step"] <= 6) == 4
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_folder_written_aside_is_all_or_nothing(tmp_path):
    target = tmp_path / "model"
    with write_folder_aside(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with write_folder_aside(target) as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    atomic_write_json(tmp_path / "r.json", {"x": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 1}


def test_a_file_changed_in_place_at_the_same_size_is_caught(run, caplog):
    """Issue 19 item 2: the marker recorded sizes only; overwriting the end of model.safetensors with other bytes
    (same size) was picked by ``latest`` and resumed with ``inf`` weights. Now the SHA-256 is checked: ``latest``
    falls back to the previous checkpoint with a warning naming the damaged one, and ``load`` refuses it."""
    manager, model, optimizer, counter = run
    _save_steps(manager, model, optimizer, counter, [1, 2])
    out = manager.output_dir
    weights = out / "step_2" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00\x00\x80\x7f" * 2  # float32 inf, same size
    weights.write_bytes(bytes(data))
    check_checkpoint(out / "step_2")  # sizes alone cannot tell
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(out) == out / "step_1"
    assert "step_2 is damaged: model.safetensors is not what was written" in caplog.text
    assert "falling back to" in caplog.text and str(out / "step_1") in caplog.text
    assert manager.resolve("latest") == out / "step_1"
    with pytest.raises(CheckpointError, match="step_2 is damaged: model.safetensors"):
        manager.resolve(str(out / "step_2"))
    with pytest.raises(CheckpointError, match="step_2 is damaged: model.safetensors"):
        manager.load(out / "step_2")
    manager.load(out / "step_1")
    assert counter.step == 1 and torch.isfinite(model.weight).all()


def test_rotation_never_deletes_the_checkpoint_it_just_wrote(run, caplog):
    """Issue 19 item 5: an older run's step_1..5 in the folder, a new manager with total_limit=1 saving epoch_3:
    ``save()`` returned a folder its own rotation had deleted. Now it is kept, and a warning says that the folder
    holds another run's checkpoints at later steps."""
    manager, model, optimizer, counter = run
    manager.total_limit = 5
    _save_steps(manager, model, optimizer, counter, [1, 2, 3, 4, 5])
    fresh = CheckpointManager(manager.accelerator, manager.output_dir, states={"counter": counter}, total_limit=1)
    with caplog.at_level(logging.WARNING):
        saved = fresh.save("epoch_3", 3)
    assert saved.is_dir() and check_checkpoint(saved)["run_id"] == fresh.run_id
    assert sorted(p.name for p in manager.output_dir.iterdir()) == ["epoch_3", "step_5"]
    assert "holds checkpoints of another run at later steps than epoch_3" in caplog.text and "step_5" in caplog.text
    # a run resumed from a checkpoint continues it: no warning about its own checkpoints
    resumed = CheckpointManager(manager.accelerator, manager.output_dir, states={"counter": counter}, total_limit=3)
    resumed.load(manager.output_dir / "step_5")
    assert resumed.run_id == manager.run_id
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resumed.save("step_6", 6)
    assert "another run" not in caplog.text


def test_a_symlinked_checkpoint_removed_by_rotation_leaves_nothing_behind(run, tmp_path, caplog):
    """Issue 19 item 13: rotating away a symlinked step_N left ``.deleting-step_N`` forever (rmtree refuses a
    link), with a false warning at every save. The link is removed; the folder it points to is not ours."""
    manager, model, optimizer, counter = run
    manager.total_limit = 1
    _save_steps(manager, model, optimizer, counter, [1])
    elsewhere = tmp_path / "elsewhere"
    (manager.output_dir / "step_1").rename(elsewhere)
    (manager.output_dir / "step_1").symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING):
        _save_steps(manager, model, optimizer, counter, [2, 3])
    assert sorted(p.name for p in manager.output_dir.iterdir()) == ["step_3"]
    assert "left by an interrupted" not in caplog.text and elsewhere.is_dir()


def test_a_folder_and_a_symlink_to_it_share_one_lock(tmp_path, lock_holder):
    """Issue 19 item 8: ``FolderLock`` on ``out`` and on a symlink to it both acquired (two lock files)."""
    from adversarial_midibert.atomic_io import FolderBusyError, FolderLock

    out, link = tmp_path / "out", tmp_path / "link"
    out.mkdir()
    link.symlink_to(out)
    with lock_holder(out):  # another process holds the lock of the real folder
        with pytest.raises(FolderBusyError, match=rf"{link} is being written by another process"):
            FolderLock(link).acquire()
    with FolderLock(link):
        pass


def test_writing_aside_over_a_symlink_keeps_the_link(tmp_path):
    """Issue 19 item 13: ``write_folder_aside`` on a symlinked target replaced the link by a real folder."""
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    (real / "old.txt").write_text("old")
    link.symlink_to(real)
    with write_folder_aside(link) as tmp:
        (tmp / "new.txt").write_text("new")
    assert link.is_symlink() and os.path.realpath(link) == str(real)
    assert sorted(p.name for p in real.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_masker_score_cache_survives_save_and_resume(run):
    """The score cache is saved beside the mask book and comes back on resume (safetensors, one byte per position)."""
    from adversarial_midibert.mask_book import MaskerScoreCache, PackedMaskBook

    manager, model, optimizer, counter = run
    cache, book = MaskerScoreCache(5, 16), PackedMaskBook(5, 16)
    manager.states.update(masker_score_cache=cache, mask_book=book)
    scores = torch.rand(2, 16, generator=torch.Generator().manual_seed(0))
    cache.set_rows(torch.tensor([1, 3]), scores, torch.ones(2, 16, dtype=torch.bool))
    saved = cache.codes(torch.arange(5), 16).clone()
    _save_steps(manager, model, optimizer, counter, [1])
    cache.set_rows(torch.tensor([1, 4]), torch.zeros(2, 16), torch.ones(2, 16, dtype=torch.bool))  # after the save
    assert not torch.equal(cache.codes(torch.arange(5), 16), saved)
    manager.load(manager.output_dir / "step_1")
    assert torch.equal(cache.codes(torch.arange(5), 16), saved)
    state = load_training_state(manager.output_dir / "step_1")["masker_score_cache"]
    assert state["codes"].dtype == torch.uint8 and state["codes"].shape == (5, 16)
