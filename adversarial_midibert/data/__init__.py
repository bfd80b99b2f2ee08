"""Data pipeline: MIDI folders -> ``datasets.DatasetDict`` (builder, paper recipes, a user's folder + CSV, music21
corpus) -> batches (collators); built data sets are shared on the Hub (``data.publish``,
read back by ``data.download``)."""

from .builder import (
    BuildOptions,
    PieceRecord,
    build_dataset,
    describe_task,
    format_summary,
    list_midi_files,
    load_task_dataset,
    save,
    scan_midi_files,
    split_pieces,
    task_info_from_dataset,
)
from .collators import DataCollatorForOctuple, DataCollatorForOctupleMLM
from .download import download_task_dataset
from .folder import build_folder_dataset, resolve_folder
from .music21_corpus import convert_music21_corpus, default_cache_dir, select_music21_scores
from .publish import push_dataset_to_hub
from .recipes import RECIPES, build_recipe, resolve_recipe

__all__ = ["BuildOptions", "PieceRecord", "build_dataset", "save", "load_task_dataset", "describe_task",
           "task_info_from_dataset", "build_folder_dataset", "resolve_folder", "push_dataset_to_hub",
           "download_task_dataset", "format_summary", "list_midi_files", "scan_midi_files", "split_pieces",
           "DataCollatorForOctuple", "DataCollatorForOctupleMLM", "convert_music21_corpus", "default_cache_dir",
           "select_music21_scores", "RECIPES", "build_recipe", "resolve_recipe"]
