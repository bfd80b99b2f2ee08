#!/usr/bin/env python
"""Publish a trained model folder to the Hugging Face Hub in one commit (or preview it with ``--dry_run DIR``).

    python hub/push_to_hub.py outputs/composer --repo_id my-org/adv-midibert-composer [--private] [--dry_run DIR]

The same command as ``adv-midibert push``; the work is done by ``adversarial_midibert.hub.push_folder_to_hub``.
"""

import sys

from adversarial_midibert.cli import push

if __name__ == "__main__":
    sys.exit(push(sys.argv[1:], prog="python hub/push_to_hub.py"))
