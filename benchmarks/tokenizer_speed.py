#!/usr/bin/env python
"""Speed of the vectorised Octuple encoder against miditok's own, on real MIDI files.

Samples ``--num_files`` files evenly from POP909, Pianist8, EMOPIA and POP1K7 (or ``--datasets``), parses them
once with symusic, then times, on one core:

* ``OctupleTokenizer.encode_score`` on the parsed scores (best of ``--repeats`` passes),
* miditok's ``Octuple.encode`` on the same scores (one pass; same configuration, bar limit high enough),
* parsing (``symusic.Score(path)``), so that both figures are also given parsing included.

It prints notes per second of each, the ratio, and how many files gave identical ids in both.

Example::

    python -m benchmarks.tokenizer_speed --data_root ../shared/data --num_files 200 --output
    results/tokenizer-speed.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from adversarial_midibert.constants import DATA_ROOT_ENV

PATTERNS = {
    "POP909": "POP909/*/*.mid",
    "Pianist8": "Pianist8/midi/*/*.mid",
    "EMOPIA": "EMOPIA/midis/*.mid",
    "POP1K7": "POP1K7/midi_synchronized/*/*.mid",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data_root",
        type=Path,
        default=os.environ.get(DATA_ROOT_ENV),
        help=f"folder holding POP909/, Pianist8/, EMOPIA/, POP1K7/ (default: ${DATA_ROOT_ENV})",
    )
    parser.add_argument("--num_files", type=int, default=100, help="files to sample in all (default 100)")
    parser.add_argument(
        "--datasets", nargs="+", default=list(PATTERNS), choices=list(PATTERNS), help="data sets to sample from"
    )
    parser.add_argument("--repeats", type=int, default=3, help="passes of our encoder; the best is kept")
    parser.add_argument("--seed", type=int, default=0, help="seed of the file sample")
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file (results/...)")
    args = parser.parse_args(argv)
    if args.data_root is None:
        parser.error(f"--data_root is required (or set {DATA_ROOT_ENV})")
    if not args.data_root.is_dir():
        parser.error(f"--data_root {args.data_root}: not a folder")
    if args.num_files < 1:
        parser.error("--num_files must be >= 1")
    return args


def sample_files(root: Path, datasets: list[str], num_files: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    per_set = max(num_files // len(datasets), 1)
    files: list[Path] = []
    for name in datasets:
        found = sorted(root.glob(PATTERNS[name]))
        if not found:
            print(f"warning: no files for {name} under {root}", file=sys.stderr)
            continue
        pick = rng.choice(len(found), size=min(per_set, len(found)), replace=False)
        files.extend(found[i] for i in sorted(pick))
    return files[:num_files]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from miditok import Octuple

    from adversarial_midibert.tokenization_octuple import MidiReadError, OctupleTokenizer, default_tokenizer_config
    from benchmarks.results_file import ResultsFile

    results = ResultsFile(args.output, {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    tokenizer = OctupleTokenizer(warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = Octuple(default_tokenizer_config(max_bar_embedding=1_000_000))

    files = sample_files(args.data_root, args.datasets, args.num_files, args.seed)
    scores, skipped = [], 0
    start = time.perf_counter()
    for path in files:
        try:
            scores.append(tokenizer.load_score(path)[0])
        except MidiReadError as err:
            skipped += 1
            print(f"skipped: {err}", file=sys.stderr)
    parse_s = time.perf_counter() - start
    if not scores:
        raise SystemExit("no readable file in the sample")

    ours_s = float("inf")
    for _ in range(max(args.repeats, 1)):
        start = time.perf_counter()
        ours = [tokenizer.encode_score(score) for score in scores]
        ours_s = min(ours_s, time.perf_counter() - start)
    notes = sum(len(ids) for ids in ours)

    perm = list(tokenizer.attribute_permutation)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = [reference.encode(score) for score in scores]
    miditok_s = time.perf_counter() - start
    identical = sum(
        np.array_equal(ids, np.asarray(seq.ids, dtype=np.int64).reshape(-1, 8)[:, perm])
        for ids, seq in zip(ours, theirs, strict=True)
    )

    print(f"files: {len(scores)} ({', '.join(args.datasets)}; {skipped} unreadable skipped), notes: {notes}")
    print(f"identical ids to miditok: {identical}/{len(scores)} files")
    print(f"{'':28s}{'excluding parsing':>20s}{'including parsing':>20s}")
    print(f"{'OctupleTokenizer notes/s':28s}{notes / ours_s:20,.0f}{notes / (ours_s + parse_s):20,.0f}")
    print(f"{'miditok Octuple notes/s':28s}{notes / miditok_s:20,.0f}{notes / (miditok_s + parse_s):20,.0f}")
    print(f"{'ratio (ours / miditok)':28s}{miditok_s / ours_s:20.1f}{(miditok_s + parse_s) / (ours_s + parse_s):20.1f}")
    print(f"{'symusic parsing notes/s':28s}{notes / parse_s:20,.0f}")
    results.write(files=len(scores), unreadable=skipped, notes=notes, identical_to_miditok=int(identical),
                  seconds={"ours": ours_s, "miditok": miditok_s, "parsing": parse_s},
                  notes_per_second={"ours": notes / ours_s, "miditok": notes / miditok_s, "parsing": notes / parse_s,
                                    "ours_with_parsing": notes / (ours_s + parse_s),
                                    "miditok_with_parsing": notes / (miditok_s + parse_s)},
                  ratio={"excluding_parsing": miditok_s / ours_s,
                         "including_parsing": (miditok_s + parse_s) / (ours_s + parse_s)})


if __name__ == "__main__":
    main()
