"""A tiny model configuration shared by the model, remote-code and Hub tests (fast on a 2-core CPU)."""

from __future__ import annotations

from adversarial_midibert import AdvMidiBertConfig

TINY_VOCAB_SIZES = [12, 20, 9, 30, 15, 10, 6, 11]


def tiny_config(**overrides) -> AdvMidiBertConfig:
    """Hidden 32, 2 layers, 2 heads, 40 positions, 3 labels; keyword arguments override any field."""
    values = dict(
        vocab_sizes=TINY_VOCAB_SIZES,
        attribute_embedding_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        masker_hidden_size=16,
        classifier_hidden_size=16,
        pooling_attention_size=8,
        pooling_num_views=2,
        num_labels=3,
    )
    values.update(overrides)
    return AdvMidiBertConfig(**values)
