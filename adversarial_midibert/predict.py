#!/usr/bin/env python
"""Predict with a fine-tuned Adversarial-MidiBERT: composer / emotion of a piece, or the melody of a song.

Usage::

    python examples/predict.py MODEL song1.mid [song2.mid FOLDER ...] [--output_dir DIR] [--top_k 3] [--json out.json]

MODEL is a folder written by ``examples/finetune.py`` or a Hub id; every file runs through the package's pipelines
(:func:`adversarial_midibert.prediction.predict_files`). Piece-level models print each file's class and the
``--top_k`` class probabilities; note-level models write ``<name>.<task>.mid`` (one track per predicted class) and
``<name>.pianoroll.png`` under ``--output_dir``. A file that cannot be read is listed with its reason and the others
go on; ``--json`` receives every result and error; the exit code is 1 when any input failed.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _top_k(text: str) -> int:
    value = int(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be a positive number of classes, or -1 for all of them; got {value}")
    return value


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_name_or_path", help="a folder written by examples/finetune.py, or a Hub id")
    p.add_argument("inputs", nargs="+", help="MIDI files, or folders searched recursively for MIDI files")
    p.add_argument("--output_dir", default="predictions", help="where MIDI and PNG files go (note-level models)")
    p.add_argument("--top_k", type=_top_k, default=-1, help="list the k most probable classes (-1: all, the default)")
    p.add_argument("--no_plot", action="store_true", help="note-level models: do not draw the piano rolls")
    p.add_argument("--segment_batch_size", type=int, default=8, help="segments per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    p.add_argument("--revision", default=None, help="Hub revision of the model")
    p.add_argument("--trust_remote_code", action="store_true", help="run the Hub repository's code (Hub ids)")
    p.add_argument("--json", default=None, help="also write every result and error to this JSON file")
    args = p.parse_args(argv)
    if args.segment_batch_size < 1:
        p.error(f"--segment_batch_size must be >= 1, got {args.segment_batch_size}")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Predict every input; return the exit code (0, or 1 when an input failed)."""
    args = parse_args(argv, prog)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    from .atomic_io import atomic_write_json
    from .prediction import check_writable, predict_files, prediction_pipeline

    if args.json:
        try:  # before the run: its results must not be lost to a bad path at the end
            check_writable(args.json)
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    try:
        pipe, is_token = prediction_pipeline(args.model_name_or_path, revision=args.revision, device=args.device,
                                             trust_remote_code=args.trust_remote_code)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run = predict_files(pipe, args.inputs, output_dir=args.output_dir, plot=not args.no_plot, top_k=args.top_k,
                        segment_batch_size=args.segment_batch_size)
    for record in run.results:
        for message in record["warnings"]:
            print(f"warning: {message}", file=sys.stderr)
        if is_token:
            counts = ", ".join(f"{name} {count}" for name, count in record["counts"].items())
            written = ", ".join(record[k] for k in ("midi", "piano_roll") if k in record)
            print(f"{record['file']}: {record['num_notes']} notes: {counts} -> {written}")
        else:
            probs = ", ".join(f"{s['label']} {s['score']:.3f}" for s in record["scores"])
            print(f"{record['file']}: {record['label']} ({record['num_segments']} segments, {record['num_notes']} "
                  f"notes) [{probs}]")
    for entry in run.skipped:
        print(f"skipped: {entry['file']}: {entry['reason']}", file=sys.stderr)
    for error in run.errors:
        print(f"error: {error['error']}", file=sys.stderr)
    if args.json:
        print(f"wrote {atomic_write_json(args.json, run.to_dict())}")
    if run.errors:
        print(f"{len(run.errors)} of {run.num_inputs} inputs failed", file=sys.stderr)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
