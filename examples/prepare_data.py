#!/usr/bin/env python
"""A data set from a paper recipe or a MIDI folder and a labels CSV, for `python examples/prepare_data.py ARGS`.

The code is `adversarial_midibert/data/prepare.py` (read it there); `adv-midibert prepare ARGS` runs the same.
"""

from adversarial_midibert.data.prepare import main

if __name__ == "__main__":
    main()
