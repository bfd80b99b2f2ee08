"""Prediction on one big MIDI file, stage by stage: the pipeline (read, tokenise, model), the class-track MIDI and
the piano roll. Each stage runs in its own process so that its peak memory is its own.

A synthetic piece of ``--notes`` notes on three tracks (melody, bridge, accompaniment names; 120,000 notes over
about 13,000 quarter notes by default) goes through ``midi-token-classification`` with a randomly initialised tiny
model (the model is not what is measured; pass ``--model`` for a real one).

    python -m benchmarks.predict_file                 # 120,000 notes
    python -m benchmarks.predict_file --notes 20000
    python -m benchmarks.predict_file --old_piano_roll 404b530   # also the piano roll this replaced (git history)
    python -m benchmarks.predict_file --old_piano_roll 404b530 --output results/predict-file.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.results_file import ResultsFile

STAGE = r"""
import json, resource, sys, time
stage, folder, midi, work = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
import symusic
from transformers import pipeline
import adversarial_midibert  # noqa: F401
from adversarial_midibert.visualization import plot_piano_roll

pipe = pipeline("midi-token-classification", model=folder, device="cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if stage == "pipeline":
    out = pipe(midi)
    extra = {"notes": out["num_notes"], "segments": out["num_segments"]}
else:
    out = pipe(midi)
    start = time.perf_counter()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if stage == "midi":
        out["midi"].dump_midi(f"{work}/out.mid")
    elif stage == "old_piano_roll":  # inference.plot_piano_roll of an older revision, one barh rectangle per note
        import importlib.util

        spec = importlib.util.spec_from_file_location("old_inference", f"{work}/old_inference.py")
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)

        prediction = old.TokenPrediction(file=midi, score=out["score"], note_track=out["note_track"],
                                         note_index=out["note_index"], classes=out["classes"],
                                         probabilities=out["probabilities"], label_names=out["label_names"])
        start = time.perf_counter()
        old.plot_piano_roll(prediction, f"{work}/old.png")
    else:
        plot_piano_roll(out["midi"], f"{work}/out.png", title="benchmark")
    extra = {}
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"stage": stage, "seconds": elapsed, "peak_rss_mib": peak / 1024,
                  "added_rss_mib": (peak - base) / 1024, **extra}))
"""


# Runs in a child process too.
SETUP = r"""
import sys
import numpy as np
import symusic
import torch
from adversarial_midibert import AdvMidiBertConfig, AdvMidiBertForTokenClassification, OctupleTokenizer
from adversarial_midibert.presets import preset_config_kwargs

folder, midi, notes = sys.argv[1], sys.argv[2], int(sys.argv[3])
if sys.argv[4] == "tiny":  # a randomly initialised model of the tiny preset
    labels = ["melody", "bridge", "accompaniment"]
    tokenizer = OctupleTokenizer(max_seq_len=1024, warn=False)
    config = AdvMidiBertConfig(**{**preset_config_kwargs("tiny"), "max_position_embeddings": 1024},
                               vocab_sizes=list(tokenizer.vocab_sizes), id2label=dict(enumerate(labels)),
                               label2id={name: i for i, name in enumerate(labels)})
    torch.manual_seed(0)
    AdvMidiBertForTokenClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
rng = np.random.default_rng(0)
score = symusic.Score(480)
quarters = notes // 9
for name, share, low, high in (("MELODY", 0.2, 60, 84), ("BRIDGE", 0.1, 55, 79), ("PIANO", 0.7, 36, 72)):
    n = int(notes * share)
    track = symusic.Track(name=name, program=0)
    time_ = np.sort(rng.integers(0, 480 * quarters, n)).astype(np.int32)
    track.notes = symusic.Note.from_numpy(time_, rng.integers(60, 960, n).astype(np.int32),
                                          rng.integers(low, high, n).astype(np.int8),
                                          rng.integers(40, 110, n).astype(np.int8))
    score.tracks.append(track)
score.dump_midi(midi)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, default=120_000, help="notes of the synthetic file")
    parser.add_argument("--model", default=None, help="a token-classification model folder (default: a tiny one)")
    parser.add_argument("--old_piano_roll", default=None, metavar="REV",
                        help="also time adversarial_midibert/inference.py's plot_piano_roll at this git revision")
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file (results/...)")
    args = parser.parse_args()
    results = ResultsFile(args.output, vars(args))
    stage_results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else Path(tmp) / "model"
        midi = Path(tmp) / "big.mid"
        subprocess.run([sys.executable, "-c", SETUP, str(folder), str(midi), str(args.notes),
                        "given" if args.model else "tiny"], check=True)
        stages = ["pipeline", "midi", "piano_roll"]
        if args.old_piano_roll:
            source = subprocess.run(["git", "show", f"{args.old_piano_roll}:adversarial_midibert/inference.py"],
                                    capture_output=True, text=True, check=True,
                                    cwd=Path(__file__).resolve().parents[1]).stdout
            (Path(tmp) / "old_inference.py").write_text(source.replace("from .", "from adversarial_midibert."))
            stages.append("old_piano_roll")
        for stage in stages:
            done = subprocess.run([sys.executable, "-c", STAGE, stage, str(folder), str(midi), tmp],
                                  capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            stage_results[stage] = result
            print(f"{stage:<11} {result['seconds']:7.2f} s   peak RSS {result['peak_rss_mib']:7.0f} MiB "
                  f"(+{result['added_rss_mib']:.0f} MiB in the stage)"
                  + (f"   {result['notes']} notes, {result['segments']} segments" if "notes" in result else ""))
        ratios = {}
        if "old_piano_roll" in stage_results:
            old_roll, new_roll = stage_results["old_piano_roll"], stage_results["piano_roll"]
            ratios = {"old_over_new_piano_roll_seconds": old_roll["seconds"] / new_roll["seconds"]}
            print(f"piano roll: the old one took {ratios['old_over_new_piano_roll_seconds']:.1f} times as long")
        results.write(stages=stage_results, ratios=ratios)


if __name__ == "__main__":
    main()
