#!/usr/bin/env python
"""Build a data set (tokenised, split by piece) for fine-tuning or pre-training, and optionally publish it.

A paper task's recipe::

    python examples/prepare_data.py --task melody --data_root ../shared/data --output_dir data/melody --num_proc 2

Your own folder of MIDI files and a CSV of labels (see ``adversarial_midibert.data.folder``)::

    python examples/prepare_data.py --midi_dir my_midis --labels labels.csv --label_column genre \\
        --split_column split --output_dir data/genre [--push_to_hub my-org/genre-octuple]

The output folder holds the splits as Arrow shards, ``build_report.json`` (every skipped file with its reason),
``task_info.json`` and the tokenizer; pass it to the training scripts' ``--dataset``. Memory stays bounded however
large the corpus, and a killed build resumes when the same command runs again. ``--push_to_hub ORG/NAME``
publishes it as a Hub dataset in one commit; the training scripts then take ``--dataset ORG/NAME``.
"""

from __future__ import annotations

import argparse
import logging
import time

from ..atomic_io import FolderLock
from ..command_line import command_line
from . import RECIPES, build_recipe, format_summary
from .builder import check_dataset_folder


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("a recipe")
    source.add_argument("--task", default=None,
                        help=f"a recipe ({', '.join(RECIPES)}); with --midi_dir, the task's name (default: the "
                             "folder's)")
    source.add_argument("--data_root", default=None, help="shared data folder (default: $ADV_MIDIBERT_DATA)")
    source.add_argument("--split_source", default=None, choices=["midibert", "emopia_song"],
                        help="emotion only: MidiBERT-Piano's split (default) or EMOPIA's song-level split")
    source.add_argument("--include_eval_pieces", action="store_true",
                        help="pretrain only: keep the downstream tasks' validation/test pieces")
    source.add_argument("--music21_cache_dir", default=None, help="music21 recipes: converted MIDI cache")
    own = parser.add_argument_group("your own folder")
    own.add_argument("--midi_dir", default=None, help="a folder of MIDI files (searched recursively)")
    own.add_argument("--labels", default=None, help="CSV of labels: one row per file (sequence) or per track (token)")
    own.add_argument("--task_type", default="sequence", choices=("sequence", "token"), help="one label per piece or "
                                                                                            "per note")
    own.add_argument("--label_column", default=None, help="CSV column of the class (default: label)")
    own.add_argument("--id_column", default=None, help="sequence: CSV column naming the file (default: the first)")
    own.add_argument("--track_column", default=None, help="token: CSV column naming the track (default: track)")
    own.add_argument("--label_names", default=None, help="class names in index order, comma-separated (default: "
                                                         "sorted)")
    split = own.add_mutually_exclusive_group()
    split.add_argument("--split_column", default=None, help="sequence: CSV column with train / valid / test")
    split.add_argument("--splits", default=None, help='JSON file {"train": [ids], "valid": [...], "test": [...]}')
    out = parser.add_argument_group("output")
    out.add_argument("--output_dir", required=True, help="where to save the dataset")
    out.add_argument("--overwrite_output_dir", action="store_true",
                     help="replace --output_dir even if it holds something other than a dataset (a model...)")
    out.add_argument("--max_files", type=int, default=None, help="tokenise at most this many pieces (quick runs)")
    out.add_argument("--num_proc", type=int, default=1, help="tokenising processes")
    out.add_argument("--max_seq_len", type=int, default=1024, help="rows per segment, BOS and EOS included")
    out.add_argument("--shard_size", type=int, default=256, help="pieces per shard file")
    out.add_argument("--num_shards", type=int, default=None,
                     help="exact number of training shards (e.g. a multiple of the number of training processes)")
    out.add_argument("--seed", type=int, default=0, help="seed of ratio splits and of --max_files")
    hub = parser.add_argument_group("Hub")
    hub.add_argument("--push_to_hub", default=None, metavar="ORG/NAME", help="publish the data set as this Hub dataset")
    hub.add_argument("--private", action="store_true", help="create the Hub dataset as private")
    hub.add_argument("--hub_token", default=None, help="Hub token (default: HF_TOKEN or the cached login)")
    args = parser.parse_args(argv)
    if (args.midi_dir is None) != (args.task in RECIPES):
        parser.error(f"give either --task with a recipe ({', '.join(RECIPES)}) or --midi_dir with --labels")
    if args.midi_dir is not None and args.labels is None:
        parser.error("--midi_dir needs --labels (a CSV file)")
    for name in ("max_files", "num_proc", "shard_size", "num_shards"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_seq_len < 3:
        parser.error(f"--max_seq_len must be >= 3 (BOS, one note, EOS), got {args.max_seq_len}")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Refuse early (before the build) a folder of another kind or one another run is writing.
    with FolderLock(args.output_dir):
        check_dataset_folder(args.output_dir, args.overwrite_output_dir)
        start = time.time()
        # written into --output_dir as it is built (a re-run of a killed build keeps its finished shards)
        common = dict(max_seq_len=args.max_seq_len, num_proc=args.num_proc, max_files=args.max_files, seed=args.seed,
                      output_dir=args.output_dir, shard_size=args.shard_size, num_shards=args.num_shards,
                      overwrite=args.overwrite_output_dir)
        if args.midi_dir is not None:
            from .folder import build_folder_dataset

            dataset = build_folder_dataset(
                args.midi_dir, args.labels, task_type=args.task_type, label_column=args.label_column,
                id_column=args.id_column, split_column=args.split_column, splits=args.splits,
                track_column=args.track_column, task=args.task,
                label_names=args.label_names.split(",") if args.label_names else None, **common,
            )
        else:
            dataset = build_recipe(args.task, data_root=args.data_root, split_source=args.split_source,
                                   exclude_eval_pieces=not args.include_eval_pieces,
                                   music21_cache_dir=args.music21_cache_dir, **common)
    print(format_summary(dataset))
    print(f"saved to {args.output_dir} in {time.time() - start:.1f} s")
    if args.push_to_hub:
        from .publish import push_dataset_to_hub

        command = command_line(prog or "python examples/prepare_data.py", argv)
        info = push_dataset_to_hub(args.output_dir, args.push_to_hub, private=args.private, token=args.hub_token,
                                   command=command)
        print(f"published to {getattr(info, 'commit_url', info)}")


if __name__ == "__main__":
    main()
