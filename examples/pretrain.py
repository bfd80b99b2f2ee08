#!/usr/bin/env python
"""Adversarial masked-LM pre-training, for `python examples/pretrain.py ARGS` or
`accelerate launch examples/pretrain.py ARGS`.

The code is `adversarial_midibert/training/pretrain.py` (read it there); `adv-midibert pretrain ARGS` runs the same.
"""

from adversarial_midibert.training.pretrain import main

if __name__ == "__main__":
    main()
