#!/usr/bin/env python
"""Predictions for MIDI files with a fine-tuned model, for `python examples/predict.py ARGS`.

The code is `adversarial_midibert/predict.py` (read it there); `adv-midibert predict ARGS` runs the same.
"""

import sys

from adversarial_midibert.predict import main

if __name__ == "__main__":
    sys.exit(main())
