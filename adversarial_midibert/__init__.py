"""Adversarial-MidiBERT for the Hugging Face ecosystem.

Importing this package registers the configuration and every model class with the ``transformers``
Auto classes (``AutoConfig``, ``AutoModel``, ``AutoModelForMaskedLM``,
``AutoModelForSequenceClassification``, ``AutoModelForTokenClassification``).
"""

__version__ = "0.1.0"
