"""The method study (research/run_study.py): a tiny run on real pieces (corpus of every source, arms at matched
masked shares), the comparisons from evaluation files (bootstrap and seed-paired t intervals, the primary one), and
the page regenerated from a results file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from research import run_study as study

TINY = ["--preset", "tiny", "--seeds", "0,1", "--steps", "15", "--batch_size", "8", "--pretrain_share", "0.001",
        "--validation_pieces_per_source", "1", "--bootstrap_resamples", "300", "--in_process"]


def write_evaluations(args, rates: dict[str, float], pieces: int = 30) -> None:
    """Evaluation files of every arm and seed, as the probe and fine-tuning stages write them: ``rates[arm]`` of
    100 notes right per piece, each file listing the pieces in another order (the report must pair them)."""
    from adversarial_midibert.evaluation import PieceResults

    names = [f"song{i}" for i in range(pieces)]
    rng = np.random.default_rng(0)
    for arm, rate in rates.items():
        for seed in args.seeds:
            order = rng.permutation(pieces)
            correct = [float(rng.binomial(100, rate)) for _ in order]
            entry = {"piece_ids": [names[i] for i in order], "total": [100.0] * pieces, "correct": correct}
            # the probes' training sample: 60 % of its notes in class 2, 50 % of the test notes in class 1
            sample = {"train_pieces": names[:5], "train_notes": 10, "label_names": ["a", "b", "c"],
                      **study.majority_classes(np.array([2] * 6 + [1] * 4), np.array([1] * 5 + [2] * 3 + [0] * 2))}
            path = study.probe_file(args, arm, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"melody-probe": {**entry, **sample}, "velocity-probe": {**entry, **sample},
                                        "composer-cv": entry}))
            run = PieceResults([names[i] for i in order], np.ones(pieces), np.full(pieces, 100),
                               np.asarray(correct, dtype=np.int64))
            folder = study.finetune_folder(args, arm, seed)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "test_piece_results.json").write_text(json.dumps(run.records()))


def test_comparisons_pair_pieces_and_seeds_and_mark_the_primary(tmp_path):
    from adversarial_midibert.confidence_intervals import paired_t_interval

    args = study.parse_args(["--work_dir", str(tmp_path), "--arms", "random,adversarial", "--seeds", "0,1,2"])
    write_evaluations(args, {"random": 0.6, "adversarial": 0.7})
    compared, accuracy = study.comparisons(args)
    row = next(c for c in compared if c["evaluation"] == "melody-probe")
    assert (row["a"], row["b"], row["pieces"], row["seeds_a"], row["primary"]) == ("adversarial", "random", 30, 3,
                                                                                   False)
    assert 0.05 < row["difference"] < 0.15 and row["ci95"][0] < row["difference"] < row["ci95"][1]
    cells = accuracy["melody-probe"]
    expected = paired_t_interval(cells["adversarial"]["accuracies"], cells["random"]["accuracies"])
    assert row["ci95_t"] == pytest.approx([expected.low, expected.high]) and row["seeds_paired"] == [0, 1, 2]
    # the minimum detectable effect comes from the wider interval
    widths = {"bootstrap": np.diff(row["ci95"])[0], "t": np.diff(row["ci95_t"])[0]}
    assert row["mde_from"] == max(widths, key=widths.get) and row["mde"] > max(widths.values()) / 2
    primary = [c for c in compared if c["primary"]]
    assert [(c["a"], c["b"], c["evaluation"]) for c in primary] == [("adversarial", "random", "melody-finetune-10pct")]
    assert primary[0]["difference"] == pytest.approx(np.mean(accuracy["melody-finetune-10pct"]["adversarial"][
        "accuracies"]) - np.mean(accuracy["melody-finetune-10pct"]["random"]["accuracies"]))


def test_masked_share_check_against_random():
    arms = {"random": {"masked_share": 0.150}, "adversarial": {"masked_share": 0.159},
            "easiest": {"masked_share": 0.139}, "scratch": {"masked_share": None}}
    study.masked_share_check(arms)
    assert arms["adversarial"]["masked_share_gap"] == pytest.approx(0.009)
    assert arms["adversarial"]["masked_share_matched"]
    assert arms["easiest"]["masked_share_gap"] == pytest.approx(-0.011) and not arms["easiest"]["masked_share_matched"]
    assert arms["scratch"]["masked_share_matched"] is None and arms["random"]["masked_share_matched"]


def test_a_resumed_run_is_left_out_of_the_wall_time_comparison(tmp_path):
    """A run whose last invocation resumed from a checkpoint reported that stretch's time alone (older code): its wall
    time is left out; the other runs' stays."""
    args = study.parse_args(["--work_dir", str(tmp_path), "--seeds", "0,1"])
    for seed, log in ((0, "Resumed from checkpoint: step_750 (step 750)\n"), (1, "***** Running *****\n")):
        folder = study.pretrain_folder(args, "random", seed)
        folder.mkdir(parents=True)
        (folder / "all_results.json").write_text(json.dumps({"train_steps": 10, "train_runtime_s": 100.0 + seed}))
        (tmp_path / "logs").mkdir(exist_ok=True)
        (tmp_path / "logs" / f"pretrain-random-seed{seed}.log").write_text(log)
    summary = study.arm_summary(args, "random")
    assert [(r["seed"], r["resumed"], r["runtime_s"]) for r in summary["runs"]] == [(0, True, None), (1, False, 101.0)]
    assert summary["runtime_s"] == 101.0


@pytest.fixture(scope="module")
def tiny_study(data_root, tmp_path_factory):
    """A tiny study on real pieces: the corpus, then every arm pre-trained with two seeds (two freezing passes)."""
    work = tmp_path_factory.mktemp("study")
    args = study.parse_args(["--data_root", str(data_root), "--work_dir", str(work), *TINY])
    study.build_corpus(args)
    study.main(["--data_root", str(data_root), "--work_dir", str(work), "--stages", "pretrain", *TINY])
    return work


@pytest.mark.slow
def test_tiny_run_masks_matched_shares_on_a_corpus_of_every_source(tiny_study, data_root):
    args = study.parse_args(["--data_root", str(data_root), "--work_dir", str(tiny_study), *TINY])
    results = study.report(args, "test")
    corpus = results["corpus"]["pretrain"]
    assert set(corpus["train"]) == set(corpus["validation"]) == {"EMOPIA", "POP1K7", "POP909", "Pianist8"}
    assert all(cell["pieces"] == 1 for cell in corpus["validation"].values())
    arms = results["arms"]
    assert arms["adversarial"]["freezing_passes"] == 2 and arms["adversarial"]["frozen_fraction"] > 0.1
    assert arms["adversarial-topk"]["freezing_passes"] == 0
    for arm in ("random", "adversarial-topk", "adversarial", "easiest"):
        assert arms[arm]["seeds"] == [0, 1] and len(arms[arm]["masked_share_by_epoch"]) == 3
        assert arms[arm]["masked_share_matched"], (arm, arms[arm]["masked_share_gap"])
        assert abs(arms[arm]["masked_share"] - 0.15) < 0.02


@pytest.mark.slow
def test_page_is_regenerated_from_a_results_file(tiny_study, data_root, tmp_path):
    args = study.parse_args(["--data_root", str(data_root), "--work_dir", str(tiny_study), *TINY])
    write_evaluations(args, {"random": 0.6, "adversarial-topk": 0.62, "adversarial": 0.7, "easiest": 0.6,
                             "scratch": 0.5})
    results_file, page = tmp_path / "study.json", tmp_path / "study.md"
    study.main(["--data_root", str(data_root), "--work_dir", str(tiny_study), "--stages", "report", "--results_file",
                str(results_file), *TINY])
    results = json.loads(results_file.read_text())
    assert results["complete"] and results["primary"]["result"]["primary"]
    assert str(tiny_study) not in results_file.read_text()  # the machine's paths are written WORK_DIR
    study.main(["--work_dir", str(tmp_path / "unused"), "--stages", "docs", "--results_file", str(results_file),
                "--docs", str(page)])
    text = page.read_text()
    assert text == study.markdown(results)
    assert study.PRE_REGISTRATION in text
    assert text.index("## Pre-registration") < text.index("## Primary result") < text.index("## Comparisons")
    primary = results["primary"]["result"]
    row = next(line for line in text.splitlines() if "(**primary**)" in line)
    assert f"{100 * primary['difference']:+.2f}" in row and f"{100 * primary['mde']:.2f}" in row
    low, high = (100 * x for x in primary["ci95_t"])
    assert f"[{low:+.2f}, {high:+.2f}]" in row
    share = results["arms"]["adversarial"]["masked_share"]
    assert f"{100 * share:.2f} %" in text
    assert ("their majority class c is 60.0 % of them and 30.0 % of the test notes, whose own majority class b is "
            "50.0 %") in text


def test_results_name_no_path_of_this_machine():
    from research.run_ablation import portable_command
    from research.run_study import portable_paths

    assert portable_command("/v/bin/python /x/code/research/run_study.py --a 1") == "python research/run_study.py --a 1"
    assert portable_command("/v/bin/python3.11 /x/examples/finetune.py --b") == "python examples/finetune.py --b"
    runs_spelling = {"run": ["--output_dir ../../runs/study/pretrain/random/seed0"]}  # from another working folder
    expected = {"run": ["--output_dir WORK_DIR/pretrain/random/seed0"]}
    assert portable_paths(runs_spelling, Path("../runs/study")) == expected
