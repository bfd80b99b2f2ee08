"""Sharing a data set: ClassLabel labels and the task survive save_to_disk / load_from_disk; the Hub upload is one
commit of Parquet splits + card + task + tokenizer; a Hub id loads back (offline, from the cache) with everything."""

from __future__ import annotations

from pathlib import Path

import datasets
import huggingface_hub
import pytest
from datasets import ClassLabel, List, load_from_disk

from adversarial_midibert.data import build_recipe, load_task_dataset, push_dataset_to_hub, save, task_info_from_dataset


@pytest.fixture(scope="module")
def melody_folder(data_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("melody") / "data"
    save(build_recipe("melody", data_root=data_root, max_seq_len=64, max_files=4, seed=0), folder)
    return folder


def test_class_labels_and_task_round_trip_through_disk(melody_folder):
    plain = load_from_disk(str(melody_folder))
    labels = plain["train"].features["labels"]
    assert isinstance(labels, List) and labels.feature == ClassLabel(names=["melody", "bridge", "accompaniment"])
    info = task_info_from_dataset(plain)  # no task_info.json needed
    assert info["task"] == "melody" and info["task_type"] == "token" and info["label_names"][0] == "melody"
    row = plain["train"][0]["labels"]
    assert row[0] == row[-1] == -100 and set(row[1:-1]) <= {-100, 0, 1, 2}


def test_push_is_one_commit_and_the_hub_id_loads_back_offline(melody_folder, tmp_path, monkeypatch):
    commits = []

    def create_commit(api, repo_id, operations, **kwargs):
        commits.append((repo_id, kwargs, {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}))
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda api, repo_id, **kw: commits.append(("repo", kw)))
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert push_dataset_to_hub(melody_folder, "my-org/melody-octuple",
                               command="adv-midibert prepare ...") == "commit-info"
    (_, repo_kwargs), (repo_id, kwargs, files) = commits
    assert repo_kwargs["repo_type"] == "dataset" and repo_id == "my-org/melody-octuple"
    assert kwargs["repo_type"] == "dataset"
    assert set(files) == {"README.md", "task_info.json", "build_report.json", "octuple_tokenizer.json",
                          "data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet",
                          "data/test-00000-of-00001.parquet"}
    card = huggingface_hub.DatasetCard(files["README.md"].decode())
    assert card.data.configs[0]["data_files"][0] == {"split": "train", "path": "data/train-*.parquet"}
    assert 'load_dataset("my-org/melody-octuple")' in card.text and "melody, bridge, accompaniment" in card.text

    # The same files in huggingface_hub's cache layout, then offline: the Hub id resolves from the cache.
    revision = "f" * 40
    snapshot = tmp_path / "hub" / "datasets--my-org--melody-octuple" / "snapshots" / revision
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    data, info, tokenizer = load_task_dataset("my-org/melody-octuple")
    local, local_info, _ = load_task_dataset(melody_folder)
    assert info == local_info and tokenizer.max_seq_len == 64
    for split in local:
        assert data[split].features["labels"] == local[split].features["labels"]
        assert data[split]["labels"] == local[split]["labels"] and data[split]["piece_id"] == local[split]["piece_id"]
    with pytest.raises(FileNotFoundError, match="my-org/unknown"):
        load_task_dataset("my-org/unknown")

    dry = push_dataset_to_hub(melody_folder, "my-org/melody-octuple", dry_run_dir=tmp_path / "dry")
    assert sorted(p.relative_to(dry).as_posix() for p in dry.rglob("*") if p.is_file()) == sorted(files)
