"""Figures: the piano roll stays bounded for big files and puts notes in place; the training curves."""

from __future__ import annotations

import numpy as np
import pytest
import symusic

from adversarial_midibert.visualization import (
    CLASS_COLOURS,
    piano_roll_image,
    plot_training_curves,
    training_curve_series,
)


def test_piano_roll_image_is_bounded_and_in_place():
    """A 120,000-note score gives a picture of at most max_columns steps (its cost does not grow with the notes),
    and a note shows at its pitch and time in its track's colour."""
    from matplotlib.colors import to_rgb

    rng = np.random.default_rng(0)
    n = 120_000
    score = symusic.Score(480)
    tracks = []
    for name in ("melody", "accompaniment"):
        track = symusic.Track(name=name, program=0)
        time = np.sort(rng.integers(0, 480 * 30_000, n // 2)).astype(np.int32)
        track.notes = symusic.Note.from_numpy(time, np.full(n // 2, 120, np.int32),
                                              rng.integers(40, 80, n // 2).astype(np.int8),
                                              np.full(n // 2, 80, np.int8))
        tracks.append(track)
    marker = symusic.Track(name="marker", program=0)
    marker.notes.append(symusic.Note(480 * 15_000, 480 * 8, 100, 80))  # quarter 15,000, pitch 100
    score.tracks = [marker, *tracks]
    roll = piano_roll_image(score, max_columns=2000)
    image = roll["image"]
    assert image.shape[1] <= 2000 and image.shape[0] == 100 - 40 + 1
    column = int(15_004 / roll["quarters_per_column"])
    red = tuple(int(round(255 * c)) for c in to_rgb(CLASS_COLOURS[0]))
    assert tuple(image[100 - roll["low"], column]) == red  # the first track, on top
    assert tuple(image[100 - roll["low"], 0]) == (255, 255, 255)
    assert [t[0] for t in roll["tracks"]] == ["marker", "melody", "accompaniment"]


def test_training_curves_plot_losses_and_accuracies(tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "eval_loss": 1.2 / (e + 1), "eval_accuracy": 0.5 + e / 10,
                "eval_f1_macro": 0.4 + e / 10, "num_eval_scored": 12, "task": "composer"} for e in range(3)]
    path = plot_training_curves(history, tmp_path / "curves" / "training_curves.png", x="epoch", title="composer")
    assert path.read_bytes()[:4] == b"\x89PNG" and not list(path.parent.glob(".*.tmp"))
    steps = [{"step": 1, "loss": 3.0, "masker_loss": 0.2}, {"step": 2, "loss": float("nan")},
             {"step": 2, "eval_loss": 2.5, "eval_accuracy": 0.1}]
    assert plot_training_curves(steps, tmp_path / "steps.png").is_file()
    with pytest.raises(ValueError, match="no record has 'step'"):
        plot_training_curves([{"epoch": 0, "loss": 1.0}], tmp_path / "none.png")


def test_training_curves_draw_the_overall_figures_not_one_per_attribute():
    record = {"step": 1, "loss": 2.0, "eval_loss": 2.2, "eval_accuracy": 0.4, "eval_accuracy_pitch": 0.3,
              "eval_accuracy_velocity": 0.2, "eval_run_masking_accuracy_bar": 0.9, "learning_rate": 1e-3}
    assert sorted(training_curve_series([record])) == ["eval_accuracy", "eval_loss", "loss"]


LONG_PIECE = r"""
import resource, sys
import symusic
from adversarial_midibert.visualization import piano_roll_image, plot_piano_roll

score = symusic.Score(96)  # two notes 16 M quarter notes apart: a 50-byte MIDI file
track = symusic.Track(name="melody", program=0)
track.notes.append(symusic.Note(0, 96, 60, 80))
track.notes.append(symusic.Note(16_000_000 * 96, 96, 72, 80))
score.tracks.append(track)
with open("/proc/self/statm") as statm:
    used = int(statm.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 200 * 2**20, resource.RLIM_INFINITY))  # 200 MiB more than now
roll = piano_roll_image(score)
plot_piano_roll(score, sys.argv[1])
print("drawn", roll["image"].shape, flush=True)
"""


def test_a_piano_roll_costs_the_picture_not_the_piece_s_length(tmp_path):
    """Memory follows the picture (at most max_columns columns), not the piece's duration: a 50-byte file whose two
    notes are 16 M quarter notes apart is drawn within 200 MiB (the whole-duration roll needed gigabytes)."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("needs /proc and RLIMIT_AS")
    done = subprocess.run([sys.executable, "-c", LONG_PIECE, str(tmp_path / "roll.png")], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0 and "drawn (13, " in done.stdout, done.stderr[-2000:]
    assert (tmp_path / "roll.png").stat().st_size > 0
