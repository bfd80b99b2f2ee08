"""The pre-training and fine-tuning loops (``pretrain``, ``finetune``) on one shared set-up (``setup``); run them with
``accelerate launch examples/pretrain.py ARGS`` or ``adv-midibert pretrain ARGS``. Needs the ``[train]`` extra."""
