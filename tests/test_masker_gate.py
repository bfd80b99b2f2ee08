"""The masker gate's figures (against scikit-learn), its stated reading, one tiny run and its report."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from adversarial_midibert import OctupleTokenizer
from research import masker_gate
from research.masker_gate import (
    GateSettings,
    freezing_precision_recall,
    run_arm,
    summarise,
    verdict,
    within_segment_auroc,
)
from research.planted_corpus import synthetic_corpus


def _segments(rng, count=12, length=20):
    notes = np.zeros((count, length), dtype=bool)
    for s, n in enumerate(rng.integers(3, length - 2, count)):
        notes[s, 1 : n + 1] = True  # BOS at 0, EOS and padding after the notes
    planted = notes & (rng.random((count, length)) < 0.3)
    planted[0] = False  # a segment with no planted note: no AUROC
    planted[1] = notes[1]  # only planted notes: no AUROC
    scores = rng.random((count, length))
    scores[~notes] = 5.0  # BOS, EOS and padding must not count
    scores[2, notes[2]] = np.round(scores[2, notes[2]], 1)  # ties
    return scores, planted, notes


def test_within_segment_auroc_matches_scikit_learn():
    scores, planted, notes = _segments(np.random.default_rng(0))
    expected = [roc_auc_score(planted[s][notes[s]], scores[s][notes[s]]) for s in range(2, len(scores))
                if 0 < planted[s][notes[s]].sum() < notes[s].sum()]
    assert within_segment_auroc(scores, planted, notes) == pytest.approx(np.mean(expected))
    assert math.isnan(within_segment_auroc(scores[:2], planted[:2], notes[:2]))


def test_freezing_precision_recall_matches_scikit_learn():
    rng = np.random.default_rng(1)
    _, planted, notes = _segments(rng)
    frozen = rng.random(planted.shape) < 0.2
    frozen[~notes] = True  # frozen padding must not count
    precision, recall = freezing_precision_recall(frozen, planted, notes)
    assert precision == pytest.approx(precision_score(planted[notes], frozen[notes]))
    assert recall == pytest.approx(recall_score(planted[notes], frozen[notes]))
    assert math.isnan(freezing_precision_recall(np.zeros_like(frozen), planted, notes)[0])


@pytest.mark.parametrize("auroc, precision, expected", [
    (0.8, 0.45, "works"), (0.95, 0.449, "partial"), (0.79, 0.9, "partial"), (0.61, 0.226, "partial"),
    (0.6, 0.9, "fails"), (0.9, 0.225, "fails"), (math.nan, 0.9, "fails"), (0.9, math.nan, "fails"),
])
def test_verdict_applies_the_stated_thresholds(auroc, precision, expected):
    assert verdict(auroc, precision, planted_share=0.15) == expected


@pytest.fixture(scope="module")
def tiny_gate():
    settings = GateSettings(train_segments=32, heldout_segments=16, epochs=3, first_freeze_epoch=1, freeze_every=1,
                            batch_size=8)
    tokenizer = OctupleTokenizer(max_seq_len=128)
    corpus = synthetic_corpus(tokenizer, 48, settings.planted_share, seed=0)
    train, heldout = corpus.subset(np.arange(32)), corpus.subset(np.arange(32, 48))
    runs = [run_arm(name, 0, train, heldout, settings, tokenizer.vocab_sizes)
            for name in ("random", "adversarial", "cached-evidence")]
    return settings, train, runs


def test_freezing_epochs_start_late_and_stop_before_the_end():
    settings = GateSettings(epochs=12, first_freeze_epoch=5, freeze_every=3)
    assert [e for e in range(1, 13) if settings.is_freezing_epoch(e)] == [5, 8, 11]
    assert not GateSettings(epochs=11, first_freeze_epoch=5, freeze_every=3).is_freezing_epoch(11)


def test_a_run_records_every_pass_and_none_after_the_last_epoch(tiny_gate):
    settings, train, (random_run, adversarial_run, cached_run) = tiny_gate
    kinds = [(c["epoch"], c["kind"]) for c in adversarial_run["checkpoints"]]
    assert kinds == [(1, "pass"), (2, "pass"), (3, "end")]
    first, end = adversarial_run["checkpoints"][0], adversarial_run["checkpoints"][-1]
    assert 0 < first["frozen_share"] < 1 and "frozen_share" not in end
    assert 0 <= first["auroc"] <= 1 and "auroc" not in random_run["checkpoints"][0]
    # the reference schedule freezes a fraction u ~ U(0.1, 0.3) of the notes at the first pass
    assert 0.1 <= first["newly_frozen_share"] <= 0.3
    # random masking takes 15 % of the notes; the adversary at most that
    assert random_run["checkpoints"][0]["masked_share"] == pytest.approx(0.15, abs=0.01)
    assert adversarial_run["checkpoints"][0]["masked_share"] <= 0.15 + 1e-9
    for group in ("planted", "determined"):
        assert end["recovery_accuracy"][group]["masked_notes"] > 0
    # the matched budget holds the share as notes freeze; the evidence rule freezes by score
    assert cached_run["checkpoints"][1]["masked_share"] == pytest.approx(0.15, abs=0.01)
    assert cached_run["settings"]["freezing_rule"] == "evidence"


def test_the_report_reads_the_results_file(tiny_gate, tmp_path):
    settings, train, runs = tiny_gate
    arms = summarise(runs, train.planted_share)
    assert arms["adversarial"]["verdict"] == verdict(arms["adversarial"]["first_pass"]["auroc"],
                                                     arms["adversarial"]["first_pass"]["freeze_precision"],
                                                     train.planted_share)
    assert "verdict" not in arms["random"]
    corpus_info = {"kind": "synthetic", "segments": 48, "train_segments": 32, "heldout_segments": 16,
                   "planted_share": {"train": train.planted_share, "heldout": 0.15}}
    from dataclasses import asdict

    results = {"corpora": {"synthetic": {"command": "python -m research.masker_gate", "settings": asdict(settings),
                                         "corpus": corpus_info, "arms": arms}}}
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(results))
    docs = tmp_path / "gate.md"
    masker_gate.main(["--report", str(path), "--docs", str(docs)])
    page = docs.read_text()
    assert f"| adversarial | 1 | {arms['adversarial']['verdict']} |" in page
    assert f"synthetic corpus, adversarial: **{arms['adversarial']['verdict']}**" in page
    assert (tmp_path / "gate.png").stat().st_size > 0
