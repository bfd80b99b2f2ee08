"""End-to-end tests of examples/pretrain.py on a handful of real POP909 files (tiny preset).

One uninterrupted run (12 steps, 2 epochs, a freezing pass after each epoch, checkpoints at steps 6 and 12) is shared
by the tests: resume from its step-6 checkpoint gives the same losses, two processes agree on the mask book, the
saved folder loads with and without the package.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from script_env import free_port, script_env

SCRIPT_ARGS = [
    "--preset", "tiny",
    "--max_train_steps", "12",
    "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "16",
    "--freeze_every", "1",
    "--checkpointing_steps", "6",
    "--logging_steps", "3",
    "--seed", "7",
]


def _run(cmd, repo_root: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo_root, env=script_env(repo_root), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-4000:]}"
    return proc


def _losses(folder: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _mask_book(checkpoint: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "training_state.safetensors"))["mask_book.frozen_bits"]


@pytest.fixture(scope="module")
def tiny_dataset(data_root, tmp_path_factory) -> Path:
    from adversarial_midibert.data import build_dataset, save
    from adversarial_midibert.tokenization_octuple import OctupleTokenizer

    files = [data_root / "POP909" / f"{i:03d}" / f"{i:03d}.mid" for i in range(1, 9)]
    files = [f for f in files if f.is_file()]
    if len(files) < 5:
        pytest.skip("POP909 files 001..008 not found")
    ds = build_dataset(files, task_type="pretrain", splits=(0.6, 0.2, 0.2), seed=0,
                       tokenizer=OctupleTokenizer(max_seq_len=128), task="pretrain")
    return save(ds, tmp_path_factory.mktemp("data") / "pop909-tiny")


@pytest.fixture(scope="module")
def full_run(tiny_dataset, repo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "full"
    _run([sys.executable, "examples/pretrain.py", "--dataset", str(tiny_dataset), "--output_dir", str(out),
          *SCRIPT_ARGS], repo_root)
    return out


@pytest.mark.slow
def test_run_outputs_hub_ready_folder(full_run):
    for name in ("config.json", "model.safetensors", "configuration_adv_midibert.py", "modeling_adv_midibert.py",
                 "octuple_tokenizer.json", "README.md", "all_results.json", "step_6", "step_12",
                 "tokenizer_config.json", "tokenization_octuple.py", "training_curves.png"):
        assert (full_run / name).exists(), name
    results = json.loads((full_run / "all_results.json").read_text())
    assert 0 <= results["eval_accuracy"] <= 1 and "eval_accuracy_pitch" in results
    assert results["frozen_fraction"] > 0
    card = (full_run / "README.md").read_text()  # its facts are in all_results.json too: a rewrite keeps them
    assert results["hyperparameters"]["masking"] == results["masking"] and "| masking | adversarial |" in card
    assert "examples/pretrain.py --dataset" in results["command"] and results["command"] in card
    assert results["freezing_passes"] == len(_rows(full_run / "freezing_log.jsonl")) >= 1
    assert len(results["masked_share_by_epoch"]) == 2 and all(0.1 < s < 0.2 for s in results["masked_share_by_epoch"])
    losses = _losses(full_run)
    assert sorted(losses) == list(range(1, 13))
    # the loss falls within the first epoch (same attribute weights)
    assert losses[max(s for s in losses if s <= 5)] < losses[1]
    book = _mask_book(full_run / "step_12")
    assert book.any()  # one bit per position, 1 = frozen


@pytest.mark.slow
def test_no_freezing_pass_after_the_last_step(tiny_dataset, repo_root, tmp_path):
    """Three epochs of two steps, a pass due after each: the one after the last step would change nothing."""
    out = tmp_path / "run"
    _run([sys.executable, "examples/pretrain.py", "--dataset", str(tiny_dataset), "--output_dir", str(out), "--preset",
          "tiny", "--num_train_epochs", "3", "--max_train_samples", "16", "--per_device_train_batch_size", "8",
          "--freeze_every", "1", "--seed", "3"], repo_root)
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_steps"] == 6
    assert [(row["step"], row["epoch"]) for row in _rows(out / "freezing_log.jsonl")] == [(2, 0), (4, 1)]
    assert results["freezing_passes"] == 2 and len(results["masked_share_by_epoch"]) == 3


@pytest.mark.slow
def test_resume_gives_same_losses(full_run, tiny_dataset, repo_root, tmp_path):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(full_run / "step_6", out / "step_6")
    _run([sys.executable, "examples/pretrain.py", "--dataset", str(tiny_dataset), "--output_dir", str(out),
          *SCRIPT_ARGS, "--resume_from_checkpoint", "latest"], repo_root)
    full, resumed = _losses(full_run), _losses(out)
    assert sorted(resumed) == list(range(7, 13))
    for step in resumed:
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    # mask book restored and then evolved identically (a freezing pass ran after the resume)
    a, b = _mask_book(full_run / "step_12"), _mask_book(out / "step_12")
    assert torch.equal(a, b)
    # the reported runtime adds the first stretch's, up to its checkpoint
    first = json.loads((full_run / "step_6" / "training_state.json").read_text())["progress"]["runtime_before"]
    assert json.loads((out / "all_results.json").read_text())["train_runtime_s"] > first


@pytest.mark.slow
def test_two_processes_share_one_mask_book(tiny_dataset, repo_root, tmp_path):
    out = tmp_path / "ddp"
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
          "tests/mask_book_probe.py", "examples/pretrain.py", "--cpu", "--dataset", str(tiny_dataset),
          "--output_dir", str(out), "--preset", "tiny", "--max_train_steps", "4", "--per_device_train_batch_size", "4",
          "--max_train_samples", "24", "--freeze_every", "1"], repo_root, timeout=300)
    hashes = [(out / f"mask_book_rank{i}.txt").read_text().strip() for i in range(2)]
    assert hashes[0] == hashes[1]
    assert len(list(out.glob("*.safetensors"))) == 1
    assert json.loads((out / "all_results.json").read_text())["frozen_fraction"] > 0


@pytest.mark.slow
def test_saved_folder_loads_with_auto_class_and_remote_code(full_run, tmp_path):
    from transformers import AutoModelForMaskedLM

    import adversarial_midibert  # noqa: F401  (registers the Auto classes)

    model = AutoModelForMaskedLM.from_pretrained(full_run)
    assert type(model).__name__ == "AdvMidiBertForMaskedLM"
    ids = torch.tensor([[[1] * 8, [4] * 8, [2] * 8]])
    with torch.no_grad():
        expected = model(ids, compute_masker=False).logits[3]

    code = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("adversarial_midibert", "miditok", "symusic"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Blocker())
        import torch
        from transformers import AutoModelForMaskedLM
        m = AutoModelForMaskedLM.from_pretrained({str(full_run)!r}, trust_remote_code=True)
        ids = torch.tensor([[[1] * 8, [4] * 8, [2] * 8]])
        with torch.no_grad():
            print(repr(m(ids, compute_masker=False).logits[3].flatten().tolist()))
        """
    )
    env = script_env(Path(tmp_path))
    env["PYTHONPATH"] = ""
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.tensor(eval(proc.stdout.strip().splitlines()[-1]))
    assert torch.allclose(got, expected.flatten(), atol=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--max_train_steps", "-5"], "--max_train_steps must be >= 1, got -5"),
    (["--max_train_steps", "0"], "--max_train_steps must be >= 1, got 0"),
    (["--num_train_epochs", "0"], "--num_train_epochs must be >= 1"),
    (["--max_train_samples", "0"], "--max_train_samples must be >= 1"),
    (["--logging_steps", "0"], "--logging_steps must be >= 1"),
    (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be >= 1"),
    (["--num_warmup_steps", "-1"], "--num_warmup_steps must be >= 0"),
    (["--learning_rate", "0"], "--learning_rate must be > 0"),
])
def test_counts_are_checked(flags, message, capsys):
    """Issue 11 failure 6: --max_train_steps -5 "saved a pre-trained model (0 steps)"."""
    from adversarial_midibert.training import pretrain

    with pytest.raises(SystemExit):
        pretrain.parse_args(flags)
    assert message in capsys.readouterr().err


def test_detached_masker_learns_ten_times_faster_by_default():
    """The detached masker barely learns at the shared learning rate (docs/results.md, "Representation health")."""
    from adversarial_midibert.training import pretrain

    assert pretrain.parse_args(["--learning_rate", "1e-3"]).masker_learning_rate == pytest.approx(1e-3)
    assert pretrain.parse_args(["--learning_rate", "1e-3",
                                "--detach_masker"]).masker_learning_rate == pytest.approx(1e-2)
    assert pretrain.parse_args(["--masker_grad_scale", "0", "--masker_learning_rate",
                                "3e-4"]).masker_learning_rate == 3e-4


@pytest.mark.slow
def test_model_card_records_the_command_as_typed(tiny_dataset, repo_root, tmp_path):
    """Under ``adv-midibert pretrain`` the card names that command and its flags, not ``pretrain.py pretrain``."""
    out = tmp_path / "run"
    flags = ["--dataset", str(tiny_dataset), "--output_dir", str(out), "--preset", "tiny", "--max_train_steps", "2",
             "--per_device_train_batch_size", "8", "--freeze_every", "0", "--seed", "3"]
    code = ("import sys\n"
            "from adversarial_midibert.training import pretrain\n"
            "pretrain.main(sys.argv[2:], prog='adv-midibert pretrain')\n")
    # sys.argv[1] stands for the CLI's command word, which must not leak into the recorded command.
    _run([sys.executable, "-c", code, "pretrain", *flags], repo_root)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "adv-midibert pretrain " + " ".join(flags) in card
    assert "pretrain.py pretrain" not in card


@pytest.mark.parametrize("flags, message", [
    (["--freeze_score_threshold", "1.5"], "--freeze_score_threshold must be in [0, 1], got 1.5"),
    (["--freezing_rule", "evidence", "--freeze_fraction", "0.2"], "--freeze_fraction belongs to --freezing_rule"),
    (["--masker_scores_from", "cache", "--masking", "random"], "--masker_scores_from cache needs a masker method"),
    (["--masker_scores_from", "cache", "--streaming", "--dataset", "d"], "not with --streaming"),
    (["--freezing_rule", "latest"], "invalid choice: 'latest'"),
])
def test_mechanism_options_are_checked(flags, message, capsys):
    from adversarial_midibert.training import pretrain

    with pytest.raises(SystemExit):
        pretrain.parse_args(flags)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_loop_feeds_its_attribute_weights_to_the_loss_and_runs_the_mechanism_options(tiny_dataset, tmp_path,
                                                                                      monkeypatch):
    """Through the public entry, as the training loop calls the step: after the first epoch, every training loss
    receives the run's dynamic attribute weights (not uniform ones); the cached scores, the evidence rule and the
    share budget run end to end, and the cache is saved with the run state."""
    from safetensors.torch import load_file

    from adversarial_midibert import cli
    from adversarial_midibert.constants import ATTRIBUTE_NAMES
    from adversarial_midibert.modeling_adv_midibert import AdvMidiBertForMaskedLM
    from adversarial_midibert.pretraining import AttributeWeights

    events = []
    loss, set_accuracies = AdvMidiBertForMaskedLM.masked_lm_loss, AttributeWeights.set_accuracies

    def recording_loss(self, logits, labels, attribute_weights=None):
        weights = torch.full((8,), 1 / 8) if attribute_weights is None else torch.as_tensor(attribute_weights)
        events.append(("loss", self.training, weights.detach().float().cpu().clone()))
        return loss(self, logits, labels, attribute_weights)

    def recording_set(self, accuracies):
        out = set_accuracies(self, accuracies)
        events.append(("set", torch.as_tensor(accuracies, dtype=torch.float64), self.weights.detach().float().cpu()))
        return out

    monkeypatch.setattr(AdvMidiBertForMaskedLM, "masked_lm_loss", recording_loss)
    monkeypatch.setattr(AttributeWeights, "set_accuracies", recording_set)
    out = tmp_path / "run"
    cli.main(["pretrain", "--cpu", "--dataset", str(tiny_dataset), "--output_dir", str(out), "--preset", "tiny",
              "--num_train_epochs", "2", "--max_train_samples", "16", "--max_eval_samples", "8",
              "--per_device_train_batch_size", "8", "--freeze_every", "1", "--checkpointing_steps", "epoch",
              "--masker_scores_from", "cache", "--freezing_rule", "evidence", "--freeze_score_threshold", "1",
              "--mask_budget", "share", "--seed", "5"])

    current, checked, source = torch.full((8,), 1 / 8), 0, None
    for kind, detail, weights in events:
        if kind == "set":
            current, source = weights, detail
        elif detail:  # a loss of a training step
            torch.testing.assert_close(weights, current)
            checked += not torch.allclose(weights, torch.full((8,), 1 / 8))
            last_source = source
    assert checked >= 2  # the second epoch's two steps (recoverer and reconstruction terms) at least
    # ... set from the first epoch's validation accuracies (--attribute_weights_from validation, the default)
    first_eval = json.loads((out / "eval_log.jsonl").read_text().splitlines()[0])
    expected = [first_eval[f"eval_accuracy_{name}"] for name in ATTRIBUTE_NAMES]
    torch.testing.assert_close(last_source, torch.tensor(expected, dtype=torch.float64))
    results = json.loads((out / "all_results.json").read_text())
    assert results["frozen_fraction"] == 0  # no score reaches 1 (the reference rule would have frozen 10-30 %)
    assert len(results["masked_share_by_epoch"]) == 2
    assert all(0.12 < share < 0.2 for share in results["masked_share_by_epoch"])
    codes = load_file(str(out / "epoch_1" / "training_state.safetensors"))["masker_score_cache.codes"]
    assert (codes != 255).any() and codes.dtype == torch.uint8


@pytest.mark.slow
def test_two_processes_save_every_segments_cached_scores(tiny_dataset, repo_root, tmp_path):
    """Each process writes the scores of its own segments; the checkpoint (written by the main process) holds all."""
    from safetensors.torch import load_file

    out = tmp_path / "ddp-cache"
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
          "examples/pretrain.py", "--cpu", "--dataset", str(tiny_dataset), "--output_dir", str(out), "--preset", "tiny",
          "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--max_train_samples", "24",
          "--max_eval_samples", "4", "--freeze_every", "0", "--checkpointing_steps", "3",
          "--masker_scores_from", "cache"], repo_root, timeout=300)
    # step 3 is the epoch's last step of each process, saved before the end of the epoch
    codes = load_file(str(out / "step_3" / "training_state.safetensors"))["masker_score_cache.codes"]
    assert int((codes != 255).any(dim=1).sum()) == 24  # every training segment, whichever process visited it


def test_a_fresh_start_never_replaces_a_run_in_its_folder(tiny_dataset, tmp_path, capsys):
    """Without --resume_from_checkpoint a run in a folder that holds a complete checkpoint is refused before it
    writes anything (starting anew there would cut the train log to nothing and replace the checkpoints)."""
    from adversarial_midibert import cli

    out = tmp_path / "run"
    (out / "step_4").mkdir(parents=True)
    (out / "step_4" / "checkpoint_complete.json").write_text(json.dumps({"files": {}, "step": 4}))
    (out / "train_log.jsonl").write_text('{"step": 1, "old": true}\n')
    flags = ["pretrain", "--cpu", "--dataset", str(tiny_dataset), "--output_dir", str(out), "--preset", "tiny",
             "--max_train_steps", "1", "--per_device_train_batch_size", "2", "--max_train_samples", "4"]
    assert cli.main(flags) == 2  # said in one line by the command
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith(f"adv-midibert pretrain: error: --output_dir {out} holds a run (step_4)")
    assert "--resume_from_checkpoint latest" in error
    assert (out / "train_log.jsonl").read_text() == '{"step": 1, "old": true}\n'
    cli.main([*flags, "--overwrite_output_dir"])  # asked for: starts anew
    # a finished run without checkpoints: 'latest' finds none and would start anew, so it is refused too
    shutil.rmtree(out / "step_4")
    assert cli.main([*flags, "--resume_from_checkpoint", "latest"]) == 2
    error = capsys.readouterr().err  # no checkpoint to continue from: not offered
    assert "holds a run (all_results.json): start anew with --overwrite_output_dir" in error
    assert "old" not in json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert (out / "all_results.json").is_file()
