"""Adversarial-MidiBERT for the Hugging Face ecosystem.

Importing this package registers the configuration and every model class with the ``transformers`` Auto classes,
the Octuple tokenizer with ``AutoTokenizer``, and the pipeline tasks ``midi-classification``,
``midi-token-classification`` and ``midi-feature-extraction``. ``save_pretrained`` writes the model and tokenizer
code beside the weights, with an ``auto_map``, so a folder loads with ``trust_remote_code=True`` where this package
is not installed.
"""

__version__ = "0.1.0"

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
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
from .octuple_encoding import EncodingReport, MidiReadError
from .pipelines import MidiClassificationPipeline, MidiTokenClassificationPipeline, register_pipelines
from .tokenization_octuple import OctupleTokenizer

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

AutoTokenizer.register(AdvMidiBertConfig, tokenizer_class=OctupleTokenizer, exist_ok=True)
register_pipelines()

__all__ = ["__version__", "AdvMidiBertConfig", "AdvMidiBertPreTrainedModel", "AdvMidiBertModel",
           "AdvMidiBertForMaskedLM", "AdvMidiBertMaskedLMOutput", "AdvMidiBertForSequenceClassification",
           "AdvMidiBertSequenceClassifierOutput", "AdvMidiBertForTokenClassification", "OctupleTokenizer",
           "MidiReadError", "EncodingReport", "MidiClassificationPipeline", "MidiTokenClassificationPipeline"]
