"""AdvMidiBertConfig: defaults, validation errors and save/load round trips."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

import adversarial_midibert  # noqa: F401  (registers the Auto classes)
from adversarial_midibert import AdvMidiBertConfig
from adversarial_midibert.constants import ATTRIBUTE_NAMES, BOS_ID, EOS_ID, MASK_ID, PAD_ID

from tiny_models import TINY_SIZES, tiny_config


def _settings(config: AdvMidiBertConfig) -> dict:
    """The config's dict without where it was loaded from."""
    values = config.to_dict()
    values.pop("_name_or_path", None)
    return values


def test_defaults_are_bert_base_with_relative_positions():
    config = AdvMidiBertConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.intermediate_size == 3072
    assert config.position_embedding_type == "relative_key_query"
    assert config.max_position_embeddings == 1024
    assert config.attribute_embedding_size == 256
    assert (config.pooling_attention_size, config.pooling_num_views) == (128, 4)
    assert tuple(config.attribute_names) == ATTRIBUTE_NAMES
    assert len(config.vocab_sizes) == 8
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.mask_token_id) == (
        PAD_ID,
        BOS_ID,
        EOS_ID,
        MASK_ID,
    )
    assert config.tie_word_embeddings is False
    assert config.model_type == "adv_midibert"


def test_default_vocab_sizes_match_default_tokenizer():
    pytest.importorskip("miditok")
    from adversarial_midibert import OctupleTokenizer

    tokenizer = OctupleTokenizer()
    assert list(tokenizer.attribute_names) == list(ATTRIBUTE_NAMES)
    assert list(AdvMidiBertConfig().vocab_sizes) == list(tokenizer.vocab_sizes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(hidden_size=30, num_attention_heads=4), "divisible"),
        (dict(position_embedding_type="rotary"), "position_embedding_type"),
        (dict(vocab_sizes=[10] * 7), "8 sizes"),
        (dict(attribute_names=["a"] * 8), "distinct"),
        (dict(attribute_names=list("abcdefg")), "same length"),
        (dict(vocab_sizes=[10, 10, 10, 4, 10, 10, 10, 10]), "'pitch'"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_hidden_layers=-1), "num_hidden_layers"),
        (dict(attribute_embedding_size=0), "attribute_embedding_size"),
        (dict(pooling_num_views=0), "pooling_num_views"),
        (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
        (dict(attention_probs_dropout_prob=-0.1), "attention_probs_dropout_prob"),
        (dict(masker_dropout=1.5), "masker_dropout"),
        (dict(mask_token_id=99), "mask_token_id"),
        (dict(mask_token_id=0), "distinct"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_save_load_round_trip(tmp_path):
    config = tiny_config(
        vocab_sizes=[20, 21, 22, 23, 24, 25, 26, 27],
        position_embedding_type="absolute",
        num_labels=3,
        id2label={0: "melody", 1: "bridge", 2: "accompaniment"},
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "adv_midibert"
    assert saved["vocab_sizes"] == [20, 21, 22, 23, 24, 25, 26, 27]

    loaded = AdvMidiBertConfig.from_pretrained(tmp_path)
    assert _settings(loaded) == _settings(config)
    assert loaded.id2label == {0: "melody", 1: "bridge", 2: "accompaniment"}
    assert loaded.num_labels == 3

    auto_loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(auto_loaded, AdvMidiBertConfig)
    assert _settings(auto_loaded) == _settings(config)
    assert AdvMidiBertConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_equality_compares_all_attributes():
    assert tiny_config() == tiny_config()
    assert tiny_config() != tiny_config(hidden_size=64)


def test_auto_config_for_model_type():
    config = AutoConfig.for_model("adv_midibert", **TINY_SIZES)
    assert isinstance(config, AdvMidiBertConfig)
    assert config.hidden_size == TINY_SIZES["hidden_size"]
