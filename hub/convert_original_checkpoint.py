#!/usr/bin/env python
"""Convert a checkpoint of the authors' reference code into a Hub-ready model folder.

    python hub/convert_original_checkpoint.py --checkpoint ckpt.pt --dictionary Octuple.pkl --task mlm \
        --output_dir converted/

The same command as ``adv-midibert convert``; the work is done by ``adversarial_midibert.hub.convert``
(the key and token mapping is described in docs/method.md, section 6).
"""

import sys

from adversarial_midibert.hub.convert import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python hub/convert_original_checkpoint.py"))
