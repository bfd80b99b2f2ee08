"""The example scripts, read like ``transformers``' ``run_*_no_trainer.py``; run them as files
(``python examples/finetune.py ...``, ``accelerate launch examples/pretrain.py ...``) or, once the package is
installed, through the ``adv-midibert`` command, which imports them as ``adversarial_midibert.examples``."""
