"""research/quality.py: the run queue and its commands, the recipe chosen on validation, the paired comparisons and the
floors, on run folders written by hand (no training)."""

from __future__ import annotations

import json
import math
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from adversarial_midibert.evaluation import PieceResults
from adversarial_midibert.training import finetune
from benchmarks.profiling import step_flops_per_token
from research import quality


def dataset(tmp_path, name: str, task: str, task_type: str):
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    (folder / "task_info.json").write_text(json.dumps({"task": task, "task_type": task_type, "label_names": ["a", "b"],
                                                       "tokenizer": {"max_seq_len": 64}}))
    return f"{name}={folder}"


@pytest.fixture
def args(tmp_path):
    return quality.parse_args(["--pretrained", str(tmp_path / "pretrained"), "--work_dir", str(tmp_path / "work"),
                               "--dataset", dataset(tmp_path, "composer", "composer", "sequence"),
                               "--dataset", dataset(tmp_path, "melody", "melody", "token"),
                               "--seeds", "0,1,2", "--mask_ratios", "0.3,0.15,0", "--bootstrap_resamples", "200"])


def test_queue_finishes_each_task_seed_by_seed_over_every_arm_before_the_next_task(args):
    runs = quality.queue(args)
    assert len(runs) == 2 * 3 * 4 and len(set(runs)) == len(runs)
    assert runs[:4] == [("composer", "pretrained", 0.3, 0), ("composer", "scratch", 0.3, 0),
                        ("composer", "pretrained", 0.15, 0), ("composer", "pretrained", 0, 0)]
    assert [run[3] for run in runs[:12]] == [0] * 4 + [1] * 4 + [2] * 4  # a stop leaves whole seeds paired
    assert {run[0] for run in runs[:12]} == {"composer"} and {run[0] for run in runs[12:]} == {"melody"}
    assert {run[1] for run in runs if run[2] != 0.3} == {"pretrained"}


def test_commands_are_valid_finetune_flags_and_pair_the_arms(args):
    parsed = {}
    for init in quality.INITS:
        command = quality.finetune_command(args, "composer", init, 0.3, 1)
        assert command[1].endswith("examples/finetune.py")
        parsed[init] = finetune.parse_args(command[2:])  # the loop's own parser accepts every flag
    pretrained, scratch = parsed["pretrained"], parsed["scratch"]
    assert pretrained.model_name_or_path == str(args.pretrained) and not pretrained.from_scratch
    assert scratch.from_scratch and scratch.config_overrides == "max_position_embeddings=512"
    for p in (pretrained, scratch):  # paired: the same seed and recipe, resumable, nothing overwritten
        assert (p.seed, p.mask_ratio, p.pitch_shift, p.checkpointing_steps) == (101, 0.3, True, "epoch")
        assert not p.overwrite_output_dir
    melody = finetune.parse_args(quality.finetune_command(args, "melody", "pretrained", 0, 0)[2:])
    assert not melody.pitch_shift and melody.mask_ratio == 0


def test_an_interrupted_run_resumes_from_its_checkpoint(args):
    folder = quality.run_folder(args, "melody", "scratch", 0.3, 2)
    (folder / "epoch_1").mkdir(parents=True)
    (folder / "epoch_1" / "checkpoint_complete.json").write_text(json.dumps({"files": {}, "step": 40}))
    assert "--resume_from_checkpoint latest" in shlex.join(quality.finetune_command(args, "melody", "scratch", 0.3, 2))
    assert "--resume_from_checkpoint" not in quality.finetune_command(args, "melody", "scratch", 0.3, 0)


def write_run(args, name, init, ratio, seed, rate, eval_accuracy, rng, task_type):
    """A finished run whose test predictions are right with probability ``rate`` (50 pieces)."""
    folder = quality.run_folder(args, name, init, ratio, seed)
    folder.mkdir(parents=True)
    pieces = [f"p{i}" for i in range(50)]
    if task_type == "sequence":
        labels = rng.integers(0, 2, 50)
        right = rng.random(50) < rate
        results = PieceResults(pieces, np.full(50, 4), np.full(50, 100), (right * 4).astype(np.int64), labels=labels,
                               predictions=np.where(right, labels, 1 - labels), probabilities=np.full((50, 2), 0.5))
        accuracy = float(right.mean())
    else:
        correct = rng.binomial(200, rate, 50)  # every note of class 0: the wrong ones predicted 1
        confusion = np.zeros((50, 2, 2), dtype=np.int64)
        confusion[:, 0, 0], confusion[:, 0, 1] = correct, 200 - correct
        results = PieceResults(pieces, np.full(50, 2), np.full(50, 200), correct, confusion=confusion)
        accuracy = float(correct.sum() / 10000)
    (folder / "test_piece_results.json").write_text(json.dumps(results.records(["a", "b"])))
    (folder / "all_results.json").write_text(json.dumps({
        "test_accuracy": accuracy, "test_piece_accuracy": accuracy if task_type == "sequence" else None,
        "test_f1_macro": accuracy, "eval_accuracy": eval_accuracy + 0.001 * seed, "epoch": 2, "epochs_run": 4,
        "seed": 100 + seed, "train_runtime": 480.0, "num_train_segments": 100,
        "history": [{"epoch": 0, "eval_accuracy": eval_accuracy / 2}, {"epoch": 1, "eval_accuracy": eval_accuracy}]}))


def test_report_chooses_the_ratio_on_validation_pairs_the_arms_and_judges_the_floors(args):
    from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
    from adversarial_midibert.presets import preset_config_kwargs

    AdvMidiBertConfig(**preset_config_kwargs("tiny")).save_pretrained(args.pretrained)
    rng = np.random.default_rng(0)
    # melody: pre-trained at ratio 0.15 is best on validation (but not on test: the choice must not look at test)
    rates = {("pretrained", 0.3): (0.90, 0.80), ("pretrained", 0.15): (0.86, 0.85), ("pretrained", 0.0): (0.70, 0.70),
             ("scratch", 0.3): (0.60, 0.60)}
    for (init, ratio), (test_rate, eval_accuracy) in rates.items():
        for seed in (0, 1, 2):
            write_run(args, "melody", init, ratio, seed, test_rate, eval_accuracy, rng, "token")
    for seed in (0, 1):  # composer: only two seeds of the pre-trained arm, none of scratch
        write_run(args, "composer", "pretrained", 0.3, seed, 0.9, 0.9, rng, "sequence")
    results = quality.report(args, "python -m research.quality")
    melody, composer = results["tasks"]["melody"], results["tasks"]["composer"]
    assert str(args.work_dir.parent) not in json.dumps(results)  # no path of this machine: placeholders
    settings = results["settings"]
    assert settings["pretrained"] == "PRETRAINED" and settings["datasets"]["melody"] == "DATA_melody"

    assert melody["chosen_mask_ratio"] == 0.15
    assert melody["recipe_accuracy"] == pytest.approx(0.86, abs=0.02)
    accuracy = melody["recipe_accuracy"]  # class 0's F1 is 2a / (1 + a), class 1's is 0 (never the label)
    assert melody["recipe_f1_macro"] == pytest.approx(accuracy / (1 + accuracy), abs=0.005)
    low, high = melody["recipe_f1_macro_ci95"]
    assert low < melody["recipe_f1_macro"] < high
    assert 0.75 < composer["cells"]["pretrained mask 0.3"]["levels"]["piece"]["f1_macro"] < 0.98  # 90 % right
    assert melody["floors_cleared"] == {"majority class": True, "skyline": True, "per-note gradient boosting": False}
    by_pair = {(c["a"], c["b"]): c for c in melody["comparisons"]}
    scratch = by_pair["pretrained mask 0.3", "scratch mask 0.3"]
    assert scratch["difference"] == pytest.approx(0.30, abs=0.03) and scratch["seeds_paired"] == [0, 1, 2]
    assert scratch["ci95"][0] > 0 and scratch["ci95_t"][0] > 0
    assert by_pair["pretrained mask 0.15", "pretrained mask 0"]["difference"] == pytest.approx(0.16, abs=0.03)

    assert composer["floor_level"] == "piece" and composer["cells"]["pretrained mask 0.3"]["seeds"] == [0, 1]
    assert composer["comparisons"][0]["difference"] is None  # no scratch run yet: said, not guessed
    assert not results["complete"] and results["runs_finished"] == 12 + 2
    # The CPU left: melody's two trials at 1e-4, one with 2 epochs in its checkpoint. Its 50 training segments, 10 of
    # 50 rows (stored first) and 40 of 10, in batches of 8 padded to their longest: 50 rows unless all 8 are short.
    DatasetDict({"train": Dataset.from_dict({"attention_mask": [[1] * 50] * 10 + [[1] * 10] * 40})}).save_to_disk(
        args.datasets["melody"])
    rows = 50 * (50 - 40 * math.comb(40, 8) / math.comb(50, 8))
    assert quality.padded_rows_per_epoch(args.datasets["melody"], 8) == pytest.approx(rows)
    assert quality.padded_rows_per_epoch(args.datasets["melody"], 1) == pytest.approx(40 * 10 + 10 * 50)
    checkpoint = quality.run_folder(args, "melody", "scratch", 0.3, 0, 1e-4) / "epoch_1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "checkpoint_complete.json").write_text(json.dumps({"files": {}, "step": 40}))
    results = quality.report(args, "python -m research.quality")
    left = results["cpu_left"]
    assert left["runs_left"] == 28 - 14 and left["tasks_without_size"] == ["composer"]
    pace = 480 / 60 / 4 / rows  # melody's runs only: composer's data set gives no size
    assert left["cpu_minutes_per_row_epoch"] == pytest.approx(pace)
    assert left["core_hours_at_mean_epochs"] == pytest.approx((4 + 2) * 2 / 60)  # 2 minutes an epoch
    assert left["core_hours_at_epoch_cap"] == pytest.approx((10 + 8) * 2 / 60)
    assert left["run_core_hours_at_mean_epochs"] == {"melody": pytest.approx(4 * 2 / 60)}

    picture = args.work_dir / "quality.png"
    quality.figure(json.loads(json.dumps(results)), picture)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 5000
    assert "![validation accuracy by epoch](quality.png)" in quality.markdown(results, picture.name)
    page = quality.markdown(json.loads(json.dumps(results)))
    assert "**partial**" in page and "| melody (per note) | 63.9 | 87.2 (per-note gradient boosting) |" in page
    assert (f"The 14 runs left need about 0 CPU core-hours at this machine's pace ({pace * 60_000:.2f} s per 1,000 "
            "training rows and epoch, the segments padded as their batches are, one thread) and the finished runs' "
            "mean of 4.0 epochs, 1 if every run reaches the 10-epoch cap (epochs already in a run's checkpoint counted "
            "as done; without composer, whose data sets give no size). One whole run at the mean epochs, in "
            "core-hours: melody 0.1.") in page
    old = json.loads(json.dumps(results))  # a results file written when the pace was per segment still renders
    old["cpu_left"]["cpu_minutes_per_segment_epoch"] = old["cpu_left"].pop("cpu_minutes_per_row_epoch")
    del old["cpu_left"]["run_core_hours_at_mean_epochs"]
    assert f"({pace * 60:.2f} s per training segment and epoch, one thread)" in quality.markdown(old)
    assert "| **no** |" in page and "not run yet" in page
    assert "`PRETRAINED`: – steps;" in page
    (Path(args.pretrained) / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0}) + "\n"
                                                             for s in range(1, 121)))  # the pre-training under way
    assert "`PRETRAINED`: under way, 120 steps logged so far;" in quality.markdown(
        json.loads(json.dumps(quality.report(args, "x"))))
    assert "3 fine-tuning seeds of one pre-trained model: the intervals describe this model's fine-tunings" in page
    info = args.datasets["melody"] / "task_info.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "split_source": "splits/pop909.json"}))
    commands = {name: command for name, command, _ in quality.publish_commands(args, results)}
    assert sorted(commands) == ["card-composer", "card-melody", "push-composer", "push-melody"]
    best = str(quality.run_folder(args, "melody", "pretrained", 0.15, 2))  # the best validation accuracy of the recipe
    assert commands["card-melody"][3:] == ["card", best, "--repo_id", "adversarial-midibert/adv-midibert-small-melody",
                                           "--hyperparameter", "data split=splits/pop909.json"]  # its card says so
    assert commands["card-composer"][-2:] == ["--repo_id", "adversarial-midibert/adv-midibert-small-composer"]
    assert commands["push-melody"][4] == best and commands["push-melody"][-2:] == [
        "--dry_run", str(args.work_dir / "publish" / "melody")]
    floors_file = args.work_dir / "floors.json"  # an older verdict: composer kept where this report has no figure
    floors_file.write_text(json.dumps({"description": "kept", "verdict": {"velocity": {"value_pct": 30.0}}}))
    verdict = quality.update_floors_verdict(floors_file, results, "results/quality-cpu.json")
    written = json.loads(floors_file.read_text())
    assert written["description"] == "kept" and written["verdict"] == verdict
    assert verdict["velocity"] == {"value_pct": 30.0} and verdict["melody"]["clears"] == melody["floors_cleared"]
    assert verdict["melody"]["metric"] == "test_accuracy" and verdict["composer"]["metric"] == "test_piece_accuracy"
    assert verdict["melody"]["value_pct"] == round(100 * melody["recipe_accuracy"], 2)
    cost = melody["epoch_cost"]  # an epoch: 100 segments of 64 rows, 480 s over 4 epochs
    assert cost["tokens"] == 6400 and cost["cpu_minutes"] == pytest.approx(2.0)
    assert 0 < cost["flops_per_token"] < cost["base_flops_per_token"]
    # counted on the pre-trained model (tiny), not on the scratch arm's architecture
    assert cost["flops_per_token"] == step_flops_per_token(AdvMidiBertConfig.from_pretrained(args.pretrained), 64,
                                                           "random")
    assert cost["h100_seconds_on_paper"] == pytest.approx(6400 * cost["flops_per_token"] / (989e12 * 0.2))
    assert cost["base_cpu_minutes_flop_scaled"] == pytest.approx(2.0 * cost["base_flops_per_token"]
                                                                 / cost["flops_per_token"])
    assert "6,400 tokens per epoch" in page and "2.0 CPU-minutes per epoch here" in page
    assert "Validation accuracy by epoch, pre-trained seed 0: 42.5, 85.0. Floor not cleared: every run stopped" in page
    assert "| 4 (3), 4 (3), 4 (3) |" in page  # epochs run (the best one, counted from 1)
    assert ("chosen on validation accuracy among 0.0005, 0.0001 (seed 0, first mask ratio; each trial's validation "
            "accuracy in brackets; a tie goes to the first of them, and a task with no trial yet shows the first): "
            "composer: pretrained 0.0005 (0.0005: 90.0 %, 0.0001: not run), scratch 0.0005 "
            "(0.0005: not run, 0.0001: not run); melody: pretrained 0.0005 (0.0005: 80.0 %, 0.0001: not run)") in page
    other_split = json.loads(json.dumps(results))  # a data set on another split of a task: its floors are the task's
    other_split["tasks"]["melody-holdout"] = other_split["tasks"].pop("melody")
    assert "split" not in page.split("## Comparisons")[0].split("Intervals:")[1]
    assert ("melody-holdout: the floors and published figures shown are melody's, on its usual split; the data README "
            "gives none for this split.") in quality.markdown(other_split)


def test_a_floor_not_cleared_says_whether_more_epochs_could_clear_it():
    settings = {"max_epochs": 10, "patience": 3}
    cleared = {"majority class": True, "random forest": False}
    rising, stopped_early, capped_past_best = ({"epochs_run": 10, "epoch": 9}, {"epochs_run": 6, "epoch": 2},
                                               {"epochs_run": 10, "epoch": 6})
    assert "every run stopped on validation" in quality._stopping(cleared, [stopped_early, capped_past_best], settings)
    assert "1 of 2 runs were still improving at the last of their 10 epochs" in quality._stopping(
        cleared, [rising, stopped_early], settings)
    assert quality._stopping({"random forest": True}, [rising], settings) == ""


def fake_runner(monkeypatch, eval_accuracy=None) -> list[str]:
    """Replace the runner's ``run``: it records each run's name (the returned list, in order) and command as the runner
    does, and writes nothing, or, given ``eval_accuracy(learning_rate)``, a finished run's all_results.json."""
    order = []

    def fake_run(self, name, command):
        order.append(name)
        self.commands[name] = shlex.join(command)
        if eval_accuracy is not None:
            output = Path(command[command.index("--output_dir") + 1])
            output.mkdir(parents=True, exist_ok=True)
            lr = float(command[command.index("--learning_rate") + 1])
            (output / "all_results.json").write_text(json.dumps({"eval_accuracy": eval_accuracy(lr)}))
        return True

    monkeypatch.setattr(quality.Runner, "run", fake_run)
    return order


def test_commands_file_keeps_every_invocations_runs(args, tmp_path, monkeypatch):
    """Run twice (the second time the first run is finished): commands.json lists the runs of both invocations."""
    fake_runner(monkeypatch)
    argv = ["--pretrained", str(args.pretrained), "--work_dir", str(args.work_dir), "--seeds", "0",
            "--mask_ratios", "0.3", "--learning_rates", "5e-4", "--stages", "finetune",  # the trials are queue runs
            *[f"--dataset={name}={folder}" for name, folder in args.datasets.items()]]
    quality.main(argv)
    first = json.loads((args.work_dir / "commands.json").read_text())
    assert len(first) == 4  # 2 tasks x pretrained and scratch
    done = quality.run_folder(args, "composer", "pretrained", 0.3, 0)
    done.mkdir(parents=True)
    (done / "all_results.json").write_text("{}")
    (args.work_dir / "commands.json").write_text(json.dumps({"composer-pretrained-lr0.0005-mask0.3-seed0": "kept"}))
    quality.main(argv)
    second = json.loads((args.work_dir / "commands.json").read_text())
    assert second["composer-pretrained-lr0.0005-mask0.3-seed0"] == "kept" and len(second) == 4


def test_learning_rate_trials_run_first_and_each_task_and_init_keeps_its_best_rate(args):
    trials = quality.lr_trials(args)
    assert trials[:4] == [("composer", "pretrained", 0.3, 0, 5e-4), ("composer", "scratch", 0.3, 0, 5e-4),
                          ("composer", "pretrained", 0.3, 0, 1e-4), ("composer", "scratch", 0.3, 0, 1e-4)]
    assert trials[4:] == [("melody", *trial[1:]) for trial in trials[:4]]
    assert quality.choose_learning_rates(args)[0]["eval_accuracy"] is None
    assert args.rates["melody", "pretrained"] == 5e-4  # none run: the first candidate
    for (name, init, ratio, seed, lr), accuracy in zip(trials, (0.70, 0.60, 0.75, None, 0.80, 0.60, 0.75, 0.60)):
        if accuracy is not None:  # composer from scratch at 1e-4 has not run: not chosen
            folder = quality.run_folder(args, name, init, ratio, seed, lr)
            folder.mkdir(parents=True)
            (folder / "all_results.json").write_text(json.dumps({"eval_accuracy": accuracy}))
    quality.choose_learning_rates(args)  # melody from scratch: a tie, the earlier candidate
    assert args.rates == {("composer", "pretrained"): 1e-4, ("composer", "scratch"): 5e-4,
                          ("melody", "pretrained"): 5e-4, ("melody", "scratch"): 5e-4}
    command = finetune.parse_args(quality.finetune_command(args, "composer", "pretrained", 0.3, 1)[2:])
    assert command.learning_rate == 1e-4 and command.output_dir.endswith("composer/pretrained-lr0.0001-mask0.3/seed1")
    assert finetune.parse_args(quality.finetune_command(args, "melody", "pretrained", 0.3, 1)[2:]).learning_rate == 5e-4


def test_the_queue_runs_at_the_rates_its_trials_chose(args, monkeypatch):
    order = fake_runner(monkeypatch, lambda lr: 0.8 if lr == 1e-4 else 0.6)
    args.seeds, args.mask_ratios = [0, 1], [0.3]
    quality.finetune_stage(args, quality.Runner(args.work_dir))
    assert order[:4] == ["composer-pretrained-lr0.0005-mask0.3-seed0", "composer-scratch-lr0.0005-mask0.3-seed0",
                         "composer-pretrained-lr0.0001-mask0.3-seed0", "composer-scratch-lr0.0001-mask0.3-seed0"]
    assert order[4:8] == [name.replace("composer", "melody") for name in order[:4]]
    assert order[8:] == ["composer-pretrained-lr0.0001-mask0.3-seed1", "composer-scratch-lr0.0001-mask0.3-seed1",
                         "melody-pretrained-lr0.0001-mask0.3-seed1", "melody-scratch-lr0.0001-mask0.3-seed1"]


def test_inits_restricts_the_runs_of_one_invocation(args, monkeypatch):
    order = fake_runner(monkeypatch, lambda lr: 0.5)
    args.seeds, args.mask_ratios, args.inits = [0], [0.3], ["scratch"]
    quality.finetune_stage(args, quality.Runner(args.work_dir))
    assert order == ["composer-scratch-lr0.0005-mask0.3-seed0", "composer-scratch-lr0.0001-mask0.3-seed0",
                     "melody-scratch-lr0.0005-mask0.3-seed0", "melody-scratch-lr0.0001-mask0.3-seed0"]
    args.inits = list(quality.INITS)  # a later invocation runs the rest, the scratch runs skipped
    quality.finetune_stage(args, quality.Runner(args.work_dir))
    assert [name for name in order[4:] if "scratch" in name] == []
    with pytest.raises(SystemExit):
        quality.parse_args(["--pretrained", "p", "--work_dir", "w", "--stages", "report", "--inits", "scratch,random"])


def test_pretraining_summary_keeps_the_yardstick_and_the_training_loss_means(tmp_path):
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": float(s)}) + "\n"
                                                    for s in range(501, 621)))
    (folder / "eval_log.jsonl").write_text(json.dumps({"step": 600, "eval_loss": 1.5, "eval_accuracy": 0.6}) + "\n")
    summary = quality.pretraining_summary(folder, window=50)
    assert summary["eval_log"] == [{"step": 600, "eval_loss": 1.5, "eval_accuracy": 0.6}]
    assert summary["train_loss_means"] == [[550, 525.5], [600, 575.5], [620, 610.5]]  # the last window is partial


def test_report_writes_its_page_into_a_new_folder_before_any_run(args, tmp_path):
    docs = tmp_path / "new" / "quality.md"
    argv = ["--pretrained", str(args.pretrained), "--work_dir", str(args.work_dir), "--stages", "report",
            "--results_file", str(tmp_path / "q.json"), "--docs", str(docs),
            *[f"--dataset={name}={folder}" for name, folder in args.datasets.items()]]
    results = quality.main(argv)
    # 2 tasks: 2 inits x 3 seeds + 2 other ratios x 3 seeds, and each arm's seed-0 trial at the other rate
    assert results["runs_finished"] == 0 and "0 of 28 runs finished; **partial**" in docs.read_text()
    assert "- composer: no finished run yet." in docs.read_text()
    assert docs.with_suffix(".png").is_file()
    again = tmp_path / "again" / "page.md"  # --stages docs: the page and its figure from the results file alone
    again.parent.mkdir()
    quality.main([*argv[:argv.index("--stages")], "--stages", "docs", "--results_file", str(tmp_path / "q.json"),
                  "--docs", str(again)])
    assert again.read_text() == docs.read_text().replace("quality.png", "page.png")
    assert again.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_pre_trained_model_the_cost_and_curve_come_from_the_scratch_runs(args, monkeypatch):
    """The pre-training not finished (or lost with a machine): the page still says what an epoch costs and how the
    from-scratch runs stopped against the floors, counted on the scratch arm's architecture."""
    from adversarial_midibert.configuration_adv_midibert import AdvMidiBertConfig
    from adversarial_midibert.presets import preset_config_kwargs

    write_run(args, "composer", "scratch", 0.3, 0, 0.5, 0.6, np.random.default_rng(0), "sequence")
    results = json.loads(json.dumps(quality.report(args, "python -m research.quality")))
    small = AdvMidiBertConfig(**{**preset_config_kwargs("small"), "max_position_embeddings": 512})
    assert results["tasks"]["composer"]["epoch_cost"]["flops_per_token"] == step_flops_per_token(small, 64, "random")
    assert results["tasks"]["melody"]["epoch_cost"] is None
    page = quality.markdown(results)
    assert ("2.0 CPU-minutes per epoch here" in page and "Validation accuracy by epoch, from scratch seed 0: 30.0, "
            "60.0. Floor not cleared: every run stopped on validation") in page
    assert "- melody: no finished run yet." in page
    from matplotlib.figure import Figure

    panels = {}  # each panel's title and the words written on it, read as the figure is saved
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: panels.update(
        {axis.get_title(): [text.get_text() for text in axis.texts] for axis in fig.axes}))
    quality.figure(results, args.work_dir / "quality.png")
    assert panels == {"composer (validation accuracy, %)": [], "pre-training loss": ["no pre-training log"],
                      "melody (validation accuracy, %)": ["no finished run yet"]}


def test_a_lost_work_folder_loses_no_finished_run_kept_in_the_run_records(tmp_path, monkeypatch):
    """Runs finished on a machine since lost are read from their records and not run again; a record made by another
    command, or from other pre-trained weights, is not used."""
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    (pretrained / "model.safetensors").write_bytes(b"the pre-trained weights")
    records = tmp_path / "records"
    argv = ["--pretrained", str(pretrained), "--work_dir", str(tmp_path / "work"), "--seeds", "0", "--mask_ratios",
            "0.3", "--learning_rates", "5e-4", "--run_records", str(records), "--bootstrap_resamples", "200",
            "--dataset", dataset(tmp_path, "melody", "melody", "token")]
    args = quality.parse_args(argv)
    rng = np.random.default_rng(0)
    for init, rate in (("pretrained", 0.8), ("scratch", 0.6)):
        write_run(args, "melody", init, 0.3, 0, rate, 0.7, rng, "token")
        results_file = quality.run_folder(args, "melody", init, 0.3, 0) / "all_results.json"
        results_file.write_text(json.dumps({**json.loads(results_file.read_text()),
                                            "command": f"finetune.py --output_dir {results_file.parent}"}))
    first = quality.report(args, "python -m research.quality")
    assert sorted(path.name for path in records.iterdir()) == ["melody-pretrained-lr0.0005-mask0.3-seed0.json",
                                                                "melody-scratch-lr0.0005-mask0.3-seed0.json"]
    assert str(tmp_path) not in "".join(path.read_text() for path in records.iterdir())  # placeholders only
    assert [name for name, _, _ in quality.publish_commands(args, first)] == ["card-melody", "push-melody"]
    shutil.rmtree(args.work_dir)  # another machine
    again = quality.report(quality.parse_args(argv), "python -m research.quality")
    assert quality.publish_commands(args, again) == []  # its model went with the folder: nothing to card or push
    assert again["runs_finished"] == first["runs_finished"] == 2
    assert again["tasks"]["melody"]["cells"] == first["tasks"]["melody"]["cells"]  # figures, curves, intervals
    assert again["tasks"]["melody"]["comparisons"] == first["tasks"]["melody"]["comparisons"]
    order = fake_runner(monkeypatch)
    quality.finetune_stage(quality.parse_args(argv), quality.Runner(args.work_dir))
    assert order == []  # nothing run again
    (pretrained / "model.safetensors").write_bytes(b"another pre-training")
    quality.finetune_stage(quality.parse_args(argv), quality.Runner(args.work_dir))
    assert set(order) == {"melody-pretrained-lr0.0005-mask0.3-seed0"}  # the scratch run's record still holds
    other_recipe = quality.parse_args([*argv, "--finetune_args=--mixed_precision bf16"])
    assert quality.report(other_recipe, "python -m research.quality")["runs_finished"] == 0
