"""Adversarial-MidiBERT for the Hugging Face ecosystem.

Importing this package registers the configuration and every model class with the ``transformers``
Auto classes (``AutoConfig``, ``AutoModel``, ``AutoModelForMaskedLM``,
``AutoModelForSequenceClassification``, ``AutoModelForTokenClassification``), and for Hub remote code:
``save_pretrained`` writes ``configuration_adv_midibert.py`` and ``modeling_adv_midibert.py`` beside the weights,
with an ``auto_map`` listing every Auto class, so the folder loads with ``trust_remote_code=True`` where this package
is not installed.
"""

__version__ = "0.1.0"

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_adv_midibert import AdvMidiBertConfig
from .modeling_adv_midibert import (
    AdvMidiBertForMaskedLM,
    AdvMidiBertForSequenceClassification,
    AdvMidiBertForTokenClassification,
    AdvMidiBertMaskedLMOutput,
    AdvMidiBertModel,
    AdvMidiBertPreTrainedModel,
    AdvMidiBertSequenceClassifierOutput,
)

_AUTO_CLASSES = (
    (AutoModel, AdvMidiBertModel),
    (AutoModelForMaskedLM, AdvMidiBertForMaskedLM),
    (AutoModelForSequenceClassification, AdvMidiBertForSequenceClassification),
    (AutoModelForTokenClassification, AdvMidiBertForTokenClassification),
)

AutoConfig.register(AdvMidiBertConfig.model_type, AdvMidiBertConfig, exist_ok=True)
AdvMidiBertConfig.register_for_auto_class("AutoConfig")
for _auto_class, _model_class in _AUTO_CLASSES:
    _auto_class.register(AdvMidiBertConfig, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_auto_class.__name__)
del _auto_class, _model_class


_TOKENIZER_NAMES = ("OctupleTokenizer", "MidiReadError", "EncodingReport")


def __getattr__(name: str):
    # The tokenizer pulls in miditok and symusic: import it on first use only, so that the model classes
    # work (and this package imports) without it.
    if name in _TOKENIZER_NAMES:
        from . import tokenization_octuple

        return getattr(tokenization_octuple, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "AdvMidiBertConfig",
    "AdvMidiBertPreTrainedModel",
    "AdvMidiBertModel",
    "AdvMidiBertForMaskedLM",
    "AdvMidiBertMaskedLMOutput",
    "AdvMidiBertForSequenceClassification",
    "AdvMidiBertSequenceClassifierOutput",
    "AdvMidiBertForTokenClassification",
    "OctupleTokenizer",
    "MidiReadError",
    "EncodingReport",
]
