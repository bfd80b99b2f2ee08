"""The downstream tasks this project knows, in one place: the data set each uses, whether it labels pieces
(``sequence``) or notes (``token``), whether pitch shift suits it (key-independent), and the accuracies (%) the paper
and MidiBERT-Piano (its CP model; composer per segment) report for it. The data recipes
(:mod:`adversarial_midibert.data.recipes`), the model card, the fine-tuning script and the studies read it from here."""

from __future__ import annotations

from typing import Any

__all__ = ["TASKS", "PAPER_TASKS", "PAPER_ACCURACY", "MIDIBERT_PIANO_ACCURACY"]

TASKS: dict[str, dict[str, Any]] = {
    "composer": {"name": "Composer classification", "dataset_name": "Pianist8", "dataset_type": "pianist8",
                 "task_type": "sequence", "pitch_shift": True, "paper_accuracy": 97.92,
                 "midibert_piano_accuracy": 78.57},
    "emotion": {"name": "Emotion recognition", "dataset_name": "EMOPIA", "dataset_type": "emopia",
                "task_type": "sequence", "pitch_shift": True, "paper_accuracy": 79.46,
                "midibert_piano_accuracy": 67.89},
    "melody": {"name": "Melody extraction", "dataset_name": "POP909", "dataset_type": "pop909",
               "task_type": "token", "pitch_shift": False, "paper_accuracy": 92.68,
               "midibert_piano_accuracy": 96.37},
    "velocity": {"name": "Velocity prediction", "dataset_name": "POP909", "dataset_type": "pop909",
                 "task_type": "token", "pitch_shift": False, "paper_accuracy": 45.58,
                 "midibert_piano_accuracy": 51.63},
    "music21-composer": {"name": "Composer classification", "dataset_name": "music21 corpus",
                         "dataset_type": "music21-corpus", "task_type": "sequence", "pitch_shift": True},
}
PAPER_TASKS = tuple(name for name, task in TASKS.items() if "paper_accuracy" in task)
PAPER_ACCURACY = {name: TASKS[name]["paper_accuracy"] for name in PAPER_TASKS}
MIDIBERT_PIANO_ACCURACY = {name: TASKS[name]["midibert_piano_accuracy"] for name in PAPER_TASKS}
