#!/usr/bin/env python
"""Publish a trained Adversarial-MidiBERT folder to the Hugging Face Hub in one commit.

    python hub/push_to_hub.py OUTPUT_DIR --repo_id ORG/NAME [--private] [--revision BRANCH]
        [--commit_message MSG] [--dry_run DIR]

Uploads config.json, model.safetensors, the model code files (remote code), octuple_tokenizer.json and
README.md (the model card, written from the run's all_results.json when the folder has none). Optimizer
states, checkpoints and logs are never uploaded. The token comes from HF_TOKEN or the cached
`hf auth login`. `--dry_run DIR` writes exactly the files of the upload to DIR and makes no network call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from adversarial_midibert import hub_utils
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from adversarial_midibert import hub_utils


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="model folder written by save_pretrained (examples/*.py --output_dir)")
    parser.add_argument("--repo_id", required=True, help="target repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing); default main")
    parser.add_argument("--commit_message", default="Upload Adversarial-MidiBERT model", help="commit message")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the cached login)")
    parser.add_argument("--dry_run", type=Path, default=None, metavar="DIR",
                        help="write the files that would be uploaded to DIR instead of uploading")
    parser.add_argument("--base_model", default=None, help="pre-trained model id, for the card when it is written here")
    parser.add_argument("--training_command", default=None, help="the run's command line, for the card")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = hub_utils.push_folder_to_hub(
            args.output_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            token=args.token,
            commit_message=args.commit_message,
            dry_run_dir=args.dry_run,
            base_model=args.base_model,
            training_command=args.training_command,
        )
    except hub_utils.HubPublishError as error:
        print(f"push_to_hub: error: {error}", file=sys.stderr)
        return 2
    if args.dry_run is not None:
        files = sorted(p.relative_to(result).as_posix() for p in Path(result).rglob("*") if p.is_file())
        print(f"dry run: {len(files)} files written to {result} (nothing uploaded):")
        for name in files:
            print(f"  {name}")
    else:
        print(f"uploaded to {getattr(result, 'commit_url', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
