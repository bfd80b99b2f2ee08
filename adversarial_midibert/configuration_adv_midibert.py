"""Configuration of Adversarial-MidiBERT.

This file is Hub remote code: it imports only ``transformers`` (never the rest of the
``adversarial_midibert`` package), so that ``AutoConfig.from_pretrained(..., trust_remote_code=True)``
works on a machine where the package is not installed.
"""

from __future__ import annotations

from transformers import PretrainedConfig

# Octuple attribute order (the reference code's order); the same as ``adversarial_midibert.constants``.
DEFAULT_ATTRIBUTE_NAMES = ("bar", "position", "program", "pitch", "duration", "velocity", "time_signature", "tempo")

# Vocabulary sizes (4 special tokens included) of the default ``OctupleTokenizer()`` (miditok 3.1's ``Octuple``), in
# the attribute order above: bar 260 (Bar_0..Bar_255), program 133 (drums -1 included), pitch 155 (drums included).
DEFAULT_VOCAB_SIZES = (260, 100, 133, 155, 68, 36, 13, 36)

POSITION_EMBEDDING_TYPES = ("absolute", "relative_key", "relative_key_query")


class AdvMidiBertConfig(PretrainedConfig):
    r"""Configuration of an Adversarial-MidiBERT model (a BERT encoder over Octuple note tokens).

    Instantiating it with the defaults gives the paper's model: a BERT-base encoder with relative
    ("relative_key_query") position scores, fed by eight per-attribute embeddings of 256 dimensions.

    Args:
        vocab_sizes (`list[int]`, *optional*):
            Vocabulary size of each of the 8 Octuple attributes, in the order of `attribute_names`, special tokens
            included. Defaults to those of the default `OctupleTokenizer`; pass `OctupleTokenizer.vocab_sizes`.
        attribute_names (`list[str]`, *optional*):
            Names of the 8 attributes of a token row, in column order. Defaults to
            `("bar", "position", "program", "pitch", "duration", "velocity", "time_signature", "tempo")`.
        hidden_attributes (`list[str]`, *optional*):
            Attributes the model never sees (for example `["velocity"]` when it predicts velocity): their ids are
            replaced by MASK in every non-padding row before they are embedded. Fine-tuning sets them from the data
            set's task.
        attribute_embedding_size (`int`, *optional*, defaults to 256):
            Size of each attribute's embedding; the 8 embeddings are concatenated and projected to `hidden_size`.
        hidden_size (`int`, *optional*, defaults to 768):
            Size of the encoder's hidden states.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of Transformer layers.
        num_attention_heads (`int`, *optional*, defaults to 12):
            Number of attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 3072):
            Size of the feed-forward layer inside each Transformer layer.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward layer (a key of `transformers.activations.ACT2FN`).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on the embeddings and on the outputs of attention and feed-forward blocks.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on the attention probabilities.
        max_position_embeddings (`int`, *optional*, defaults to 1024):
            Longest sequence (in token rows, BOS and EOS included) the model accepts. With relative positions the
            distance table has `2 * max_position_embeddings - 1` rows.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of the layer normalisations.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of weight matrices and embeddings.
        position_embedding_type (`str`, *optional*, defaults to `"relative_key_query"`):
            `"relative_key_query"` (Huang et al. 2020, the reference code's choice: query-distance and key-distance
            terms in every attention score), `"relative_key"` (query-distance term only) or `"absolute"` (learned
            absolute position embeddings added to the input).
        masker_hidden_size (`int`, *optional*, defaults to 256):
            Hidden size of the masker head of `AdvMidiBertForMaskedLM` (dropout -> linear -> ReLU -> linear ->
            sigmoid).
        masker_dropout (`float`, *optional*, defaults to 0.1):
            Dropout at the input of the masker head.
        classifier_hidden_size (`int`, *optional*, defaults to 256):
            Hidden size of the sequence and token classification heads.
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            Dropout at the input of the token classification head.
        pooling_attention_size (`int`, *optional*, defaults to 128):
            `d_a` of the structured self-attentive pooling of the sequence classifier (Lin et al. 2017).
        pooling_num_views (`int`, *optional*, defaults to 4):
            `r`, the number of attention views of that pooling.
        pad_token_id, bos_token_id, eos_token_id, mask_token_id (`int`, *optional*, defaults to 0, 1, 2, 3):
            Ids of PAD, BOS, EOS and MASK, the same in every attribute vocabulary.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Kept `False`: the masked-LM heads are not tied to the (smaller) attribute embeddings.
        kwargs:
            Passed to `transformers.PretrainedConfig` (for example `num_labels`, `id2label`, `label2id`,
            `problem_type`).

    Example:

    ```python
    >>> from adversarial_midibert import AdvMidiBertConfig, AdvMidiBertForMaskedLM
    >>> config = AdvMidiBertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    >>> model = AdvMidiBertForMaskedLM(config)
    ```
    """

    model_type = "adv_midibert"

    def __init__(
        self,
        vocab_sizes: list[int] | tuple[int, ...] | None = None,
        attribute_names: list[str] | tuple[str, ...] | None = None,
        hidden_attributes: list[str] | tuple[str, ...] | None = None,
        attribute_embedding_size: int = 256,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 1024,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        position_embedding_type: str = "relative_key_query",
        masker_hidden_size: int = 256,
        masker_dropout: float = 0.1,
        classifier_hidden_size: int = 256,
        classifier_dropout: float = 0.1,
        pooling_attention_size: int = 128,
        pooling_num_views: int = 4,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        mask_token_id: int = 3,
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        vocab_sizes = [int(v) for v in (DEFAULT_VOCAB_SIZES if vocab_sizes is None else vocab_sizes)]
        attribute_names = [str(n) for n in (DEFAULT_ATTRIBUTE_NAMES if attribute_names is None else attribute_names)]
        hidden_attributes = [str(n) for n in hidden_attributes or ()]
        if any(n not in attribute_names for n in hidden_attributes):
            raise ValueError(f"`hidden_attributes` {hidden_attributes} must be among `attribute_names` "
                             f"{attribute_names}.")
        special_ids = {
            "pad_token_id": pad_token_id,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "mask_token_id": mask_token_id,
        }
        self._validate(
            vocab_sizes=vocab_sizes,
            attribute_names=attribute_names,
            special_ids=special_ids,
            sizes={
                "attribute_embedding_size": attribute_embedding_size,
                "hidden_size": hidden_size,
                "num_hidden_layers": num_hidden_layers,
                "num_attention_heads": num_attention_heads,
                "intermediate_size": intermediate_size,
                "max_position_embeddings": max_position_embeddings,
                "masker_hidden_size": masker_hidden_size,
                "classifier_hidden_size": classifier_hidden_size,
                "pooling_attention_size": pooling_attention_size,
                "pooling_num_views": pooling_num_views,
            },
            dropouts={
                "hidden_dropout_prob": hidden_dropout_prob,
                "attention_probs_dropout_prob": attention_probs_dropout_prob,
                "masker_dropout": masker_dropout,
                "classifier_dropout": classifier_dropout,
            },
            position_embedding_type=position_embedding_type,
        )
        super().__init__(tie_word_embeddings=tie_word_embeddings, **special_ids, **kwargs)
        self.vocab_sizes = vocab_sizes
        self.attribute_names = attribute_names
        self.hidden_attributes = hidden_attributes
        self.attribute_embedding_size = attribute_embedding_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.position_embedding_type = position_embedding_type
        self.masker_hidden_size = masker_hidden_size
        self.masker_dropout = masker_dropout
        self.classifier_hidden_size = classifier_hidden_size
        self.classifier_dropout = classifier_dropout
        self.pooling_attention_size = pooling_attention_size
        self.pooling_num_views = pooling_num_views

    # transformers 5 makes every config subclass a dataclass, whose generated `__eq__` would compare only the base
    # class's fields (two configs with different hidden sizes "equal"): keep the base class's comparison of all fields.
    __eq__ = PretrainedConfig.__eq__

    @property
    def custom_pipelines(self) -> dict:
        """The pipelines `config.json` names as remote code (for a machine without the package); empty while each of
        those tasks has a class of the same name registered in this process (the installed package registers them),
        so that `pipeline(task, model=folder)` runs the installed classes without `trust_remote_code`. Saved as read."""
        written = self.__dict__.get("_remote_pipelines") or {}
        return {} if written and _registered_here(written) else written

    @custom_pipelines.setter
    def custom_pipelines(self, value: dict) -> None:
        self.__dict__["_remote_pipelines"] = value

    def to_dict(self) -> dict:
        output = super().to_dict()
        written = output.pop("_remote_pipelines", None)
        if written:
            output["custom_pipelines"] = written
        return output

    @property
    def num_attributes(self) -> int:
        """Number of attributes of a token row (8)."""
        return len(self.vocab_sizes)

    @staticmethod
    def _validate(vocab_sizes, attribute_names, special_ids, sizes, dropouts, position_embedding_type) -> None:
        """Raise a `ValueError` naming the first argument that is out of range (written out, not huggingface_hub's
        `@strict` validators: this file is remote code that imports only torch and transformers)."""
        if len(vocab_sizes) != 8:
            raise ValueError(f"`vocab_sizes` must hold 8 sizes (one per Octuple attribute), got {len(vocab_sizes)}.")
        if len(attribute_names) != len(vocab_sizes):
            raise ValueError(
                f"`attribute_names` ({len(attribute_names)} names) must have the same length as `vocab_sizes` "
                f"({len(vocab_sizes)})."
            )
        if len(set(attribute_names)) != len(attribute_names):
            raise ValueError(f"`attribute_names` must be distinct, got {attribute_names}.")
        for name, size in zip(attribute_names, vocab_sizes):
            if size < 5:
                raise ValueError(
                    f"`vocab_sizes` entry for {name!r} is {size}: every attribute vocabulary needs the 4 special "
                    "tokens (PAD, BOS, EOS, MASK) and at least one value, so at least 5 entries."
                )
        for name, token_id in special_ids.items():
            if not isinstance(token_id, int) or not 0 <= token_id < min(vocab_sizes):
                raise ValueError(
                    f"`{name}` must be an int in [0, {min(vocab_sizes)}) (the same id in every attribute), got "
                    f"{token_id!r}."
                )
        if len(set(special_ids.values())) != len(special_ids):
            raise ValueError(f"Special token ids must be distinct, got {special_ids}.")
        for name, size in sizes.items():
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise ValueError(f"`{name}` must be a positive int, got {size!r}.")
        if sizes["hidden_size"] % sizes["num_attention_heads"] != 0:
            raise ValueError(
                f"`hidden_size` ({sizes['hidden_size']}) must be divisible by `num_attention_heads` "
                f"({sizes['num_attention_heads']})."
            )
        for name, p in dropouts.items():
            if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"`{name}` must be a probability in [0, 1), got {p!r}.")
        if position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"`position_embedding_type` must be one of {POSITION_EMBEDDING_TYPES}, got {position_embedding_type!r}."
            )


def _registered_here(pipelines: dict) -> bool:
    """Whether each task of a `custom_pipelines` dict has a pipeline class of the same name in transformers'
    `PIPELINE_REGISTRY` of this process."""
    from transformers.pipelines import PIPELINE_REGISTRY

    for task, entry in pipelines.items():
        registered = PIPELINE_REGISTRY.supported_tasks.get(task, {}).get("impl")
        named = str(entry.get("impl", "")).rsplit(".", 1)[-1] if isinstance(entry, dict) else None
        if registered is None or named != registered.__name__:
            return False
    return True


__all__ = ["AdvMidiBertConfig"]
