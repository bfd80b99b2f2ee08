"""Figures a person looks at after a run: the piano roll of a prediction and the training curves.

Both write a PNG with matplotlib's ``Agg`` backend (no display needed). The piano roll is drawn as one image, not
one shape per note, so its cost is bounded by the picture's size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .constants import ATTRIBUTE_NAMES, OUTPUT_MARKER

__all__ = ["CLASS_COLOURS", "piano_roll_image", "plot_piano_roll", "plot_training_curves", "training_curve_series"]

# Colours of the tracks of a piano roll (melody, bridge, accompaniment first), then matplotlib's "tab" cycle.
CLASS_COLOURS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                 "tab:cyan")
_UNCLASSIFIED_COLOUR = "lightgrey"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int, software: str | None = None) -> Path:
    """Save aside, then rename: a reader never sees half a PNG. ``software``: the PNG's ``Software`` text."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": software} if software else None)
    plt.close(fig)
    tmp.replace(path)
    return path


def piano_roll_image(score, max_columns: int = 4000, unclassified_name: str = "unclassified") -> dict[str, Any]:
    """The picture :func:`plot_piano_roll` draws: an RGB array of at most ``max_columns`` time steps.

    The score is resampled to at most 16 steps per quarter note (a note shorter than a step still covers one); a
    longer piece is folded further, a column showing whether any of its steps sounds (:func:`_sounding_columns`).
    Each track gets a colour (``CLASS_COLOURS`` in track order, light grey for ``unclassified_name``); the first
    track is on top.

    Returns:
        ``{"image": (pitches, columns, 3) uint8 RGB array, white background; "low": lowest pitch (row 0);
        "quarters_per_column": float; "tracks": [(name, colour, notes), ...]}``.
    """
    from matplotlib.colors import to_rgb

    if "Tick" not in type(score).__name__:  # ScoreQuarter / ScoreSecond
        score = score.to("tick")
    if max_columns < 1:
        raise ValueError(f"max_columns must be >= 1, got {max_columns}")
    tpq = max(int(score.ticks_per_quarter), 1)
    quarters = max(score.end() / tpq, 1.0)
    steps_per_quarter = int(min(16, max(1, math.floor(max_columns / quarters))))
    small = score.resample(tpq=steps_per_quarter, min_dur=1)
    pitches = [t.notes.numpy()["pitch"] for t in small.tracks if t.note_num()]
    low, high = (int(min(p.min() for p in pitches)), int(max(p.max() for p in pitches)) + 1) if pitches else (60, 61)
    width = max(int(small.end()), 1)
    factor = max(1, math.ceil(width / max_columns))
    columns = math.ceil(width / factor)
    image = np.full((high - low, columns, 3), 255, dtype=np.uint8)  # uint8: matplotlib draws it faster than floats
    tracks, colour_index = [], 0
    for track in small.tracks:
        if track.name == unclassified_name:
            colour = _UNCLASSIFIED_COLOUR
        else:
            colour, colour_index = CLASS_COLOURS[colour_index % len(CLASS_COLOURS)], colour_index + 1
        tracks.append((track.name, colour, track.note_num()))
    for track, (_, colour, count) in reversed(list(zip(small.tracks, tracks))):  # the first track ends on top
        if not count:
            continue
        image[_sounding_columns(track.notes.numpy(), low, high, factor, columns)] = np.round(
            np.array(to_rgb(colour)) * 255)
    return {"image": image, "low": low, "quarters_per_column": factor / steps_per_quarter, "tracks": tracks}


def _sounding_columns(notes: dict[str, np.ndarray], low: int, high: int, factor: int, columns: int) -> np.ndarray:
    """``(pitches, columns)`` bool: whether a note sounds at each pitch within each column of ``factor`` steps; a
    +1/-1 at each note's first and last column, summed along time, so the cost never grows with the steps."""
    start = notes["time"].astype(np.int64)
    end = start + np.maximum(notes["duration"].astype(np.int64), 1)  # steps [start, end); resample keeps >= 1
    first, last = start // factor, (end - 1) // factor
    rows = notes["pitch"].astype(np.int64) - low
    edges = np.zeros((high - low, columns + 1), dtype=np.int64)
    np.add.at(edges, (rows, np.clip(first, 0, columns)), 1)
    np.add.at(edges, (rows, np.clip(last + 1, 0, columns)), -1)
    return np.cumsum(edges, axis=1)[:, :columns] > 0


def plot_piano_roll(score, path: str | Path, title: str | None = None, max_columns: int = 4000,
                    unclassified_name: str = "unclassified") -> Path:
    """Write a piano roll PNG of a ``symusic.Score`` at ``path`` and return it: one colour per track (e.g. the
    ``midi`` output of the token-classification pipeline), x in quarter notes, y in MIDI pitch, at most
    ``max_columns`` time steps (:func:`piano_roll_image`); a track named ``unclassified_name`` is light grey."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    roll = piano_roll_image(score, max_columns, unclassified_name)
    image, low = roll["image"], roll["low"]
    span = image.shape[1] * roll["quarters_per_column"]
    fig, ax = plt.subplots(figsize=(min(max(8.0, span / 16), 40.0), 5))
    ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest",
              extent=(0, span, low - 0.5, low + image.shape[0] - 0.5))
    ax.set_xlabel("time (quarter notes)")
    ax.set_ylabel("MIDI pitch")
    if title:
        ax.set_title(title)
    if roll["tracks"]:
        ax.legend(handles=[Patch(color=c, label=f"{n} ({k})") for n, c, k in roll["tracks"]], loc="upper right",
                  fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=100, software=OUTPUT_MARKER)


def training_curve_series(records: Sequence[Mapping[str, Any]], x: str = "step") -> dict[str, tuple[list, list]]:
    """The series :func:`plot_training_curves` draws: ``{key: (xs, ys)}`` for every overall loss, accuracy and F1
    (keys with ``loss``, ``accuracy`` or ``f1`` in the name), finite values only. Per-attribute series (a key ending
    in ``_pitch``, ``_velocity``...) are left out: they stay in the logs, and eight of them hid the overall curves."""
    per_attribute = tuple(f"_{name}" for name in ATTRIBUTE_NAMES)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        if not isinstance(record.get(x), (int, float)):
            continue
        for key, value in record.items():
            if key == x or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if ("loss" in key or "accuracy" in key or "f1" in key) and not key.endswith(per_attribute):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(float(record[x]))
                ys.append(float(value))
    return series


def plot_training_curves(records: Sequence[Mapping[str, Any]], path: str | Path, x: str = "step",
                         title: str | None = None) -> Path:
    """Write ``training_curves.png``: the overall losses on the left, accuracies / F1 on the right, against ``x``,
    each legend below its axes (:func:`training_curve_series` says which series).

    Args:
        records: one mapping per logged point (a line of ``train_log.jsonl``, an epoch of the fine-tuning history):
            the ``x`` value and any numeric series (``loss``, ``eval_loss``, ``eval_accuracy``...).
        path: the PNG file to write (returned).
        x: the key of the horizontal axis (``"step"`` or ``"epoch"``).
        title: figure title.

    Raises:
        ValueError: no record has ``x`` and a numeric series.
    """
    plt = _pyplot()
    series = training_curve_series(records, x)
    if not series:
        raise ValueError(f"no record has '{x}' and a loss or accuracy to plot")
    left = sorted(k for k in series if "loss" in k)
    right = sorted(k for k in series if k not in left)
    fig, axes = plt.subplots(1, 2 if right else 1, figsize=(11 if right else 6, 5), squeeze=False,
                             layout="constrained")
    for ax, keys, label in ((axes[0, 0], left, "loss"), *(((axes[0, 1], right, "accuracy / F1"),) if right else ())):
        for key in keys:
            xs, ys = series[key]
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if keys:  # below the axes, never over the curves
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=110)
