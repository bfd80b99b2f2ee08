"""Streaming training (adversarial_midibert.data.streaming, examples/pretrain.py --streaming) on sharded builds."""

from __future__ import annotations

import json
import re
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_builder import write_midi
from test_pretrain_script import _losses, _run

from adversarial_midibert.data.builder import build_dataset
from adversarial_midibert.data.collators import pad_octuple_batch
from adversarial_midibert.data.streaming import StreamingBatches, StreamingDataset
from adversarial_midibert.tokenization_octuple import OctupleTokenizer

from script_env import free_port


@pytest.fixture(scope="module")
def synthetic_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("midi")
    for i in range(12):
        write_midi(root / f"p{i:02d}.mid", n_notes=20 + 9 * i, base=40 + i)
    out = tmp_path_factory.mktemp("built") / "ds"
    build_dataset(root, task_type="pretrain", splits=(0.9, 0.1, 0.0), tokenizer=OctupleTokenizer(max_seq_len=16),
                  shard_size=2, output_dir=out)
    return out


def _ids(batches):
    return [int(x) for b in batches for x in b["segment_id"]]


def test_epochs_cover_the_split_once_in_a_new_order_each(synthetic_build):
    stream = StreamingDataset(synthetic_build)
    total = stream.num_rows("train")
    assert stream.tokenizer.max_seq_len == 16 and stream.task_info["task_type"] == "pretrain"
    batches = StreamingBatches(stream.split("train"), 4, pad_octuple_batch, seed=1, shuffle_buffer_size=8)
    epochs = [_ids(batches.epoch_batches(e)) for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(total)) and batches.exhausted
    assert epochs[0] != epochs[1]
    unbuffered = StreamingBatches(stream.split("train"), 4, pad_octuple_batch, seed=1, shuffle_buffer_size=0)
    assert _ids(unbuffered.epoch_batches(1)) != _ids(unbuffered.epoch_batches(2))  # the shards' order, per epoch
    first = next(iter(batches.epoch_batches(2)))
    assert first["input_ids"].shape[0] == 4 and first["input_ids"].dtype == torch.long


@pytest.mark.parametrize("buffer", [0, 8])
def test_mid_epoch_state_resumes_the_same_batches(synthetic_build, buffer):
    stream = StreamingDataset(synthetic_build)
    make = lambda: StreamingBatches(stream.split("train"), 3, pad_octuple_batch, seed=5,  # noqa: E731
                                    shuffle_buffer_size=buffer, group_size=2)
    whole = _ids(make().epoch_batches(1))
    interrupted = make()
    it = interrupted.epoch_batches(1)
    seen = _ids([next(it) for _ in range(4)])  # two optimizer steps of two batches
    state = json.loads(json.dumps(interrupted.state_dict()))  # as saved in a checkpoint
    assert state["consumed"] == 12 and state["epoch"] == 1
    resumed = make()
    resumed.load_state_dict(state)
    assert seen + _ids(resumed.epoch_batches(1)) == whole


def test_processes_read_disjoint_shards_that_cover_the_split(synthetic_build):
    stream = StreamingDataset(synthetic_build)
    parts = []
    for rank in range(2):
        accelerator = SimpleNamespace(num_processes=2, process_index=rank, device=torch.device("cpu"))
        node = StreamingBatches(stream.split("train"), 4, pad_octuple_batch, accelerator, shuffle_buffer_size=0)
        assert node.whole_shards
        parts.append(_ids(node.all_batches()))
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(stream.num_rows("train")))


# --- examples/pretrain.py --streaming --------------------------------------------------------------------------

STREAM_ARGS = ["--streaming", "--preset", "tiny", "--per_device_train_batch_size", "8",
               "--per_device_eval_batch_size", "8", "--freeze_every", "1", "--logging_steps", "3", "--seed", "7",
               "--shuffle_buffer_size", "16", "--max_eval_samples", "16"]


@pytest.fixture(scope="module")
def pop909_shards(data_root, tmp_path_factory):
    files = [data_root / "POP909" / f"{i:03d}" / f"{i:03d}.mid" for i in range(1, 9)]
    files = [f for f in files if f.is_file()]
    if len(files) < 5:
        pytest.skip("POP909 files 001..008 not found")
    out = tmp_path_factory.mktemp("data") / "pop909-shards"
    build_dataset(files, task_type="pretrain", splits=(0.6, 0.2, 0.2), seed=0,
                  tokenizer=OctupleTokenizer(max_seq_len=128), task="pretrain", output_dir=out, shard_size=1)
    return out


@pytest.mark.slow
def test_streaming_run_resumes_mid_epoch_with_the_same_losses_and_mask_book(pop909_shards, repo_root, tmp_path):
    """12 steps over two epochs (8 or 9 batches each, a freezing pass between them); resumed from step 4."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    common = [sys.executable, "tests/mask_book_probe.py", "examples/pretrain.py", "--dataset", str(pop909_shards),
              *STREAM_ARGS,
              "--max_train_steps", "12", "--checkpointing_steps", "4"]
    _run([*common, "--output_dir", str(full)], repo_root)
    assert (full / "step_4" / "streaming_state_rank0.json").is_file()
    assert (full / "step_4" / "mask_book" / "frozen_bits.bin").is_file()
    results = json.loads((full / "all_results.json").read_text())
    assert results["frozen_fraction"] > 0
    resumed.mkdir()
    shutil.copytree(full / "step_4", resumed / "step_4")
    _run([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"], repo_root)
    a, b = _losses(full), _losses(resumed)
    assert sorted(b) == list(range(5, 13))
    for step in b:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    assert (full / "mask_book_rank0.txt").read_text() == (resumed / "mask_book_rank0.txt").read_text()


@pytest.mark.slow
def test_two_streaming_processes_share_the_mask_book_on_disk(pop909_shards, repo_root, tmp_path):
    out = tmp_path / "ddp"
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
          "tests/mask_book_probe.py", "examples/pretrain.py", "--cpu", "--dataset", str(pop909_shards),
          "--output_dir", str(out),
          *STREAM_ARGS, "--max_train_steps", "6"], repo_root, timeout=300)
    hashes = [(out / f"mask_book_rank{i}.txt").read_text().strip() for i in range(2)]
    assert hashes[0] == hashes[1]
    assert json.loads((out / "all_results.json").read_text())["frozen_fraction"] > 0
    bits = np.fromfile(out / "mask_book" / "frozen_bits.bin", dtype=np.uint8)
    assert bits.any() and bits.size == json.loads((pop909_shards / "shards.json").read_text())[
        "splits"]["train"]["num_rows"] * 16  # 128 rows: 16 bytes per segment


def test_an_empty_split_is_said_clearly(synthetic_build):
    """A tiny corpus may have no piece in a split: reading it names the split instead of a datasets error."""
    stream = StreamingDataset(str(synthetic_build))
    assert stream.num_rows("test") == 0 and stream.head("test", 4) is None
    with pytest.raises(ValueError, match="'test' split holds no segments"):
        stream.split("test")


def _serve_as_hub_dataset(monkeypatch, folder, changes=None):
    """Serve a built folder as the Hub dataset ``org/built``: its metadata files through ``hf_hub_download``, its
    files' sizes and LFS hashes through ``HfApi.get_paths_info`` (``changes``: path -> fields the Hub reports
    differently, or ``None`` for a file the repository lacks). Returns the paths the check asked about."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    from adversarial_midibert.atomic_io import file_sha256

    asked = []

    def download(repo_id, filename, repo_type=None, revision=None, token=None):
        assert (repo_id, repo_type) == ("org/built", "dataset")
        if not (folder / filename).is_file():
            raise EntryNotFoundError(filename)
        return str(folder / filename)

    def paths_info(self, repo_id, paths, *, expand=False, revision=None, repo_type=None, token=None):
        assert (repo_id, repo_type) == ("org/built", "dataset")
        asked.extend(paths)
        entries = []
        for path in paths:
            size = (folder / path).stat().st_size
            fields = dict(path=path, size=size, oid="0" * 40, lfs=dict(size=size, oid=file_sha256(folder / path),
                                                                      pointerSize=134))
            change = (changes or {}).get(path, {})
            if change is not None:
                entries.append(RepoFile(**{**fields, **change}))
        return entries

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", paths_info)
    return asked


def test_hub_shards_are_checked_against_the_index_without_downloading_them(synthetic_build, monkeypatch, caplog):
    index = json.loads((synthetic_build / "shards.json").read_text())
    shards = [name for info in index["splits"].values() for name in info["files"]]
    asked = _serve_as_hub_dataset(monkeypatch, synthetic_build)
    stream = StreamingDataset("org/built")
    assert not stream.local and sorted(asked) == sorted(shards) and stream.num_rows("train") > 0

    damaged = shards[1]
    for change, says in [({"lfs": dict(size=1, oid="f" * 64, pointerSize=134)}, "SHA-256 differs"),
                         (None, "missing"),
                         ({"lfs": None, "size": 7}, "has 7 bytes")]:
        _serve_as_hub_dataset(monkeypatch, synthetic_build, {damaged: change})
        with pytest.raises(ValueError, match=f"shard {re.escape(damaged)} .*{says}.* in the Hub dataset org/built"):
            StreamingDataset("org/built")
    # A file stored without LFS has no SHA-256 on the Hub: its size is checked and a same-size file passes.
    _serve_as_hub_dataset(monkeypatch, synthetic_build, {damaged: {"lfs": None}})
    StreamingDataset("org/built")

    def offline(*args, **kwargs):
        from huggingface_hub.errors import OfflineModeIsEnabled

        raise OfflineModeIsEnabled("offline")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", offline)
    with caplog.at_level("WARNING", logger="adversarial_midibert.data.streaming"):
        StreamingDataset("org/built")
    assert "not checked against shards.json (offline mode)" in caplog.text
