#!/usr/bin/env python
"""Write (or rewrite) the model card ``README.md`` of a trained folder from its ``all_results.json``.

    python hub/model_card.py outputs/composer --repo_id my-org/adv-midibert-composer

The same command as ``adv-midibert card``; the card comes from ``adversarial_midibert.hub.write_model_card`` and
the template ``adversarial_midibert/hub/model_card_template.md``.
"""

import sys

from adversarial_midibert.cli import card

if __name__ == "__main__":
    sys.exit(card(sys.argv[1:], prog="python hub/model_card.py"))
