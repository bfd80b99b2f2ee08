"""Data pipeline: MIDI folders -> ``datasets.DatasetDict`` (builder, paper recipes, music21 corpus) -> batches (collators)."""

from .builder import (
    PieceRecord,
    build_dataset,
    format_summary,
    list_midi_files,
    load_task_dataset,
    print_summary,
    save,
    split_pieces,
)
from .collators import DataCollatorForOctuple, DataCollatorForOctupleMLM
from .music21_corpus import convert_music21_corpus, default_cache_dir, select_music21_scores
from .recipes import RECIPES, build_recipe, resolve_recipe

__all__ = [
    "PieceRecord",
    "build_dataset",
    "save",
    "load_task_dataset",
    "format_summary",
    "print_summary",
    "list_midi_files",
    "split_pieces",
    "DataCollatorForOctuple",
    "DataCollatorForOctupleMLM",
    "convert_music21_corpus",
    "default_cache_dir",
    "select_music21_scores",
    "RECIPES",
    "build_recipe",
    "resolve_recipe",
]
