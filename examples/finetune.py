#!/usr/bin/env python
"""Fine-tuning on a downstream task, for `python examples/finetune.py ARGS` or
`accelerate launch examples/finetune.py ARGS`.

The code is `adversarial_midibert/training/finetune.py` (read it there); `adv-midibert finetune ARGS` runs the same.
"""

from adversarial_midibert.training.finetune import main

if __name__ == "__main__":
    main()
