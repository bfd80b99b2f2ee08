#!/usr/bin/env python
"""Write (or rewrite) the model card README.md of a trained Adversarial-MidiBERT folder.

    python hub/model_card.py OUTPUT_DIR [--repo_id ORG/NAME] [--base_model ID] [--dataset NAME ...]
        [--task composer|emotion|melody|velocity|pretrain] [--training_command "..."]
        [--hyperparameter NAME=VALUE ...]

Results come from OUTPUT_DIR/all_results.json (keys like test_accuracy, test_f1_macro, task, dataset).
The template is hub/model_card_template.md (Jinja2, rendered by huggingface_hub.ModelCard).
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


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--hyperparameter expects NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip(), value.strip()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="model folder (holds config.json, maybe all_results.json)")
    parser.add_argument("--repo_id", default=None, help="Hub id shown in the loading example")
    parser.add_argument("--base_model", default=None, help="Hub id of the pre-trained model it was fine-tuned from")
    parser.add_argument("--dataset", action="append", default=None, help="training data set (repeatable)")
    parser.add_argument("--task", default=None, help="downstream task (default: all_results.json's 'task')")
    parser.add_argument("--training_command", default=None, help="the run's exact command line")
    parser.add_argument("--hyperparameter", action="append", type=_key_value, default=[], metavar="NAME=VALUE",
                        help="a training hyper-parameter to list (repeatable)")
    parser.add_argument("--license", default="mit", help="license of the weights (SPDX id)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        path = hub_utils.write_model_card(
            args.output_dir,
            repo_id=args.repo_id,
            base_model=args.base_model,
            datasets=args.dataset,
            task=args.task,
            training_command=args.training_command,
            hyperparameters=dict(args.hyperparameter),
            license=args.license,
        )
    except hub_utils.HubPublishError as error:
        print(f"model_card: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
