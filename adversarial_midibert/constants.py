"""Names and ids shared by the tokenizer, the data pipeline and the training code. The model files do not import it
(they carry the same facts in the config, as Hub remote code); the tokenizer's remote code does, so it imports nothing.
"""

from __future__ import annotations

# Attribute order of every token row (the reference code's order).
ATTRIBUTE_NAMES = ("bar", "position", "program", "pitch", "duration", "velocity", "time_signature", "tempo")
BAR, POSITION, PROGRAM, PITCH, DURATION, VELOCITY, TIME_SIGNATURE, TEMPO = range(8)
NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)

# miditok puts the special tokens first in every attribute vocabulary, in this order.
PAD_ID, BOS_ID, EOS_ID, MASK_ID = 0, 1, 2, 3
NUM_SPECIAL_TOKENS = 4

# File written by OctupleTokenizer.save_pretrained (not "tokenizer.json", which AutoTokenizer
# would try to read as a fast text tokenizer).
TOKENIZER_FILE_NAME = "octuple_tokenizer.json"
# transformers' standard tokenizer config: names the class and its ``auto_map`` for AutoTokenizer.
TOKENIZER_CONFIG_FILE_NAME = "tokenizer_config.json"

# Label id that losses and metrics ignore (PyTorch's cross-entropy default).
IGNORE_INDEX = -100

# What counts as a MIDI file in a folder; compare with ``path.suffix.lower()``.
MIDI_SUFFIXES = (".mid", ".midi", ".smf")

# A data set folder: its splits, the task description, the build report and the index of its Arrow shards.
SPLIT_NAMES = ("train", "validation", "test")
TASK_INFO_NAME = "task_info.json"
BUILD_REPORT_NAME = "build_report.json"
SHARD_INDEX_NAME = "shards.json"

# Environment variable naming the shared real-data folder (POP909, EMOPIA, Pianist8, POP1K7...).
DATA_ROOT_ENV = "ADV_MIDIBERT_DATA"
# What marks a file written by `adv-midibert predict` (a MIDI marker event; a PNG's "Software" text): only such files
# are skipped as outputs in an input folder, or replaced by a later run.
OUTPUT_MARKER = "written by adversarial-midibert predict"
