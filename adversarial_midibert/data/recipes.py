"""The paper's tasks (and the music21 default corpus) as ready-made dataset recipes.

Each recipe reads the shared data layout (``POP909/``, ``EMOPIA/``, ``Pianist8/``, ``POP1K7/``, ``splits/``, see the
data folder's README) under a ``data_root`` and calls :func:`~adversarial_midibert.data.builder.build_dataset`:

- ``composer`` (sequence): Pianist8, 8 pianists (folder name), ``splits/pianist8.json``;
- ``emotion`` (sequence): EMOPIA, Q1..Q4 (file-name prefix); ``splits/emopia.json`` (MidiBERT-Piano's, which shares
  songs between splits) or, with ``split_source="emopia_song"``, EMOPIA's own song-level split;
- ``melody`` (token): POP909, per note: melody (track ``MELODY``), bridge (``BRIDGE``), accompaniment (``PIANO``),
  ``splits/pop909.json``;
- ``velocity`` (token): POP909, per note: six dynamics bins of the raw velocity (:data:`VELOCITY_BINS`), the same
  split; the velocity attribute is hidden from the model (``task_info["hidden_attributes"]``);
- ``pretrain``: POP1K7 + POP909 + Pianist8 + EMOPIA, by default without the downstream tasks' validation and test
  pieces; 2 % of the pieces for validation;
- ``music21-composer`` (sequence, label = corpus folder, 80 / 10 / 10) and ``music21-pretrain`` (90 / 10): the
  scores shipped with music21.

:func:`resolve_recipe` lists a recipe's files, labels and split without tokenising; :func:`build_recipe` builds it.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import DATA_ROOT_ENV
from .builder import PieceRecord, TokenLabelFn, build_dataset

__all__ = ["RECIPES", "VELOCITY_BINS", "VELOCITY_BIN_EDGES", "MELODY_TRACKS", "RecipeSpec", "resolve_recipe",
           "build_recipe", "resolve_data_root", "melody_token_labels", "velocity_token_labels", "velocity_class"]

RECIPES = ("composer", "emotion", "melody", "velocity", "pretrain", "music21-composer", "music21-pretrain")

# POP909 track name -> class of the melody task.
MELODY_TRACKS: dict[str, int] = {"MELODY": 0, "BRIDGE": 1, "PIANO": 2}
MELODY_LABELS = ["melody", "bridge", "accompaniment"]

# Velocity classes (MidiBERT-Piano's six dynamics bins, on the raw MIDI velocity 0..127):
# pp < 32 <= p < 48 <= mp < 64 <= mf < 80 <= f < 96 <= ff.
VELOCITY_BINS = ["pp", "p", "mp", "mf", "f", "ff"]
VELOCITY_BIN_EDGES = (32, 48, 64, 80, 96)

EMOTION_LABELS = ["Q1", "Q2", "Q3", "Q4"]


@dataclass
class RecipeSpec:
    """Everything a recipe needs for :func:`build_dataset` (its arguments of the same names), found without
    tokenising; ``extra_info`` goes into ``task_info``, ``missing_files`` (named by a split but absent) into the
    build report."""

    task: str
    task_type: str
    records: list[PieceRecord]
    splits: Any
    label_names: list[str] | None = None
    token_label_fn: TokenLabelFn | None = None
    hidden_attributes: list[str] = field(default_factory=list)
    extra_info: dict[str, Any] = field(default_factory=dict)
    missing_files: list[str] = field(default_factory=list)

    def build(self, tokenizer: Any = None, max_seq_len: int = 1024, extra_info: dict[str, Any] | None = None,
              **options: Any):
        """Build the ``DatasetDict`` (:func:`build_dataset`; ``options``: more ``BuildOptions`` fields) with
        ``tokenizer``, by default ``OctupleTokenizer(max_seq_len=max_seq_len)``; ``extra_info`` replaces the
        spec's."""
        if tokenizer is None:
            from ..tokenization_octuple import OctupleTokenizer

            tokenizer = OctupleTokenizer(max_seq_len=max_seq_len)
        return build_dataset(self.records, task_type=self.task_type, token_label_fn=self.token_label_fn,
                             splits=self.splits, label_names=self.label_names, hidden_attributes=self.hidden_attributes,
                             task=self.task, extra_info=self.extra_info if extra_info is None else extra_info,
                             tokenizer=tokenizer, **options)

    def split_piece_ids(self) -> dict[str, list[str]]:
        """The split file lists (only for recipes with an explicit split mapping)."""
        from .builder import split_pieces

        labels = [r.label for r in self.records] if self.task_type == "sequence" else None
        assignment, _, _ = split_pieces([r.piece_id for r in self.records], self.splits, labels)
        return assignment


# --------------------------------------------------------------------------------------- token labels
def melody_token_labels(score: Any, track_index: np.ndarray, note_index: np.ndarray) -> np.ndarray:
    """Melody-task labels: 0 for notes of the track named MELODY, 1 BRIDGE, 2 PIANO, -100 for any other track.

    Args:
        score: the symusic score the tokens come from.
        track_index: each token's source track (N,).
        note_index: each token's source note in its track (N,) (unused).
    """
    per_track = np.array([MELODY_TRACKS.get(t.name.strip().upper(), -100) for t in score.tracks] or [-100],
                         dtype=np.int64)
    return per_track[np.asarray(track_index, dtype=np.int64)]


def velocity_class(velocity: np.ndarray) -> np.ndarray:
    """Velocity class index (0 = pp ... 5 = ff) of raw MIDI velocities, using :data:`VELOCITY_BIN_EDGES`."""
    return np.searchsorted(np.asarray(VELOCITY_BIN_EDGES), np.asarray(velocity), side="right").astype(np.int64)


def velocity_token_labels(score: Any, track_index: np.ndarray, note_index: np.ndarray) -> np.ndarray:
    """Velocity-task labels: the dynamics bin of each token's source note's raw MIDI velocity.

    Args:
        score: the symusic score the tokens come from.
        track_index: each token's source track (N,).
        note_index: each token's source note in its track (N,).
    """
    track_index = np.asarray(track_index, dtype=np.int64)
    note_index = np.asarray(note_index, dtype=np.int64)
    velocity = np.zeros(len(track_index), dtype=np.int64)
    for t in np.unique(track_index):  # one vectorised gather per track
        sel = track_index == t
        velocity[sel] = np.asarray(score.tracks[int(t)].notes.numpy()["velocity"], dtype=np.int64)[note_index[sel]]
    return velocity_class(velocity)


# ------------------------------------------------------------------------------------------- helpers
def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """``data_root`` or the ``ADV_MIDIBERT_DATA`` environment variable; raises a clear error if neither is usable."""
    value = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    if value is None:
        raise ValueError(f"no data root: pass --data_root or set {DATA_ROOT_ENV}")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root}: not a folder")
    return root


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    return json.loads(path.read_text())


def _read_clip_csv(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EMOPIA split file not found")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "clip_name" not in rows[0]:
        raise ValueError(f"{path}: expected a 'clip_name' column")
    return [r["clip_name"] for r in rows]


def _records_from_split(
    split: Mapping[str, Sequence[str]], path_of: Callable[[str], Path], label_of: Callable[[str], Any] = lambda _: None
) -> tuple[list[PieceRecord], list[str]]:
    records, missing = [], []
    for members in split.values():
        for pid in members:
            path = path_of(pid)
            if path.is_file():
                records.append(PieceRecord(str(path), pid, label_of(pid)))
            else:
                missing.append(str(path))
    return records, missing


def emopia_song_id(clip_name: str) -> str:
    """EMOPIA song id of a clip file name: ``Q1_0vLPYiPN7qY_3.mid`` -> ``0vLPYiPN7qY``."""
    stem = Path(clip_name).stem
    match = re.match(r"^Q[1-4]_(.+)_\d+$", stem)
    return match.group(1) if match else stem


# ------------------------------------------------------------------------------------------- recipes
def _composer(root: Path, **_: Any) -> RecipeSpec:
    split = _load_json(root / "splits" / "pianist8.json")
    midi = root / "Pianist8" / "midi"
    records, missing = _records_from_split(split, lambda p: midi / p, lambda p: p.split("/", 1)[0])
    names = sorted({r.label for r in records})
    return RecipeSpec("composer", "sequence", records, split, names, missing_files=missing,
                      extra_info={"datasets": ["Pianist8"], "split_source": "splits/pianist8.json"})


def _emotion(root: Path, split_source: str | None = None, **_: Any) -> RecipeSpec:
    split_source = split_source or "midibert"
    midis = root / "EMOPIA" / "midis"
    if split_source == "midibert":
        split = _load_json(root / "splits" / "emopia.json")
        source = "splits/emopia.json"
    elif split_source == "emopia_song":
        folder = root / "EMOPIA" / "split"
        split = {name: _read_clip_csv(folder / f"{name}_clip.csv") for name in ("train", "val", "test")}
        source = "EMOPIA/split/*_clip.csv (song-level)"
    else:
        raise ValueError(f"split_source for emotion must be 'midibert' or 'emopia_song', got {split_source!r}")
    records, missing = _records_from_split(split, lambda p: midis / p, lambda p: Path(p).name[:2])
    bad = [r.piece_id for r in records if r.label not in EMOTION_LABELS]
    if bad:
        raise ValueError(f"EMOPIA clips without a Q1..Q4 prefix: {bad[:5]}")
    return RecipeSpec("emotion", "sequence", records, split, list(EMOTION_LABELS), missing_files=missing,
                      extra_info={"datasets": ["EMOPIA"], "split_source": source})


def _pop909(root: Path, task: str) -> RecipeSpec:
    split = _load_json(root / "splits" / "pop909.json")
    folder = root / "POP909"
    records, missing = _records_from_split(split, lambda p: folder / p / f"{p}.mid")
    info = {"datasets": ["POP909"], "split_source": "splits/pop909.json"}
    if task == "melody":
        info["label_source"] = "track name: MELODY -> 0 melody, BRIDGE -> 1 bridge, PIANO -> 2 accompaniment"
        return RecipeSpec("melody", "token", records, split, list(MELODY_LABELS), melody_token_labels,
                          missing_files=missing, extra_info=info)
    info["velocity_bin_edges"] = list(VELOCITY_BIN_EDGES)
    info["label_source"] = ("raw MIDI velocity of each note, bins pp <32 <= p <48 <= mp <64 <= mf <80 <= f <96 <= ff "
                            "(MidiBERT-Piano's)")
    return RecipeSpec("velocity", "token", records, split, list(VELOCITY_BINS), velocity_token_labels,
                      hidden_attributes=["velocity"], missing_files=missing, extra_info=info)


def eval_piece_paths(root: Path) -> set[str]:
    """Files (resolved paths) that are in a validation or test split of a downstream task.

    Pianist8 and POP909: their valid/test pieces. EMOPIA: every clip of a song that has a clip in the valid/test
    split of either EMOPIA split (MidiBERT-Piano's or the song-level one), so neither evaluation sees a song
    that was pre-trained on.
    """
    out: set[str] = set()
    pianist = _load_json(root / "splits" / "pianist8.json")
    for name in ("valid", "test"):
        out |= {str((root / "Pianist8" / "midi" / p).resolve()) for p in pianist.get(name, [])}
    pop = _load_json(root / "splits" / "pop909.json")
    for name in ("valid", "test"):
        out |= {str((root / "POP909" / p / f"{p}.mid").resolve()) for p in pop.get(name, [])}
    emopia = _load_json(root / "splits" / "emopia.json")
    clips = list(emopia.get("valid", [])) + list(emopia.get("test", []))
    song_split = root / "EMOPIA" / "split"
    for name in ("val", "test"):
        if (song_split / f"{name}_clip.csv").is_file():
            clips += _read_clip_csv(song_split / f"{name}_clip.csv")
    songs = {emopia_song_id(c) for c in clips}
    midis = root / "EMOPIA" / "midis"
    if midis.is_dir():
        out |= {str(p.resolve()) for p in midis.glob("*.mid") if emopia_song_id(p.name) in songs}
    return out


def _pretrain(root: Path, exclude_eval_pieces: bool = True, validation_ratio: float = 0.02, **_: Any) -> RecipeSpec:
    from .builder import list_midi_files

    sources = {
        "POP1K7": root / "POP1K7" / "midi_synchronized",
        "POP909": root / "POP909",
        "Pianist8": root / "Pianist8" / "midi",
        "EMOPIA": root / "EMOPIA" / "midis",
    }
    excluded = eval_piece_paths(root) if exclude_eval_pieces else set()
    records: list[PieceRecord] = []
    missing: list[str] = []
    n_excluded = 0
    for name, folder in sources.items():
        if not folder.is_dir():
            missing.append(str(folder))
            continue
        for path in list_midi_files(folder):
            if name == "POP909" and path.parent.name != path.stem:  # POP909/NNN/NNN.mid only (not versions/)
                continue
            if str(path.resolve()) in excluded:
                n_excluded += 1
                continue
            records.append(PieceRecord(str(path), f"{name}/{path.relative_to(folder).with_suffix('').as_posix()}"))
    return RecipeSpec("pretrain", "pretrain", records, (1 - validation_ratio, validation_ratio, 0.0),
                      missing_files=missing,
                      extra_info={"datasets": list(sources), "exclude_eval_pieces": exclude_eval_pieces,
                                  "excluded_eval_pieces": n_excluded})


def _music21(task: str, music21_cache_dir: str | None = None, num_proc: int = 2, **_: Any) -> RecipeSpec:
    from .music21_corpus import convert_music21_corpus

    report = convert_music21_corpus(music21_cache_dir, num_workers=max(1, int(num_proc)))
    records = [PieceRecord(path, f"{composer}/{Path(path).stem}", composer) for path, composer in report.files]
    info = {"datasets": ["music21 corpus"], "music21_cache_dir": report.cache_dir,
            "music21_failed": [f"{p}: {r}" for p, r in report.failed]}
    if task == "music21-composer":
        names = sorted({r.label for r in records})
        return RecipeSpec(task, "sequence", records, (0.8, 0.1, 0.1), names, extra_info=info)
    for r in records:
        r.label = None
    return RecipeSpec(task, "pretrain", records, (0.9, 0.1, 0.0), extra_info=info)


def resolve_recipe(
    task: str,
    data_root: str | os.PathLike | None = None,
    split_source: str | None = None,
    exclude_eval_pieces: bool = True,
    music21_cache_dir: str | None = None,
    num_proc: int = 2,
) -> RecipeSpec:
    """Files, labels and split of a recipe, without tokenising.

    Args:
        task: one of :data:`RECIPES`.
        data_root: the shared data folder (default ``$ADV_MIDIBERT_DATA``); not needed by the music21 recipes.
        split_source: emotion only: ``"midibert"`` (default, ``splits/emopia.json``) or ``"emopia_song"``.
        exclude_eval_pieces: pretrain only: leave out the downstream tasks' validation and test pieces.
        music21_cache_dir: music21 recipes: cache of the converted MIDI files.
        num_proc: music21 recipes: conversion workers.
    """
    if task not in RECIPES:
        raise ValueError(f"unknown task {task!r}; expected one of {RECIPES}")
    if split_source is not None and task != "emotion":
        raise ValueError(f"split_source is only defined for the emotion task, not {task!r}")
    if task.startswith("music21"):
        return _music21(task, music21_cache_dir=music21_cache_dir, num_proc=num_proc)
    root = resolve_data_root(data_root)
    if task == "composer":
        return _composer(root)
    if task == "emotion":
        return _emotion(root, split_source=split_source)
    if task in ("melody", "velocity"):
        return _pop909(root, task)
    return _pretrain(root, exclude_eval_pieces=exclude_eval_pieces)


def build_recipe(
    task: str,
    data_root: str | os.PathLike | None = None,
    tokenizer: Any = None,
    max_seq_len: int = 1024,
    num_proc: int = 1,
    max_files: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    split_source: str | None = None,
    exclude_eval_pieces: bool = True,
    music21_cache_dir: str | None = None,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    shard_size: int = 256,
    num_shards: int | None = None,
    overwrite: bool = False,
):
    """Build a recipe's ``DatasetDict`` (:meth:`RecipeSpec.build` of :func:`resolve_recipe`).

    Args:
        task, data_root, split_source, exclude_eval_pieces, music21_cache_dir: see :func:`resolve_recipe`.
        tokenizer: an ``OctupleTokenizer``; default ``OctupleTokenizer(max_seq_len=max_seq_len)``.
        max_seq_len: segment length (rows with BOS/EOS) of the default tokenizer.
        num_proc: tokenising (and music21 conversion) processes.
        max_files, cache_dir, seed, output_dir, shard_size, num_shards, overwrite: see
            :class:`~adversarial_midibert.data.builder.BuildOptions`.
    """
    spec = resolve_recipe(task, data_root, split_source, exclude_eval_pieces, music21_cache_dir, num_proc)
    return spec.build(tokenizer, max_seq_len, seed=seed, num_proc=num_proc, max_files=max_files, cache_dir=cache_dir,
                      output_dir=output_dir, shard_size=shard_size, num_shards=num_shards, overwrite=overwrite,
                      report_extra={"missing_files": spec.missing_files} if spec.missing_files else None)
