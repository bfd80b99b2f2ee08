"""The test suite's tiny model: the ``tiny`` preset (``adversarial_midibert.presets``, the one home of its shape)
made narrower still for a 2-core CPU, with a small vocabulary, small heads and 40 positions; and folders and rows made
with it."""

from __future__ import annotations

from adversarial_midibert import AdvMidiBertConfig
from adversarial_midibert.presets import preset_config_kwargs

TINY_VOCAB_SIZES = [12, 20, 9, 30, 15, 10, 6, 11]
# The encoder's sizes: the tiny preset's layers and heads at half its width (hidden 32, feed-forward 64).
TINY_SIZES = {**preset_config_kwargs("tiny"), "hidden_size": 32, "intermediate_size": 64, "attribute_embedding_size": 8,
              "max_position_embeddings": 40}


def tiny_config(**overrides) -> AdvMidiBertConfig:
    """Hidden 32, 2 layers, 2 heads, 40 positions, 3 labels; keyword arguments override any field."""
    values = dict(TINY_SIZES, vocab_sizes=TINY_VOCAB_SIZES, masker_hidden_size=16, classifier_hidden_size=16,
                  pooling_attention_size=8, pooling_num_views=2, num_labels=3)
    values.update(overrides)
    return AdvMidiBertConfig(**values)


def tiny_finetuned_folder(folder, token: bool, label_names, max_seq_len: int = 64, **config_extra):
    """A randomly initialised tiny fine-tuned folder (config, weights, code, tokenizer), as finetune.py writes it,
    with the vocabulary of the default Octuple tokenizer so that real MIDI files go through it."""
    import torch

    from adversarial_midibert import (
        AdvMidiBertForSequenceClassification,
        AdvMidiBertForTokenClassification,
        OctupleTokenizer,
    )

    tokenizer = OctupleTokenizer(max_seq_len=max_seq_len, warn=False)
    config = tiny_config(
        vocab_sizes=list(tokenizer.vocab_sizes), num_hidden_layers=1, attribute_embedding_size=16,
        max_position_embeddings=max_seq_len, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)}, **config_extra,
    )
    torch.manual_seed(0)
    model_class = AdvMidiBertForTokenClassification if token else AdvMidiBertForSequenceClassification
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_segment_rows(lengths, vocab_sizes=TINY_VOCAB_SIZES, first_segment_id: int = 0, seed: int = 0):
    """Dataset rows (``input_ids`` (L, 8) with BOS/EOS rows, ``attention_mask``, ``segment_id``) of random notes, one
    per length: what the collators take."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for i, length in enumerate(lengths):
        ids = np.stack([rng.integers(4, v, length) for v in vocab_sizes], axis=-1)
        ids[0], ids[-1] = 1, 2  # BOS, EOS
        rows.append({"input_ids": ids, "attention_mask": np.ones(length, dtype=np.int64),
                     "segment_id": first_segment_id + i})
    return rows


def tiny_pretrained_folder(folder, max_seq_len: int = 64):
    """A randomly initialised tiny masked-LM folder (config, weights, code, tokenizer), as pretrain.py writes it,
    with the vocabulary of the default Octuple tokenizer."""
    import torch

    from adversarial_midibert import AdvMidiBertForMaskedLM, OctupleTokenizer

    tokenizer = OctupleTokenizer(max_seq_len=max_seq_len, warn=False)
    config = tiny_config(vocab_sizes=list(tokenizer.vocab_sizes), num_hidden_layers=1, attribute_embedding_size=16,
                         max_position_embeddings=max_seq_len)
    torch.manual_seed(0)
    AdvMidiBertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
