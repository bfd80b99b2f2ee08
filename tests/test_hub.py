"""Hub publishing: the one-commit upload, the model card, the dry run and remote-code loading.

Nothing here reaches the network: ``HfApi.create_repo``/``create_branch``/``create_commit`` are replaced
with recorders, and HF_HUB_OFFLINE=1 is set by conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import torch

from adversarial_midibert import OctupleTokenizer, hub
from adversarial_midibert.cli import main as cli_main
from adversarial_midibert.hub import HubPublishError, push_folder_to_hub
from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForSequenceClassification

from tiny_models import TINY_VOCAB_SIZES, tiny_config

EXPECTED_UPLOAD = {
    "README.md",
    "config.json",
    "configuration_adv_midibert.py",
    "model.safetensors",
    "modeling_adv_midibert.py",
    "octuple_tokenizer.json",
    "tokenizer_config.json",
    "tokenization_octuple.py",
    "octuple_encoding.py",
    "constants.py",
    "pipelines.py",  # the pipeline as remote code, added with the card (custom_pipelines)
    "pooling.py",
}
RESULTS = {
    "task": "composer",
    "dataset": "Pianist8",
    "test_accuracy": 0.875,
    "test_f1_macro": 0.8125,
    "eval_accuracy": 0.9,
    "test_loss": 0.42,
}


def tiny_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor(TINY_VOCAB_SIZES)
    ids = (torch.rand(2, 10, 8, generator=generator) * (sizes - 4)).long() + 4
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture()
def model_folder(tmp_path: Path) -> Path:
    """A fine-tuned-looking output folder, with the junk a training run leaves beside the model."""
    torch.manual_seed(0)
    folder = tmp_path / "run"
    model = AdvMidiBertForSequenceClassification(tiny_config(num_labels=3)).eval()
    model.save_pretrained(folder)  # with the model code files and the complete auto_map
    OctupleTokenizer(max_seq_len=40).save_pretrained(folder)  # with tokenizer_config.json and its code files
    from adversarial_midibert.hub.remote_code import add_pipeline_code

    add_pipeline_code(folder)  # as the training scripts' final card does: the pipeline as remote code
    (folder / "all_results.json").write_text(json.dumps(RESULTS), encoding="utf-8")
    # Never uploaded:
    (folder / "optimizer.bin").write_bytes(b"\0" * 16)
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"\0" * 16)
    (folder / "logs").mkdir()
    (folder / "logs" / "events.out.tfevents.1").write_bytes(b"log")
    (folder / "train.log").write_text("step 1\n")
    with torch.no_grad():
        logits = model(**tiny_inputs()).logits
    torch.save(logits, tmp_path / "expected_logits.pt")
    return folder


class HubRecorder:
    """Stands in for the three HfApi calls and records their arguments."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls: list[tuple[str, tuple, dict]] = []
        recorder = self

        def create_repo(api, repo_id, **kwargs):
            recorder.calls.append(("create_repo", (repo_id,), kwargs))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(api, repo_id, **kwargs):
            recorder.calls.append(("create_branch", (repo_id,), kwargs))

        def create_commit(api, repo_id, operations, **kwargs):
            contents = {}
            for op in operations:
                source = op.path_or_fileobj
                contents[op.path_in_repo] = Path(source).read_bytes() if isinstance(source, str) else bytes(source)
            recorder.calls.append(("create_commit", (repo_id,), {**kwargs, "contents": contents}))
            return "commit-info"

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)

    def named(self, name: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for call, args, kwargs in self.calls if call == name]


def test_push_uploads_exactly_the_model_files_in_one_commit(model_folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    hub = HubRecorder(monkeypatch)
    result = push_folder_to_hub(
        model_folder, "my-org/tiny-midibert", private=True, revision="v0.1", commit_message="first upload"
    )
    assert result == "commit-info"
    (repo_args, repo_kwargs), = hub.named("create_repo")
    assert repo_args == ("my-org/tiny-midibert",)
    assert repo_kwargs["private"] is True and repo_kwargs["exist_ok"] is True
    (branch_args, branch_kwargs), = hub.named("create_branch")
    assert branch_args == ("my-org/tiny-midibert",) and branch_kwargs["branch"] == "v0.1"
    (commit_args, commit_kwargs), = hub.named("create_commit")
    assert commit_args == ("my-org/tiny-midibert",)
    assert commit_kwargs["revision"] == "v0.1"
    assert commit_kwargs["commit_message"] == "first upload"
    assert commit_kwargs["token"] == "hf_test_token"
    contents = commit_kwargs["contents"]
    assert set(contents) == EXPECTED_UPLOAD
    for name, data in contents.items():
        assert data == (model_folder / name).read_bytes(), name
    config = json.loads(contents["config.json"])
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_adv_midibert.")


def test_push_without_revision_commits_to_main(model_folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    hub = HubRecorder(monkeypatch)
    push_folder_to_hub(model_folder, "tiny-midibert")
    assert hub.named("create_branch") == []
    (_, commit_kwargs), = hub.named("create_commit")
    assert commit_kwargs["revision"] is None
    assert hub.named("create_repo")[0][1]["private"] is False


def test_model_card_metadata_holds_the_run_metrics(model_folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    HubRecorder(monkeypatch)
    push_folder_to_hub(
        model_folder,
        "my-org/tiny-midibert",
        base_model="my-org/adv-midibert-base",
        training_command="python examples/finetune.py --task composer",
        hyperparameters={"learning_rate": 2e-5, "num_train_epochs": 3},
    )
    card_path = model_folder / "README.md"
    metadata = huggingface_hub.metadata_load(card_path)
    assert metadata["library_name"] == "transformers"
    assert metadata["license"] == "mit"
    assert {"symbolic-music", "midi"} <= set(metadata["tags"])
    assert metadata["base_model"] == "my-org/adv-midibert-base"
    card = huggingface_hub.ModelCard.load(card_path)
    found = {(r.dataset_split, r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert found[("test", "accuracy", "Accuracy")] == pytest.approx(0.875)
    assert found[("test", "f1", "F1 (macro)")] == pytest.approx(0.8125)
    assert found[("validation", "accuracy", "Accuracy")] == pytest.approx(0.9)
    assert all(r.dataset_name == "Pianist8" for r in card.data.eval_results)
    assert not any(r.metric_type == "loss" for r in card.data.eval_results)
    text = card.text
    assert 'AutoModelForSequenceClassification.from_pretrained("my-org/tiny-midibert", trust_remote_code=True)' in text
    assert "pip install adversarial-midibert" in text and 'pipeline("midi-classification"' in text
    assert 'AutoTokenizer.from_pretrained("my-org/tiny-midibert", trust_remote_code=True)' in text
    assert "2407.08306" in text and "Let Network Decide What to Learn" in text
    assert "python examples/finetune.py --task composer" in text
    assert "87.50" in text and "97.92" in text  # our test accuracy beside the paper's


def test_a_card_rewritten_from_the_results_alone_keeps_the_command_and_reads_per_piece_figures_as_percent(
        model_folder):
    results = {"task": "emotion", "test_accuracy": 0.6239, "test_piece_accuracy": 0.6262, "test_piece_f1_macro": 0.6282,
               "test_num_pieces": 107, "eval_num_segments": 114, "command": "python examples/finetune.py --seed 100",
               "split_source": "EMOPIA/split/*_clip.csv (song-level)",
               "train_log": [{"step": 10, "train_loss": 1.1974}]}
    (model_folder / "all_results.json").write_text(json.dumps(results), encoding="utf-8")
    assert cli_main(["card", str(model_folder), "--repo_id", "org/emotion"]) == 0
    card = huggingface_hub.ModelCard.load(model_folder / "README.md")
    found = {r.metric_name: (r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert found == {"Accuracy": ("accuracy", 0.6239), "Accuracy (per piece)": ("accuracy", 0.6262),
                     "F1 (macro, per piece)": ("f1", 0.6282)}  # the counts are not metrics
    assert "| EMOPIA | test | Accuracy (per piece) | 62.62 |  |" in card.text  # the paper's figure is per segment
    assert "| EMOPIA | test | Accuracy | 62.39 | 79.46 |" in card.text
    assert "python examples/finetune.py --seed 100" in card.text.split("## Training details")[1]
    assert "train_log" not in card.text and "1.1974" not in card.text  # the log stays in the folder's results
    assert "| data split | EMOPIA/split/*_clip.csv (song-level) |" in card.text


def test_dry_run_folder_loads_with_only_torch_and_transformers(model_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    dry = tmp_path / "dry"
    assert cli_main(["push", str(model_folder), "--repo_id", "org/tiny", "--dry_run", str(dry)]) == 0
    assert {p.name for p in dry.iterdir()} == EXPECTED_UPLOAD
    for name in EXPECTED_UPLOAD - {"README.md"}:
        assert (dry / name).read_bytes() == (model_folder / name).read_bytes()

    torch.save(tiny_inputs(), tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("adversarial_midibert", "miditok"):
                    raise ImportError(f"blocked import of {{name}}")
                return None
        sys.meta_path.insert(0, Blocker())
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
        folder = {str(dry)!r}
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        assert type(config).__name__ == "AdvMidiBertConfig", type(config)
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            logits = model(**inputs).logits
        expected = torch.load({str(tmp_path / "expected_logits.pt")!r})
        torch.testing.assert_close(logits, expected)
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        assert type(base).__name__ == "AdvMidiBertModel"
        assert "adversarial_midibert" not in sys.modules and "miditok" not in sys.modules
        print("REMOTE-CODE-OK")
        """
    )
    empty_cwd = tmp_path / "cwd"
    empty_cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    completed = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=empty_cwd, env=env, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "REMOTE-CODE-OK" in completed.stdout


def test_dry_run_needs_no_token_and_makes_no_call(model_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    hub = HubRecorder(monkeypatch)
    out = push_folder_to_hub(model_folder, "org/tiny", dry_run_dir=tmp_path / "dry")
    assert hub.calls == []
    assert sorted(p.name for p in Path(out).iterdir()) == sorted(EXPECTED_UPLOAD)
    with pytest.raises(HubPublishError, match="not empty"):
        push_folder_to_hub(model_folder, "org/tiny", dry_run_dir=tmp_path / "dry")


def test_a_card_written_for_another_repository_stops_the_push_until_rewritten(model_folder, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    recorder = HubRecorder(monkeypatch)
    hyperparameters = {"learning_rate": 0.0005, "mask_ratio": 0.3}
    results = {**RESULTS, "command": "python examples/finetune.py --seed 1", "hyperparameters": hyperparameters}
    (model_folder / "all_results.json").write_text(json.dumps(results))
    hub.write_model_card(model_folder)  # as a training run without --hub_model_id writes it: it loads "run"
    assert 'from_pretrained("run"' in (model_folder / "README.md").read_text()
    assert cli_main(["push", str(model_folder), "--repo_id", "org/tiny", "--dry_run", str(tmp_path / "dry")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"adv-midibert card {model_folder} --repo_id org/tiny" in error
    assert not (tmp_path / "dry").exists() and recorder.calls == []
    assert cli_main(["card", str(model_folder), "--repo_id", "org/tiny"]) == 0  # the rewrite keeps the run's facts
    card = (model_folder / "README.md").read_text()
    assert "| learning_rate | 0.0005 |" in card and "python examples/finetune.py --seed 1" in card
    push_folder_to_hub(model_folder, "org/tiny")
    assert len(recorder.named("create_commit")) == 1


def test_missing_token_fails_before_any_upload(model_folder, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    hub = HubRecorder(monkeypatch)
    with pytest.raises(HubPublishError, match="HF_TOKEN"):
        push_folder_to_hub(model_folder, "org/tiny")
    assert hub.calls == []


@pytest.mark.parametrize("repo_id", ["org/name/extra", "org/na--me", "org/name.git", "bad id", ""])
def test_bad_repo_id_fails_before_any_upload(model_folder, monkeypatch, repo_id):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    hub = HubRecorder(monkeypatch)
    with pytest.raises(HubPublishError, match="repo_id"):
        push_folder_to_hub(model_folder, repo_id)
    assert hub.calls == []


@pytest.mark.parametrize(
    "missing", ["config.json", "model.safetensors", "modeling_adv_midibert.py", "configuration_adv_midibert.py",
                "octuple_tokenizer.json", "tokenizer_config.json", "tokenization_octuple.py", "octuple_encoding.py"]
)
def test_missing_required_file_is_named(model_folder, monkeypatch, missing):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    hub = HubRecorder(monkeypatch)
    (model_folder / missing).unlink()
    with pytest.raises(HubPublishError, match=missing.replace(".", r"\.")):
        push_folder_to_hub(model_folder, "org/tiny")
    assert hub.calls == []


def test_folder_without_auto_map_says_how_to_fix(model_folder):
    config = json.loads((model_folder / "config.json").read_text())
    del config["auto_map"]
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(HubPublishError, match="save_pretrained"):
        hub.collect_upload_files(model_folder)


def test_cli_reports_errors_in_one_line_without_traceback(model_folder, tmp_path, capsys):
    for folder, repo_id, named in ((model_folder, "org/a--b", "org/a--b"), (tmp_path / "nowhere", "org/a", "nowhere")):
        assert cli_main(["push", str(folder), "--repo_id", repo_id, "--dry_run", str(tmp_path / "d")]) == 2
        error = capsys.readouterr().err.strip()
        assert named in error and "\n" not in error and "Traceback" not in error


@pytest.mark.parametrize("where", ["auto_map", "tokenizer_auto_map", "shard", "relative_import"])
def test_files_outside_the_folder_are_refused(model_folder, tmp_path, where):
    """Nothing named by the folder's files may pull in a file from outside it."""
    (tmp_path / "evil.py").write_text("raise SystemExit('outside')\n")
    if where == "auto_map":
        config = json.loads((model_folder / "config.json").read_text())
        config["auto_map"]["AutoModel"] = "../evil.AdvMidiBertModel"
        (model_folder / "config.json").write_text(json.dumps(config))
    elif where == "tokenizer_auto_map":
        config = json.loads((model_folder / "tokenizer_config.json").read_text())
        config["auto_map"]["AutoTokenizer"] = ["../evil.OctupleTokenizer", None]
        (model_folder / "tokenizer_config.json").write_text(json.dumps(config))
    elif where == "shard":
        (model_folder / "model.safetensors").unlink()
        (model_folder / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"w": "../evil.py"}}))
    else:
        (model_folder / "constants.py").unlink()
        (model_folder / "constants.py").symlink_to(tmp_path / "evil.py")
    with pytest.raises(HubPublishError, match="evil|outside"):
        hub.collect_upload_files(model_folder, require_card=False)


def test_cards_of_every_task_carry_hub_metadata(model_folder):
    """A user-defined task (here music21-composer, the default corpus) gets datasets and a model-index too."""
    results = {"task": "music21-composer", "test_accuracy": 0.5, "eval_accuracy": 0.4, "test_f1_macro": 0.3}
    (model_folder / "all_results.json").write_text(json.dumps(results))
    hub.write_model_card(model_folder, repo_id="org/m21", datasets=["music21-composer-L64"])
    metadata = huggingface_hub.metadata_load(model_folder / "README.md")
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "other"
    assert metadata["datasets"] == ["music21-composer-L64"] and "midi-classification" in metadata["tags"]
    (entry,) = metadata["model-index"]
    assert {r["task"]["type"] for r in entry["results"]} == {"midi-classification"}
    card = huggingface_hub.ModelCard.load(model_folder / "README.md")
    assert {(r.dataset_split, r.metric_type) for r in card.data.eval_results} == {
        ("test", "accuracy"), ("validation", "accuracy"), ("test", "f1")}
    assert 'pipeline("midi-classification", model="org/m21")' in card.text
    assert 'AutoTokenizer.from_pretrained("org/m21", trust_remote_code=True)' in card.text
    assert "miditok" in card.text and "symusic" in card.text
    (model_folder / "all_results.json").write_text(json.dumps({"task": "my-task", "test_accuracy": 0.7}))
    hub.write_model_card(model_folder, repo_id="org/mine", datasets=["org/my-midi-dataset"])
    (entry,) = huggingface_hub.metadata_load(model_folder / "README.md")["model-index"]
    dataset = entry["results"][0]["dataset"]
    assert (dataset["name"], dataset["type"], dataset["split"]) == ("org/my-midi-dataset",) * 2 + ("test",)


@pytest.mark.parametrize("name", ["octuple_tokenizer.json", "config.json", "README.md"])
def test_a_fixed_name_symlinked_out_of_the_folder_is_refused(model_folder, tmp_path, monkeypatch, name):
    """Issue 11 failure 5: publishing copied files from outside the model folder; the allow-listed names too must
    resolve inside it (a symlink to elsewhere is refused), for a dry run and an upload, before anything is written."""
    hub.write_model_card(model_folder, repo_id="org/tiny")
    secret = tmp_path / "secret.txt"
    secret.write_text((model_folder / name).read_text())
    (model_folder / name).unlink()
    (model_folder / name).symlink_to(secret)
    recorder = HubRecorder(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    for kwargs in ({"dry_run_dir": tmp_path / "dry"}, {}):
        with pytest.raises(HubPublishError, match=rf"file '{re.escape(name)}' lies outside the model folder"):
            hub.push_folder_to_hub(model_folder, "org/tiny", **kwargs)
    assert not recorder.calls and not (tmp_path / "dry").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_top_level_hub_scripts_publish_and_write_the_card(model_folder, tmp_path, repo_root):
    """``hub/push_to_hub.py`` and ``hub/model_card.py`` are the ``push`` and ``card`` commands, run as files."""
    from script_env import script_env

    env = {**script_env(repo_root), "HF_TOKEN": ""}
    card = subprocess.run([sys.executable, str(repo_root / "hub" / "model_card.py"), str(model_folder),
                           "--repo_id", "org/tiny", "--training_command", "adv-midibert finetune --task composer"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert card.returncode == 0, card.stderr[-2000:]
    assert "adv-midibert finetune --task composer" in (model_folder / "README.md").read_text(encoding="utf-8")
    dry = tmp_path / "dry"
    push = subprocess.run([sys.executable, str(repo_root / "hub" / "push_to_hub.py"), str(model_folder),
                           "--repo_id", "org/tiny", "--dry_run", str(dry)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert push.returncode == 0, push.stderr[-2000:]
    assert {p.name for p in dry.iterdir()} == EXPECTED_UPLOAD
    convert = subprocess.run([sys.executable, str(repo_root / "hub" / "convert_original_checkpoint.py"), "--help"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert convert.returncode == 0 and convert.stdout.startswith("usage: python hub/convert_original_checkpoint.py")


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("shard", ["../run/model-00001.safetensors", "./model-00001.safetensors",
                                   "sub//model-00001.safetensors", "sub\\model-00001.safetensors"])
def test_a_shard_name_that_is_not_a_clean_path_is_refused(model_folder, tmp_path, monkeypatch, shard):
    """Issue 19 item 1: ``../run/model-00001.safetensors`` resolves inside the folder ``run`` but a dry run wrote
    it to ``B/run/...`` (outside its folder) and an upload died in huggingface_hub. Refused before any write."""
    weights = model_folder / "model.safetensors"
    (model_folder / "sub").mkdir()
    for name in ("model-00001.safetensors", "sub/model-00001.safetensors", "sub\\model-00001.safetensors"):
        (model_folder / name).write_bytes(weights.read_bytes())
    weights.unlink()
    (model_folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    recorder = HubRecorder(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    before = _tree(tmp_path)
    outside = tmp_path / "B"
    assert cli_main(["push", str(model_folder), "--repo_id", "org/x", "--dry_run", str(outside / "dry")]) == 2
    with pytest.raises(HubPublishError, match="not a clean relative path"):
        push_folder_to_hub(model_folder, "org/x")
    assert not recorder.calls and _tree(tmp_path) == before and not outside.exists()


def test_clean_shard_names_are_published_at_their_path(model_folder, tmp_path):
    """The check refuses only unclean names: an index naming ``shards/model-00001.safetensors`` is published there."""
    (model_folder / "shards").mkdir()
    (model_folder / "model.safetensors").rename(model_folder / "shards" / "model-00001.safetensors")
    (model_folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "shards/model-00001.safetensors"}}))
    files = hub.collect_upload_files(model_folder, require_card=False)
    assert files["shards/model-00001.safetensors"] == model_folder / "shards" / "model-00001.safetensors"


def test_a_dry_run_writes_only_into_its_folder(model_folder, tmp_path):
    """Issue 19 item 11: a dry run wrote README.md into the model folder; now the card goes into the dry-run copy."""
    before = _tree(model_folder)
    dry = tmp_path / "dry"
    assert cli_main(["push", str(model_folder), "--repo_id", "org/tiny", "--dry_run", str(dry)]) == 0
    assert _tree(model_folder) == before
    assert "org/tiny" in (dry / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run", "dry", "expected_logits.pt"])


def test_a_dry_run_holds_what_a_push_uploads_for_a_folder_without_card_or_pipeline_code(model_folder, tmp_path,
                                                                                         monkeypatch):
    """A folder with no card (e.g. written by ``convert``) gets the pipeline code and ``custom_pipelines`` with the
    card on a real push; the dry run must preview exactly those files and bytes, written into its own folder."""
    for name in ("pipelines.py", "pooling.py"):  # constants.py stays: the tokenizer's code needs it
        (model_folder / name).unlink()
    config = json.loads((model_folder / "config.json").read_text())
    config.pop("custom_pipelines")
    (model_folder / "config.json").write_text(json.dumps(config))
    before = _tree(model_folder)
    dry = push_folder_to_hub(model_folder, "org/tiny", dry_run_dir=tmp_path / "dry")
    assert _tree(model_folder) == before  # the dry run left the folder as it was
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    recorder = HubRecorder(monkeypatch)
    push_folder_to_hub(model_folder, "org/tiny")
    (_, commit_kwargs), = recorder.named("create_commit")
    uploaded = commit_kwargs["contents"]
    assert {"pipelines.py", "pooling.py"} <= set(uploaded)
    assert "custom_pipelines" in json.loads(uploaded["config.json"])
    assert _tree(dry) == uploaded


@pytest.mark.parametrize("case", ["weight_map_list", "weight_map_missing", "card_folder", "dry_run_symlink"])
def test_bad_folder_shapes_give_one_line_errors(model_folder, tmp_path, case, capsys):
    """Issue 19 item 12: these raised tracebacks (or left ``.dry.partial``); now exit 2 with a message naming the
    file, and nothing is left behind."""
    dry = tmp_path / "dry"
    if case.startswith("weight_map"):
        (model_folder / "model.safetensors").unlink()
        index = {"weight_map": ["model.safetensors"]} if case == "weight_map_list" else {"metadata": {}}
        (model_folder / "model.safetensors.index.json").write_text(json.dumps(index))
        expected = "weight_map"
    elif case == "card_folder":
        (model_folder / "README.md").mkdir()
        expected = "README.md is not a file"
    else:
        (tmp_path / "real").mkdir()
        dry.symlink_to(tmp_path / "real")
        expected = "symbolic link"
    assert cli_main(["push", str(model_folder), "--repo_id", "org/tiny", "--dry_run", str(dry)]) == 2
    error = capsys.readouterr().err.strip()
    assert expected in error and "\n" not in error and "Traceback" not in error
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
