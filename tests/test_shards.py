"""The sharded build (adversarial_midibert.data.shards): resume after a kill, refusal of a foreign folder, layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_builder import write_midi

from adversarial_midibert.data.builder import build_dataset, load_task_dataset
from adversarial_midibert.data.shards import SHARD_INDEX_NAME, plan_shards
from adversarial_midibert.data.streaming import StreamingDataset
from adversarial_midibert.tokenization_octuple import OctupleTokenizer


@pytest.fixture()
def pieces(tmp_path):
    root = tmp_path / "midi"
    for i in range(9):
        write_midi(root / f"p{i}.mid", n_notes=20 + 7 * i, base=48 + i)
    (root / "bad.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    return root


def _build(pieces, out, **kwargs):
    kwargs = {"task_type": "pretrain", "splits": (0.8, 0.2, 0.0), "tokenizer": OctupleTokenizer(max_seq_len=16),
              "shard_size": 2, "output_dir": out, **kwargs}
    return build_dataset(pieces, **kwargs)


def test_plan_shards_sizes():
    assert plan_shards(0) == []
    assert plan_shards(5, shard_size=2) == [(0, 2), (2, 3), (3, 5)]  # consecutive, sizes differ by one at most
    assert plan_shards(10, num_shards=4) == [(0, 2), (2, 5), (5, 8), (8, 10)]
    assert plan_shards(3, num_shards=8) == [(0, 1), (1, 2), (2, 3)]  # never an empty shard
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards(3, shard_size=0)


def test_killed_build_resumes_keeping_finished_shards(pieces, tmp_path):
    out = tmp_path / "built"
    first = _build(pieces, out)
    index = json.loads((out / SHARD_INDEX_NAME).read_text())
    files = index["splits"]["train"]["files"]
    assert len(files) == 4  # 8 train pieces (the bad file among them), 2 per shard
    assert first["train"]["segment_id"] == list(range(len(first["train"])))
    assert [s["reason"]
            for s in first.build_report["skipped"]] and first.build_report["skipped"][0]["piece_id"] == "bad"
    kept = {f: (out / f).stat().st_mtime_ns for f in files[:2]}
    # A kill while shard 2 was being written: its side file missing, a half-written temporary file beside it.
    (out / ".build" / files[2]).with_suffix(".json").unlink()
    (out / "train" / ".shard-00003-of-00004.arrow.tmp-999").write_bytes(b"partial")
    (out / SHARD_INDEX_NAME).unlink()
    resumed = _build(pieces, out)
    assert {f: (out / f).stat().st_mtime_ns for f in files[:2]} == kept  # finished shards kept as they were
    assert not list((out / "train").glob(".*tmp*"))
    for column in ("input_ids", "piece_id", "segment_id"):
        assert resumed["train"][column] == first["train"][column]
    assert resumed.build_report == first.build_report
    loaded, info, _ = load_task_dataset(out)
    assert set(loaded) == {"train", "validation"} and info["task_type"] == "pretrain"
    assert np.array_equal(np.asarray(loaded["train"][3]["input_ids"]), np.asarray(first["train"][3]["input_ids"]))


def test_folder_of_another_build_is_refused_unless_overwritten(pieces, tmp_path):
    out = tmp_path / "built"
    _build(pieces, out)
    with pytest.raises(ValueError, match="holds another build"):
        _build(pieces, out, tokenizer=OctupleTokenizer(max_seq_len=32))
    rebuilt = _build(pieces, out, tokenizer=OctupleTokenizer(max_seq_len=32), overwrite=True)
    assert max(len(x) for x in rebuilt["train"]["input_ids"]) > 16
    assert len(json.loads((out / SHARD_INDEX_NAME).read_text())["splits"]["train"]["files"]) == 4


def test_num_shards_and_parallel_build_give_the_same_rows(pieces, tmp_path):
    serial = _build(pieces, tmp_path / "serial")
    parallel = _build(pieces, tmp_path / "parallel", num_shards=3, num_proc=2)
    index = json.loads((tmp_path / "parallel" / SHARD_INDEX_NAME).read_text())
    assert len(index["splits"]["train"]["files"]) == 3
    assert parallel["train"]["input_ids"] == serial["train"]["input_ids"]
    assert parallel["train"]["segment_id"] == serial["train"]["segment_id"]


def _message_boundaries(path):
    """Byte offsets where the Arrow IPC stream's messages end (after the schema, after each record batch)."""
    import pyarrow as pa

    ends = []
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.MessageReader.open_stream(source)
        while True:
            try:
                reader.read_next_message()
            except StopIteration:
                break
            ends.append(source.tell())
    return ends


@pytest.mark.parametrize("damage", ["message_boundary", "mid_message", "same_size"])
def test_a_damaged_shard_is_named_on_load_and_rebuilt_on_resume(pieces, tmp_path, damage, caplog):
    """Issue 19 item 3: a train shard cut at a message boundary loaded as fewer rows than shards.json says, and a
    re-run said "saved"; cut mid-message it raised pyarrow's OSError naming no file, and re-running never repaired
    it. Now loading names the shard, and the same build run again rebuilds it."""
    import logging

    out = tmp_path / "built"
    first = _build(pieces, out, shard_size=4)
    expected = list(first["train"]["input_ids"])  # read now: ``first`` maps the file damaged below
    index = json.loads((out / SHARD_INDEX_NAME).read_text())
    name = index["splits"]["train"]["files"][0]
    shard = out / name
    data = shard.read_bytes()
    ends = _message_boundaries(shard)
    assert len(ends) >= 2 and ends[-1] - ends[0] > 300  # the schema, then the record batch(es)
    if damage == "message_boundary":  # a valid stream of fewer rows
        shard.write_bytes(data[:ends[-2]])
    elif damage == "mid_message":
        shard.write_bytes(data[:ends[-2] + 5])
    else:  # same size, other bytes inside the last record batch's body
        body = bytearray(data)
        body[ends[-2] + 200:ends[-2] + 208] = b"\x7f" * 8
        shard.write_bytes(bytes(body))
    with pytest.raises(ValueError, match=rf"shard {shard} .*run the same build"):
        load_task_dataset(out)
    with pytest.raises(ValueError, match=rf"shard {shard} .*run the same build"):
        StreamingDataset(out)  # the streaming path checks the shards too, before training reads them
    StreamingDataset(out, verify=False)  # a process other than the main one opens without reading the corpus
    if damage == "message_boundary":  # unchecked, a shard cut at a message boundary reads as fewer rows
        assert len(load_task_dataset(out, verify=False)[0]["train"]) < len(expected)
    with caplog.at_level(logging.WARNING):
        rebuilt = _build(pieces, out, shard_size=4)
    assert f"shard {shard}" in caplog.text and "rebuilding it" in caplog.text
    assert shard.read_bytes() == data
    loaded, _, _ = load_task_dataset(out)
    assert len(loaded["train"]) == len(expected) == index["splits"]["train"]["num_rows"]
    assert list(rebuilt["train"]["input_ids"]) == expected


def test_only_the_shards_that_were_checked_are_loaded(pieces, tmp_path):
    """Issue 26 item 10: load_task_dataset checked the shards of shards.json but loaded those of state.json: a shard
    listed twice there, or one more file, loaded unchecked (28 rows against 21 checked)."""
    import shutil

    out = tmp_path / "built"
    rows = len(_build(pieces, out)["train"])
    state_path = out / "train" / "state.json"
    state = json.loads(state_path.read_text())
    first = state["_data_files"][0]["filename"]
    shutil.copy(out / "train" / first, out / "train" / "extra.arrow")
    listed = state["_data_files"]
    for files in ([*listed, listed[0]], [*listed, {"filename": "extra.arrow"}]):
        state_path.write_text(json.dumps({**state, "_data_files": files}))
        with pytest.raises(ValueError, match=rf"{state_path}: .*shards.json"):
            load_task_dataset(out)
    state_path.write_text(json.dumps(state))
    assert len(load_task_dataset(out)[0]["train"]) == rows


@pytest.mark.parametrize("name", ["../outside.arrow", "/tmp/outside.arrow", "train/../../outside.arrow"])
def test_shard_names_that_leave_the_folder_are_refused(pieces, tmp_path, name):
    out = tmp_path / "built"
    _build(pieces, out)
    index = json.loads((out / SHARD_INDEX_NAME).read_text())
    index["splits"]["train"]["files"][0] = name
    (out / SHARD_INDEX_NAME).write_text(json.dumps(index))
    for opening in (load_task_dataset, StreamingDataset, lambda folder: StreamingDataset(folder, verify=False)):
        with pytest.raises(ValueError, match=rf"{SHARD_INDEX_NAME}: shard {name!r} lies outside"):
            opening(out)
