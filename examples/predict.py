#!/usr/bin/env python
"""Predict with a fine-tuned Adversarial-MidiBERT: composer / emotion of a piece, or the melody of a song.

Usage::

    python examples/predict.py MODEL_DIR song1.mid [song2.mid ...] [--output_dir DIR] [--top_k 3]

- Piece-level models (composer, emotion): prints, for every file, the predicted class and the probability of
  every class. A long piece is cut into segments; the piece's probabilities are the note-weighted geometric mean
  of the segments' (see ``adversarial_midibert.inference``).
- Note-level models (melody extraction): for every file, writes to ``--output_dir`` (default: ``predictions``)
  ``<name>.melody.mid`` with one track per predicted class (melody, bridge, accompaniment; every note of the
  input, notes that could not be tokenized on an extra ``unclassified`` track) and ``<name>.pianoroll.png``
  with the notes coloured by class, and prints how many notes each class got.

``--json FILE`` also writes all predictions as JSON. A file that cannot be read is reported and skipped; the
exit code is 1 when any file failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

try:
    import adversarial_midibert  # noqa: F401
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="a folder written by examples/finetune.py")
    p.add_argument("files", nargs="+", help="MIDI files")
    p.add_argument("--output_dir", default="predictions", help="where MIDI and PNG files go (note-level models)")
    p.add_argument("--top_k", type=int, default=None, help="print only the k most probable classes")
    p.add_argument("--batch_size", type=int, default=8, help="segments per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    p.add_argument("--json", default=None, help="also write the predictions to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Predict every file; return the exit code (0, or 1 when a file failed)."""
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    from adversarial_midibert.inference import AdvMidiBertPredictor, plot_piano_roll, write_class_tracks_midi

    predictor = AdvMidiBertPredictor.from_pretrained(args.model_dir, device=args.device, batch_size=args.batch_size)
    output_dir = Path(args.output_dir)
    records, failed = [], 0
    for file in args.files:
        try:
            prediction = predictor.predict(file)
        except (FileNotFoundError, ValueError) as err:
            print(f"{file}: skipped: {err}", file=sys.stderr)
            failed += 1
            continue
        if predictor.is_token_task:
            stem = Path(file).stem
            midi = write_class_tracks_midi(prediction, output_dir / f"{stem}.melody.mid")
            png = plot_piano_roll(prediction, output_dir / f"{stem}.pianoroll.png")
            counts = ", ".join(f"{name} {count}" for name, count in prediction.counts.items())
            print(f"{file}: {len(prediction.classes)} notes: {counts} -> {midi}, {png}")
            records.append({"file": file, "counts": prediction.counts, "midi": str(midi), "piano_roll": str(png)})
        else:
            ranked = sorted(prediction.probabilities.items(), key=lambda item: -item[1])[: args.top_k]
            probs = ", ".join(f"{name} {p:.3f}" for name, p in ranked)
            print(f"{file}: {prediction.label} ({prediction.num_segments} segments, {prediction.num_notes} notes) "
                  f"[{probs}]")
            records.append({"file": file, "label": prediction.label, "probabilities": prediction.probabilities,
                            "num_segments": prediction.num_segments, "num_notes": prediction.num_notes})
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))
    if failed:
        print(f"{failed} of {len(args.files)} files failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
