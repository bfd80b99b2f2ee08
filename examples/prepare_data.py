#!/usr/bin/env python
"""Build a task's dataset (tokenised, split by piece) and save it for fine-tuning or pre-training.

Example::

    python examples/prepare_data.py --task melody --data_root ../shared/data --output_dir data/melody --num_proc 2

Tasks: composer, emotion, melody, velocity, pretrain, music21-composer, music21-pretrain (see
``adversarial_midibert.data.recipes``). The output folder holds the ``datasets`` splits (``save_to_disk``),
``build_report.json``, ``task_info.json`` and ``octuple_tokenizer.json``; load it with
``adversarial_midibert.data.load_task_dataset``.
"""

from __future__ import annotations

import argparse
import logging
import time

from adversarial_midibert.data import RECIPES, build_recipe, format_summary, save


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=RECIPES, help="which recipe to build")
    parser.add_argument("--data_root", default=None, help="shared data folder (default: $ADV_MIDIBERT_DATA)")
    parser.add_argument("--output_dir", required=True, help="where to save the dataset")
    parser.add_argument("--max_files", type=int, default=None, help="tokenise at most this many pieces (quick runs)")
    parser.add_argument("--num_proc", type=int, default=1, help="tokenising processes")
    parser.add_argument("--max_seq_len", type=int, default=1024, help="rows per segment, BOS and EOS included")
    parser.add_argument("--split_source", default=None, choices=["midibert", "emopia_song"],
                        help="emotion only: MidiBERT-Piano's split (default) or EMOPIA's song-level split")
    parser.add_argument("--include_eval_pieces", action="store_true",
                        help="pretrain only: keep the downstream tasks' validation/test pieces")
    parser.add_argument("--cache_dir", default=None, help="datasets map cache folder")
    parser.add_argument("--music21_cache_dir", default=None, help="music21 recipes: converted MIDI cache")
    parser.add_argument("--seed", type=int, default=0, help="seed of ratio splits and of --max_files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.time()
    dataset = build_recipe(
        args.task,
        data_root=args.data_root,
        max_seq_len=args.max_seq_len,
        num_proc=args.num_proc,
        max_files=args.max_files,
        cache_dir=args.cache_dir,
        split_source=args.split_source,
        exclude_eval_pieces=not args.include_eval_pieces,
        music21_cache_dir=args.music21_cache_dir,
        seed=args.seed,
    )
    save(dataset, args.output_dir)
    print(format_summary(dataset))
    print(f"saved to {args.output_dir} in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
