"""A default corpus that needs no download: scores shipped with the ``music21`` pip package, converted to MIDI.

:func:`convert_music21_corpus` selects a few hundred of music21's scores, balanced over the corpus folders that hold
enough pieces for a composer task (the label of a piece is its folder: a composer, or for ``ryansMammoth`` and
``trecento`` a collection or a period), converts them once to MIDI in worker processes with a timeout per score
(music21 parses, symusic writes the notes: much faster than music21's MIDI writer) and caches them in
:func:`default_cache_dir` (``<cache>/<composer>/<name>.mid``, and ``manifest.json`` listing the scores that failed
and why; a failure is reported, never fatal). Command line:
``python -m adversarial_midibert.data.music21_corpus --cache_dir m21_cache --num_workers 2``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_COMPOSERS", "CACHE_ENV", "Music21Score", "Music21CorpusReport", "default_cache_dir",
           "select_music21_scores", "convert_music21_corpus"]

CACHE_ENV = "ADV_MIDIBERT_MUSIC21_CACHE"
# corpus folder -> at most this many scores (chosen reproducibly); every class has >= 16 pieces.
DEFAULT_COMPOSERS: dict[str, int] = {
    "bach": 40,
    "palestrina": 40,
    "monteverdi": 40,
    "trecento": 40,
    "ryansMammoth": 40,
    "mozart": 16,
}
# Score formats (roman-numeral analyses ``.rntxt`` are left out). An abc file holding several tunes (an
# ``Opus``) is converted to its first tune.
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid", ".midi")
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Music21Score:
    """One score of the music21 corpus: its path, its label (corpus folder) and its path inside the corpus."""

    path: str
    composer: str
    relative_path: str

    @property
    def midi_name(self) -> str:
        """File name of the converted MIDI inside ``<cache>/<composer>/``."""
        stem = self.relative_path.split("/", 1)[-1]
        return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.rsplit(".", 1)[0]) + ".mid"


@dataclass
class Music21CorpusReport:
    """What :func:`convert_music21_corpus` produced.

    Attributes:
        files: converted MIDI files, as ``(midi_path, composer)`` pairs, sorted.
        failed: scores that could not be converted, as ``(relative_path, reason)`` pairs.
        converted_now: how many scores were converted by this call (0 when everything came from the cache).
        seconds: wall time of this call.
        cache_dir: the cache folder.
    """

    files: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    converted_now: int = 0
    seconds: float = 0.0
    cache_dir: str = ""

    def class_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(composer for _, composer in self.files).items()))

    def summary(self) -> str:
        lines = [
            f"music21 corpus in {self.cache_dir}: {len(self.files)} MIDI files, {len(self.failed)} failed, "
            f"{self.converted_now} converted now in {self.seconds:.1f} s",
            "  per composer: " + ", ".join(f"{k} {v}" for k, v in self.class_counts().items()),
        ]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def default_cache_dir() -> Path:
    """``$ADV_MIDIBERT_MUSIC21_CACHE`` or ``~/.cache/adversarial_midibert/music21_midi``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "adversarial_midibert" / "music21_midi"


def select_music21_scores(
    composers: Mapping[str, int | None] | None = None, seed: int = 0
) -> list[Music21Score]:
    """Choose scores of the music21 corpus, reproducibly, sorted by composer and path.

    Args:
        composers: corpus folder -> maximum number of scores (None: all of them); default :data:`DEFAULT_COMPOSERS`.
        seed: seed of the choice among the scores of a folder that has more than the maximum.
    """
    import music21
    from music21 import corpus

    composers = dict(DEFAULT_COMPOSERS if composers is None else composers)
    root = Path(music21.__file__).parent / "corpus"
    by_folder: dict[str, list[Music21Score]] = {name: [] for name in composers}
    for p in sorted(str(p) for p in corpus.getCorePaths()):
        try:
            rel = Path(p).relative_to(root).as_posix()
        except ValueError:
            continue
        folder = rel.split("/", 1)[0]
        if folder in by_folder and rel.lower().endswith(_SCORE_SUFFIXES):
            by_folder[folder].append(Music21Score(p, folder, rel))
    unknown = [name for name, scores in by_folder.items() if not scores]
    if unknown:
        raise ValueError(f"composers {unknown} have no score in the music21 corpus at {root}")
    rng = np.random.default_rng(seed)
    chosen: list[Music21Score] = []
    for name in sorted(by_folder):
        scores, cap = by_folder[name], composers[name]
        if cap is not None and len(scores) > cap:
            keep = np.sort(rng.choice(len(scores), size=cap, replace=False))
            scores = [scores[i] for i in keep]
        chosen.extend(scores)
    return chosen


class _ScoreTimeout(Exception):
    pass


def _on_alarm(signum, frame):  # pragma: no cover - called by the OS
    raise _ScoreTimeout()


TICKS_PER_QUARTER = 480
DEFAULT_VELOCITY = 80
DEFAULT_QPM = 100.0


def _score_to_symusic(score: Any):
    """Write a parsed music21 score as a symusic Score: one track per part, ties merged, tempo and metre kept.
    Grace notes (zero duration) get a 1/16-beat duration; chord symbols of lead sheets are left out."""
    from music21 import harmony
    from symusic import Note, Score, Tempo, TimeSignature, Track

    tpq = TICKS_PER_QUARTER
    out = Score(tpq)
    parts = list(score.parts) or [score]
    tracks = []
    for part in parts:
        onsets, durations, pitches, velocities = [], [], [], []
        open_ties: dict[int, int] = {}  # midi pitch -> index of the note a tie continues
        for element in part.recurse().notes:
            if isinstance(element, harmony.Harmony):
                continue
            offset = float(element.getOffsetInHierarchy(part))
            length = float(element.quarterLength)
            tie = element.tie.type if element.tie is not None else None
            velocity = element.volume.velocity if element.volume is not None else None
            for pitch in element.pitches:
                midi = int(pitch.midi)
                if tie in ("stop", "continue") and midi in open_ties:
                    i = open_ties[midi]
                    durations[i] = max(durations[i], offset + length - onsets[i])
                    if tie == "stop":
                        del open_ties[midi]
                    continue
                onsets.append(offset)
                durations.append(length)
                pitches.append(midi)
                velocities.append(int(velocity) if velocity else DEFAULT_VELOCITY)
                if tie == "start":
                    open_ties[midi] = len(onsets) - 1
        if not onsets:
            continue
        instrument = part.getInstrument(returnDefault=True) if hasattr(part, "getInstrument") else None
        program = getattr(instrument, "midiProgram", None) or 0
        track = Track(name=str(getattr(part, "partName", None) or ""), program=int(program), is_drum=False)
        on = np.round(np.asarray(onsets) * tpq).astype(np.int32)
        dur = np.maximum(np.round(np.asarray(durations) * tpq), tpq // 16).astype(np.int32)
        track.notes = Note.from_numpy(on, dur, np.clip(pitches, 0, 127).astype(np.int8),
                                      np.clip(velocities, 1, 127).astype(np.int8))
        tracks.append(track)
    out.tracks = tracks
    flat = parts[0].flatten()
    tempos = []
    for mark in flat.getElementsByClass("MetronomeMark"):
        qpm = mark.getQuarterBPM()
        if qpm:
            tempos.append(Tempo(int(round(float(mark.offset) * tpq)), float(qpm)))
    out.tempos = tempos or [Tempo(0, DEFAULT_QPM)]
    signatures = [
        TimeSignature(int(round(float(ts.offset) * tpq)), int(ts.numerator), int(ts.denominator))
        for ts in flat.getElementsByClass("TimeSignature")
    ]
    out.time_signatures = signatures or [TimeSignature(0, 4, 4)]
    return out


def _convert_one(args: tuple[str, str, int]) -> tuple[str, str | None]:
    """Worker: parse one score with music21 and write it as MIDI. Returns (output path, error or None)."""
    source, target, timeout = args
    use_alarm = timeout > 0 and hasattr(signal, "SIGALRM")
    if use_alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(int(timeout))
    try:
        from music21 import converter

        score = converter.parse(source)
        if hasattr(score, "scores"):  # an Opus (several tunes in one abc file): keep the first
            tunes = list(score.scores)
            if not tunes:
                return target, "no score in the file"
            score = tunes[0]
        midi = _score_to_symusic(score)
        if not midi.note_num():
            return target, "no notes"
        tmp = target + ".part"
        midi.dump_midi(tmp)
        os.replace(tmp, target)
        return target, None
    except _ScoreTimeout:
        return target, f"timed out after {timeout} s"
    except Exception as err:  # any music21 failure: reported, never fatal
        return target, f"{type(err).__name__}: {str(err)[:200]}"
    finally:
        if use_alarm:
            signal.alarm(0)


def convert_music21_corpus(
    cache_dir: str | os.PathLike | None = None,
    composers: Mapping[str, int | None] | None = None,
    scores: Sequence[Music21Score] | None = None,
    num_workers: int = 2,
    timeout: int = 60,
    seed: int = 0,
    retry_failed: bool = False,
) -> Music21CorpusReport:
    """Convert (once) the chosen music21 scores to MIDI in ``cache_dir`` and list them with their composer.

    Args:
        cache_dir: where the MIDI files go; default :func:`default_cache_dir`.
        composers: corpus folder -> maximum number of scores; default :data:`DEFAULT_COMPOSERS`.
        scores: an explicit list of scores (overrides ``composers``), e.g. a few for a test.
        num_workers: conversion processes (1 converts in this process, without timeout isolation).
        timeout: seconds allowed per score (0: no limit).
        seed: seed of the selection (see :func:`select_music21_scores`).
        retry_failed: convert again the scores that failed in an earlier call (by default they stay reported).

    Returns:
        A :class:`Music21CorpusReport`; its ``files`` hold only scores of this selection.
    """
    start = time.time()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if scores is None:
        scores = select_music21_scores(composers, seed=seed)
    manifest_path = cache / MANIFEST_NAME
    manifest = {"failed": {}}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("ignoring unreadable music21 cache manifest %s (%s)", manifest_path, err)
    previous_failures: dict[str, str] = dict(manifest.get("failed", {}))

    report = Music21CorpusReport(cache_dir=str(cache))
    jobs, targets = [], {}
    for score in scores:
        target = cache / score.composer / score.midi_name
        targets[str(target)] = score
        if target.is_file():
            continue
        if score.relative_path in previous_failures and not retry_failed:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((score.path, str(target), int(timeout)))

    if jobs:
        logger.info("converting %d music21 scores to MIDI with %d workers into %s", len(jobs), num_workers, cache)
        from tqdm.auto import tqdm

        bar = {"total": len(jobs), "desc": "converting music21 scores", "unit": "score"}
        if num_workers <= 1:
            results = [_convert_one(job) for job in tqdm(jobs, **bar)]
        else:
            ctx = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
            with ctx.Pool(num_workers, maxtasksperchild=20) as pool:
                results = list(tqdm(pool.imap_unordered(_convert_one, jobs, chunksize=1), **bar))
        report.converted_now = sum(error is None for _, error in results)
        for target, error in results:
            rel = targets[target].relative_path
            if error is None:
                previous_failures.pop(rel, None)
            else:
                previous_failures[rel] = error
    for target, score in targets.items():
        if Path(target).is_file():
            report.files.append((target, score.composer))
        elif score.relative_path in previous_failures:
            report.failed.append((score.relative_path, previous_failures[score.relative_path]))
    report.files.sort()
    report.failed.sort()
    manifest = {"failed": dict(sorted(previous_failures.items()))}
    atomic_write_json(manifest_path, manifest, indent=1)
    report.seconds = time.time() - start
    if report.failed:
        logger.warning("%d music21 scores could not be converted (see report.failed)", len(report.failed))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: convert the default selection and print the report."""
    parser = argparse.ArgumentParser(description="Convert the default music21 corpus selection to MIDI (cached).")
    parser.add_argument("--cache_dir", default=None, help=f"default: ${CACHE_ENV} or "
                                                          "~/.cache/adversarial_midibert/music21_midi")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=60, help="seconds per score")
    parser.add_argument("--retry_failed", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    report = convert_music21_corpus(args.cache_dir, num_workers=args.num_workers, timeout=args.timeout,
                                    retry_failed=args.retry_failed)
    print(report.summary())


if __name__ == "__main__":
    main()
