"""research/run_ablation.py: the whole runner on the smoke budget (2 pre-training seeds, real data), resuming,
the README table from a results file, commands and flags."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def ablation():
    import research.run_ablation

    return research.run_ablation


@pytest.mark.slow
def test_smoke_budget_end_to_end_with_two_pretraining_seeds(ablation, data_root, tmp_path):
    work_dir, results_file, readme = tmp_path / "work", tmp_path / "results" / "ablation.json", tmp_path / "README.md"
    readme.write_text(f"# title\n\n{ablation.README_START}\nold table\n{ablation.README_END}\n\nrest\n")
    argv = ["--data_root", str(data_root), "--work_dir", str(work_dir), "--budget", "smoke", "--tasks", "composer",
            "--variants", "scratch,adversarial", "--pretrain_seeds", "0,1", "--pretrain_steps", "4",
            "--max_files", "8", "--pretrain_max_files", "6", "--bootstrap_resamples", "500", "--in_process",
            "--results_file", str(results_file), "--readme", str(readme)]
    results = ablation.main(argv)
    assert results["failures"] == []
    on_disk = json.loads(results_file.read_text())
    assert on_disk["summary"] == results["summary"] and on_disk["budget"]["pretrain_seeds"] == [0, 1]
    for variant in ("scratch", "adversarial"):
        cell = on_disk["runs"]["composer"][variant]
        assert cell["missing"] == [] and [r["finetune_seed"] for r in cell["runs"]] == [42, 43]
        for run in cell["runs"]:
            assert 0.0 <= run["test_piece_accuracy"] <= 1.0 and len(run["test_piece_accuracy_ci95"]) == 2
            assert run["command"].startswith("python examples/finetune.py")
        assert on_disk["summary"]["composer"][variant]["test_piece_accuracy"]["n"] == 2
    pretrained = on_disk["runs"]["composer"]["adversarial"]["runs"]
    assert [r["pretrain_seed"] for r in pretrained] == [0, 1]
    for seed, run in enumerate(pretrained):
        assert len(run["pretrain_commands"]) == 1 and f"--seed {seed} " in run["pretrain_commands"][0]
        assert f"--seed {42 + seed} " in run["finetune_commands"][0] and run["pretrain_results"]["task"] == "pretrain"
    for seed_run in pretrained:  # commands as typed from the repository root, not this machine's paths
        assert seed_run["pretrain_commands"][0].startswith("python examples/pretrain.py ")
    health = on_disk["pretraining"]["adversarial"]
    assert health["eval_token_cosine"]["n"] == 2 and health["eval_masker_spearman"]["n"] == 2
    assert on_disk["settings"]["pretrain_steps"] == [4]
    assert (work_dir / "pretrain" / "adversarial" / "seed1" / "model.safetensors").is_file()
    assert not list((work_dir / "pretrain" / "adversarial" / "seed1").glob("step_*"))  # dropped once finished
    differences = {(d["comparison"], d["level"]): d for d in on_disk["differences"]}
    assert set(differences) == {("adversarial - scratch", "piece"), ("adversarial - scratch", "segment")}
    for d in differences.values():
        assert d["low"] <= d["estimate"] <= d["high"] and d["n_seeds_a"] == d["n_seeds_b"] == 2
        assert isinstance(d["excludes_zero"], bool) and "two-level" in d["method"]
    floors = on_disk["floors"]["composer"]
    assert floors["metric"] == "test_piece_accuracy" and floors["floors"]["random forest, per piece"] == 75.7
    assert set(floors["variants"]["adversarial"]["clears"]) == {"majority class", "random forest, per piece"}
    text = readme.read_text()
    assert "old table" not in text and text.endswith("\n\nrest\n") and "| composer | test, per piece |" in text
    assert "adversarial - scratch" in text

    # Resumable: a second invocation runs nothing and gives the same figures.
    again = ablation.main(argv)
    assert again["commands_this_invocation"] == {} and again["summary"] == results["summary"]


def _synthetic_results(ablation):
    def stats(mean, std, n=3):
        return {"n": n, "mean": mean, "std": std, "min": mean - std, "max": mean + std}

    keys = ("test_piece_accuracy", "test_accuracy", "test_piece_f1_macro", "test_f1_macro", "eval_piece_accuracy",
            "eval_accuracy")
    return {
        "results_file": "results/ablation-cpu.json",
        "budget": {"budget": "small", "preset": "small", "max_seq_len": 256, "pretrain_steps": 2000,
                   "pretrain_seeds": [0, 1, 2], "finetune_seed_base": 42, "finetune_epochs": 5,
                   "learning_rate": 5e-4, "variants": ["scratch", "random", "adversarial"]},
        "summary": {
            "composer": {v: {k: stats(m, 0.05) for k in keys} for v, m in
                         (("scratch", 0.40), ("random", 0.55), ("adversarial", 0.6))},
            "melody": {v: {k: stats(m, 0.01) for k in keys} for v, m in (("scratch", 0.80), ("random", 0.85))},
        },
        "floors": {"composer": {"metric": "test_piece_accuracy"}, "melody": {"metric": "test_accuracy"}},
        "differences": [
            {"task": "composer", "comparison": "adversarial - random", "level": "piece", "estimate": 0.05,
             "low": -0.04, "high": 0.15, "excludes_zero": False},
            {"task": "melody", "comparison": "random - scratch", "level": "note", "estimate": 0.05,
             "low": 0.03, "high": 0.07, "excludes_zero": True},
            {"task": "melody", "comparison": "adversarial - scratch", "level": "note",
             "error": "run 0 was scored on other pieces"},
        ],
        "runs": {"composer": {"adversarial": {"runs": [], "missing": []}},
                 "melody": {"adversarial": {"runs": [], "missing": [0, 1, 2]}}},
        "failures": ["finetune-melody-adversarial-seed0 (exit 1, see logs)"],
        "settings": {"pretrain_steps": [300], "finetune_steps": {"composer": [400], "melody": [300]}},
        "pretraining": {"random": {"eval_loss": stats(1.5, 0.04), "eval_accuracy": stats(0.6, 0.01),
                                   "eval_token_cosine": stats(0.51, 0.01), "eval_effective_rank": stats(79.0, 0.3),
                                   "eval_masker_spearman": {"n": 0, "mean": None, "std": None}},
                        "adversarial": {"eval_loss": stats(1.73, 0.06), "eval_accuracy": stats(0.533, 0.022),
                                        "eval_token_cosine": stats(0.516, 0.047),
                                        "eval_effective_rank": stats(77.6, 2.0),
                                        "eval_masker_spearman": stats(0.38, 0.03)}},
    }


def test_readme_table_is_generated_from_a_results_file(ablation, tmp_path):
    results_file = tmp_path / "ablation-cpu.json"
    results_file.write_text(json.dumps(_synthetic_results(ablation)))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ablation.README_START}\nstale\n{ablation.README_END}\noutro\n")
    ablation.main(["--stages", "report", "--results_file", str(results_file), "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n" + ablation.README_START + "\n")
    assert text.endswith(ablation.README_END + "\noutro\n")
    assert "stale" not in text
    assert "| composer | test, per piece | 40.0 ± 5.0 (n=3) | 55.0 ± 5.0 (n=3) | 60.0 ± 5.0 (n=3) | 97.92 |" in text
    assert "| melody | test, per note | 80.0 ± 1.0 (n=3) | 85.0 ± 1.0 (n=3) | — | 92.68 |" in text
    assert "|  | validation, per note |" in text and "per segment" not in text.split("| melody |")[1].split("\n")[0]
    assert "| composer | adversarial - random | piece | +5.0 | [-4.0, +15.0] | no |" in text
    assert "| melody | random - scratch | note | +5.0 | [+3.0, +7.0] | yes |" in text
    assert "other pieces" in text and "Failed runs: finetune-melody-adversarial-seed0" in text
    assert "Missing runs: melody/adversarial: seeds [0, 1, 2]" in text
    # The header says what the runs did (steps from their results), the pre-training table every variant's yardstick.
    assert "pre-training: 300 steps" in text and "steps: composer 400, melody 300" in text
    assert "| random | 1.500 ± 0.040 | 60.0 ± 1.0 | 0.510 ± 0.010 | 79.0 ± 0.3 | — | 3 |" in text
    assert "| adversarial | 1.730 ± 0.060 | 53.3 ± 2.2 | 0.516 ± 0.047 | 77.6 ± 2.0 | 0.38 ± 0.03 | 3 |" in text
    # Markers missing: a clear error, the file untouched.
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    with pytest.raises(ValueError, match="PLAIN.md: no <!-- ablation-cpu:start -->"):
        ablation.update_readme(plain, "table")
    assert plain.read_text() == "no markers\n"


def test_dry_run_commands_seeds_and_per_variant_flags(ablation, data_root, tmp_path, capsys):
    ablation.main(["--data_root", str(data_root), "--work_dir", str(tmp_path), "--budget", "smoke",
                   "--tasks", "velocity", "--variants", "scratch,adversarial-detached,adv-rw1",
                   "--variant_args", "adv-rw1=--masking adversarial --reconstruction_weight 1",
                   "--variant_args", "adversarial-detached=--masker_loss_weight 0.5",
                   "--task_args", "velocity=--num_train_epochs 3", "--pretrain_seeds", "0,2",
                   "--stages", "pretrain,finetune", "--dry_run"])
    lines = capsys.readouterr().out.splitlines()
    pretrain = [line for line in lines if "pretrain.py" in line]
    finetune = [line for line in lines if "finetune.py" in line]
    assert len(pretrain) == 4 and len(finetune) == 6 and not any("prepare_data.py" in line for line in lines)
    assert any("--detach_masker --masker_loss_weight 0.5" in line and "--seed 0" in line for line in pretrain)
    assert any("--reconstruction_weight 1" in line and "adv-rw1/seed2" in line for line in pretrain)
    assert any("--from_scratch" in line and "--seed 44" in line and "scratch/seed2" in line for line in finetune)
    assert all(line.endswith("--num_train_epochs 3") for line in finetune)


def test_bad_flags_exit_with_a_message_naming_the_flag(ablation, tmp_path, capsys):
    for argv, message in (
        (["--work_dir", str(tmp_path), "--stages", "data,train"], "unknown stage 'train'"),
        (["--work_dir", str(tmp_path), "--variants", "scratch,mystery", "--stages", "report"], "unknown variant"),
        (["--work_dir", str(tmp_path), "--variant_args", "new=--lr 1", "--stages", "report"], "must give --masking"),
        (["--work_dir", str(tmp_path), "--pretrain_seeds", "0,0", "--stages", "report"], "distinct seeds"),
        (["--stages", "report"], "needs --results_file"),
    ):
        with pytest.raises(SystemExit):
            ablation.parse_args(argv)
        assert message in capsys.readouterr().err


def test_a_rerun_commands_log_keeps_its_earlier_invocations(ablation, tmp_path):
    import sys

    runner = ablation.Runner(tmp_path)
    assert not runner.run("job", [sys.executable, "-c", "import sys; print('first stretch'); sys.exit(3)"])
    assert runner.run("job", [sys.executable, "-c", "print('resumed stretch')"])
    log = (tmp_path / "logs" / "job.log").read_text()
    assert log.count("======== ") == 2 and log.index("first stretch") < log.index("resumed stretch")
    assert runner.failures == [f"job (exit 3, see {tmp_path / 'logs' / 'job.log'})"]
