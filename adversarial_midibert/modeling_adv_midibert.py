"""Adversarial-MidiBERT: a BERT encoder over Octuple note tokens, with masked-LM, masker and classification heads.

Read top to bottom: embeddings, attention (with relative positions), one layer, the encoder stack, the
`PreTrainedModel` base, the bare model, then one class per head.

This file is Hub remote code: it imports only ``torch`` and ``transformers`` (and the configuration next to it,
relatively), never the rest of the ``adversarial_midibert`` package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput, TokenClassifierOutput
from transformers.utils import ModelOutput

from .configuration_adv_midibert import AdvMidiBertConfig

# Written into config.json by `save_pretrained` of a model registered for the Auto classes, so that every Auto class
# can load the saved folder with `trust_remote_code=True`, whichever head was saved.
AUTO_MAP = {
    "AutoConfig": "configuration_adv_midibert.AdvMidiBertConfig",
    "AutoModel": "modeling_adv_midibert.AdvMidiBertModel",
    "AutoModelForMaskedLM": "modeling_adv_midibert.AdvMidiBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_adv_midibert.AdvMidiBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_adv_midibert.AdvMidiBertForTokenClassification",
}


def _without_autocast(device: torch.device):
    """A region computed in the tensors' own dtype under any autocast (a device autocast lacks, such as ``meta``, has
    none to turn off: the CPU's is turned off instead, which changes nothing there)."""
    device_type = device.type if torch.amp.is_autocast_available(device.type) else "cpu"
    return torch.autocast(device_type=device_type, enabled=False)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale``. Written as a Function (not as
    ``scale * x + (1 - scale) * x.detach()``) so that the forward values are exactly the input's in any dtype."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * ctx.scale, None


def scale_gradient(tensor: torch.Tensor, scale: float) -> torch.Tensor:
    """The same values as ``tensor``, with the gradient flowing back through it multiplied by ``scale`` (1 returns
    ``tensor`` itself, 0 is ``tensor.detach()``)."""
    if scale == 1.0:
        return tensor
    if scale == 0.0:
        return tensor.detach()
    return _ScaleGradient.apply(tensor, scale)


def _padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a (B, L) 0/1 mask into an additive (B, 1, 1, L) bias: 0 at real tokens, half the dtype's minimum at
    padding (room to add the relative-position scores without overflowing to -inf)."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * (torch.finfo(dtype).min / 2)


# ---- Embeddings -----------------------------------------------------------------------------------------------


class AdvMidiBertEmbeddings(nn.Module):
    """One embedding table per Octuple attribute, each scaled by sqrt(attribute_embedding_size), concatenated and
    projected to the hidden size (the reference code); then, as in BERT, the token-type-0 vector (and absolute
    positions with `position_embedding_type == "absolute"`), LayerNorm and dropout."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.vocab_sizes = list(config.vocab_sizes)
        self.attribute_names = list(config.attribute_names)
        self.hidden_columns = [self.attribute_names.index(n) for n in getattr(config, "hidden_attributes", None) or ()]
        self.pad_token_id, self.mask_token_id = config.pad_token_id, config.mask_token_id
        self.attribute_embeddings = nn.ModuleList(
            nn.Embedding(size, config.attribute_embedding_size, padding_idx=config.pad_token_id)
            for size in self.vocab_sizes
        )
        self.embedding_scale = math.sqrt(config.attribute_embedding_size)
        self.in_linear = nn.Linear(len(self.vocab_sizes) * config.attribute_embedding_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(1, config.hidden_size)
        self.position_embedding_type = config.position_embedding_type
        if self.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.max_position_embeddings = config.max_position_embeddings
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def check_input_ids(self, input_ids: torch.Tensor) -> None:
        """Raise a `ValueError` when `input_ids` is not (batch, length, 8) or holds ids outside a vocabulary: checked
        on the host with a message naming the column, or in training asynchronously (`torch._assert_async`, no host
        sync); under `torch.compile` only the shape."""
        num_attributes = len(self.vocab_sizes)
        if input_ids.dim() != 3 or input_ids.shape[-1] != num_attributes:
            raise ValueError(
                f"`input_ids` must have shape (batch, length, {num_attributes}) (one row of {num_attributes} "
                f"attribute ids per note), got {tuple(input_ids.shape)}."
            )
        if input_ids.shape[1] > self.max_position_embeddings:
            raise ValueError(
                f"`input_ids` has {input_ids.shape[1]} tokens per sequence, more than `max_position_embeddings` "
                f"({self.max_position_embeddings}); cut the piece into shorter segments."
            )
        if input_ids.is_floating_point():
            raise ValueError(f"`input_ids` must hold integer ids, got dtype {input_ids.dtype}.")
        if torch.compiler.is_compiling():
            return
        bad = input_ids < 0
        for column, size in enumerate(self.vocab_sizes):  # Python bounds: no host-to-device copy of a table
            bad[..., column] |= input_ids[..., column] >= size
        if self.training:
            # The training hot path: checked on the device, without waiting for it (a host sync every step would
            # stall the accelerator's queue); on CPU this raises at once, on CUDA as a device-side assert.
            torch._assert_async(~bad.any(), "`input_ids` holds ids outside a vocabulary of `config.vocab_sizes`")
            return
        if bool(bad.any()):
            column = int(bad.flatten(0, 1).any(0).nonzero()[0])
            values = input_ids[..., column][bad[..., column]]
            raise ValueError(
                f"`input_ids` column {column} ({self.attribute_names[column]!r}) holds ids outside its vocabulary "
                f"[0, {self.vocab_sizes[column]}): for example {values[:5].tolist()}. Was it tokenized with a "
                "tokenizer whose vocabulary sizes match `config.vocab_sizes`?"
            )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embed `input_ids` (B, L, 8) into hidden states (B, L, hidden_size)."""
        self.check_input_ids(input_ids)
        if self.hidden_columns:  # `config.hidden_attributes`: MASK in every non-padding row
            hidden = input_ids[..., self.hidden_columns]
            input_ids = input_ids.clone()
            input_ids[..., self.hidden_columns] = hidden.masked_fill(hidden != self.pad_token_id, self.mask_token_id)
        embeddings = torch.cat(
            [table(input_ids[..., i]) for i, table in enumerate(self.attribute_embeddings)], dim=-1
        )
        hidden_states = self.in_linear(embeddings * self.embedding_scale)
        hidden_states = hidden_states + self.token_type_embeddings.weight[0]
        if self.position_embedding_type == "absolute":
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            hidden_states = hidden_states + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(hidden_states))


# ---- Attention ------------------------------------------------------------------------------------------------


def relative_distance_scores(
    states: torch.Tensor, table: torch.Tensor, max_positions: int, keys: bool = False, block_size: int = 64
) -> torch.Tensor:
    """Dot products of every query (or key) head with the distance rows it meets, without a gather.

    For queries (`keys=False`) the result is `[..., l, r] = states_l . table[l - r + M - 1]`; for keys (`keys=True`,
    the key term of `relative_key_query`) it is `[..., r, l] = states_r . table[l - r + M - 1]` (transpose it to index
    it by [l, r]). `states` is (B, H, L, head_dim), `table` (2M - 1, head_dim), M = `max_positions` >= L; the result
    is (B, H, L, L).

    Computed block by block (the skewing of Music Transformer, Huang et al. 2018, per block of `block_size` rows): a
    block of b positions meets L + b - 1 distances, so it is multiplied with those rows of the table only and the
    (b, L + b) product is skewed into (b, L) by a reshape and a slice: L (L + b) products per head instead of the
    L (2L - 1) of a product with every distance row.
    """
    batch, heads, length, dim = states.shape
    block = max(1, min(block_size, length))
    num_blocks = -(-length // block)
    padded = num_blocks * block
    if padded != length:
        states = F.pad(states, (0, 0, 0, padded - length))
    width = length + block  # the L + b - 1 distances a block meets, and one spare column so that the skew below fits
    # Column c of block n meets the distance n * block + block - 1 - c (row i of the block, column r of the result:
    # c = block - 1 - i + r). Distances met only by padding rows are clamped: those rows are cut off below.
    device = states.device
    distance = (torch.arange(num_blocks, device=device) * block + block - 1)[:, None] - torch.arange(
        width, device=device
    )
    if keys:
        distance = -distance
    rows = (distance + max_positions - 1).clamp(0, table.shape[0] - 1)
    window = table[rows].to(states.dtype)  # (num_blocks, width, head_dim)
    products = torch.einsum("bhnid,nwd->bhniw", states.view(batch, heads, num_blocks, block, dim), window)
    # Skew: in the flattened block, row i's L columns start at i * width + block - 1 - i.
    flat = products.reshape(batch, heads, num_blocks, block * width)
    skewed = flat[..., block - 1 : block - 1 + block * (width - 1)].reshape(batch, heads, num_blocks, block, width - 1)
    return skewed[..., :length].reshape(batch, heads, padded, length)[:, :, :length]


def relative_distance_scores_by_gather(
    states: torch.Tensor, table: torch.Tensor, max_positions: int, keys: bool = False
) -> torch.Tensor:
    """The direct computation of `relative_distance_scores` (same arguments and result): one product with all the
    2L - 1 distance rows a sequence of length L meets, then a gather into (L, L). About twice the products of the
    blocked version; kept as its reference (tests, `benchmarks/attention.py`)."""
    batch, heads, length, _ = states.shape
    offset = max_positions - length
    window = table[offset : offset + 2 * length - 1].to(states.dtype)  # row j: distance j - (L - 1)
    positions = torch.arange(length, device=states.device)
    index = positions[:, None] - positions[None, :] + length - 1  # [l, r] -> distance l - r
    return torch.matmul(states, window.t()).gather(-1, (index.t() if keys else index).expand(batch, heads, -1, -1))


def eager_attention_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_bias: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit softmax attention over heads (B, H, L, head_dim): ``attention_bias`` is additive, broadcastable to
    (B, H, L, L) (the scaled relative-position scores and the padding bias), ``scaling`` multiplies the query-key
    products. Returns the context (B, H, L, head_dim) and the probabilities (B, H, L, L) before dropout."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_bias is not None:
        scores = scores + attention_bias
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    context = torch.matmul(F.dropout(probs, p=dropout, training=dropout > 0), value)
    return context, probs


def sdpa_attention_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_bias: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, None]:
    """The same computation as `eager_attention_forward` through `F.scaled_dot_product_attention` (the bias as an
    additive float mask; no attention probabilities are returned)."""
    if attention_bias is not None:
        attention_bias = attention_bias.to(query.dtype)
    context = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_bias, dropout_p=dropout, scale=scaling
    )
    return context, None


class AdvMidiBertSelfAttention(nn.Module):
    """Multi-head self-attention with optional relative-position scores (Huang et al. 2020).

    With `position_embedding_type="relative_key_query"` the score of query l and key r is
    (q_l . k_r + q_l . D[l - r + M - 1] + k_r . D[l - r + M - 1]) / sqrt(head_dim), where D is the distance table
    `distance_embedding` (2M - 1, head_dim) and M = `max_position_embeddings`; `relative_key` keeps only the query
    term. The relative terms are computed by `relative_distance_scores` (no gather, no (L, L, head_dim) tensor).
    """

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.position_embedding_type = config.position_embedding_type
        self.max_position_embeddings = config.max_position_embeddings
        if self.position_embedding_type in ("relative_key", "relative_key_query"):
            self.distance_embedding = nn.Embedding(2 * config.max_position_embeddings - 1, self.attention_head_size)
        self.config = config

    def relative_position_scores(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Unscaled relative-position scores (B, H, L, L) for query and key heads of shape (B, H, L, head_dim)."""
        table = self.distance_embedding.weight
        scores = relative_distance_scores(query, table, self.max_position_embeddings)
        if self.position_embedding_type == "relative_key_query":
            scores = scores + relative_distance_scores(key, table, self.max_position_embeddings, keys=True).transpose(
                -1, -2
            )
        return scores

    def forward(
        self,
        hidden_states: torch.Tensor,
        padding_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over `hidden_states` (B, L, hidden) with the (B, 1, 1, L) additive `padding_bias`, by
        `config._attn_implementation` ("eager" or "sdpa"; eager when `output_attentions`): the context (B, L, hidden)
        and the attention probabilities (or None)."""
        batch, length, hidden = hidden_states.shape
        shape = (batch, length, self.num_attention_heads, self.attention_head_size)
        query = self.query(hidden_states).view(shape).transpose(1, 2)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)

        bias = padding_bias
        if self.position_embedding_type != "absolute":
            relative = self.relative_position_scores(query, key) * self.scaling
            bias = relative if bias is None else relative + bias

        use_eager = output_attentions or self.config._attn_implementation == "eager"
        attention = eager_attention_forward if use_eager else sdpa_attention_forward
        dropout = self.dropout_prob if self.training else 0.0
        context, probs = attention(query, key, value, bias, self.scaling, dropout)
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        return context, probs


class AdvMidiBertSelfOutput(nn.Module):
    """Projection of the attention context, dropout, residual connection and LayerNorm."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class AdvMidiBertAttention(nn.Module):
    """Self-attention followed by its output block."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.self = AdvMidiBertSelfAttention(config)
        self.output = AdvMidiBertSelfOutput(config)

    def forward(
        self, hidden_states: torch.Tensor, padding_bias: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, probs = self.self(hidden_states, padding_bias, output_attentions)
        return self.output(context, hidden_states), probs


# ---- One layer and the encoder stack --------------------------------------------------------------------------


class AdvMidiBertIntermediate(nn.Module):
    """First half of the feed-forward block: hidden -> intermediate, activation."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class AdvMidiBertOutput(nn.Module):
    """Second half of the feed-forward block: intermediate -> hidden, dropout, residual connection, LayerNorm."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class AdvMidiBertLayer(nn.Module):
    """One post-LayerNorm Transformer layer (BERT's): attention block then feed-forward block."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.attention = AdvMidiBertAttention(config)
        self.intermediate = AdvMidiBertIntermediate(config)
        self.output = AdvMidiBertOutput(config)

    def forward(
        self, hidden_states: torch.Tensor, padding_bias: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, probs = self.attention(hidden_states, padding_bias, output_attentions)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, probs


class AdvMidiBertEncoder(nn.Module):
    """The stack of `num_hidden_layers` layers, with optional gradient checkpointing."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(AdvMidiBertLayer(config) for _ in range(config.num_hidden_layers))
        # Set by `PreTrainedModel.gradient_checkpointing_enable`, with `_gradient_checkpointing_func`.
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        padding_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                hidden_states, probs = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, padding_bias, output_attentions
                )
            else:
                hidden_states, probs = layer(hidden_states, padding_bias, output_attentions)
            if output_hidden_states:
                all_hidden_states = all_hidden_states + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (probs,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


# ---- Pre-trained model base -----------------------------------------------------------------------------------


class AdvMidiBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation, Hub loading/saving and attention-implementation plumbing shared by all heads."""

    config_class = AdvMidiBertConfig
    base_model_prefix = "adv_midibert"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["AdvMidiBertEmbeddings", "AdvMidiBertLayer"]

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # Attention layers read `config._attn_implementation` at every call, so switching it at run time
        # (`model.set_attn_implementation("eager")`) is always safe.
        return True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: normal(0, initializer_range) weights, zero biases, unit LayerNorm, zero PAD rows."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            # Only on fresh weights: a row slice loses the "already loaded" flag that guards the call above.
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, writing in `config.json` an `auto_map` of every Auto class (not only the
        saved head's) once the class is registered for Auto (importing `adversarial_midibert` does it)."""
        if getattr(self, "_auto_class", None) is not None:
            self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)


# ---- Bare model -----------------------------------------------------------------------------------------------


class AdvMidiBertModel(AdvMidiBertPreTrainedModel):
    """The bare encoder: Octuple token rows (B, L, 8) -> hidden states (B, L, hidden_size)."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__(config)
        self.embeddings = AdvMidiBertEmbeddings(config)
        self.encoder = AdvMidiBertEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        """Encode a batch of segments into a `BaseModelOutput` (``last_hidden_state`` (B, L, hidden)).

        Args:
            input_ids (`torch.LongTensor` of shape (B, L, 8)): attribute ids of each note row.
            attention_mask (`torch.Tensor` of shape (B, L), *optional*): 1 at real rows (BOS, notes, EOS), 0 at
                padding. Defaults to the rows that are not all `pad_token_id`.
            output_attentions (`bool`, *optional*): return every layer's attention probabilities (runs the eager
                attention for this call).
            output_hidden_states (`bool`, *optional*): return the embeddings and every layer's output.
            return_dict (`bool`, *optional*): a `BaseModelOutput` rather than a tuple. All three default to the config.
        """
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict

        hidden_states = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).any(dim=-1)
        elif attention_mask.shape != input_ids.shape[:2]:
            raise ValueError(
                f"`attention_mask` must have shape {tuple(input_ids.shape[:2])} (batch, length) to match "
                f"`input_ids`, got {tuple(attention_mask.shape)}."
            )
        padding_bias = _padding_bias(attention_mask, hidden_states.dtype)
        outputs = self.encoder(hidden_states, padding_bias, output_attentions, output_hidden_states)
        if not return_dict:
            return outputs.to_tuple()
        return outputs


# ---- Masked LM with the masker head (adversarial pre-training) ------------------------------------------------


@dataclass
class AdvMidiBertMaskedLMOutput(ModelOutput):
    """Output of `AdvMidiBertForMaskedLM`.

    Args:
        loss (`torch.FloatTensor` of shape ()): sum over attributes of w_i times the mean cross-entropy over that
            attribute's labels that are not -100 (present when `labels` is given).
        attribute_losses (`torch.FloatTensor` of shape (8,)): the per-attribute mean cross-entropies (0 if no label).
        logits (`tuple` of 8 `torch.FloatTensor` of shape (B, L, V_i)): the prediction scores of each attribute.
        masker_scores (`torch.FloatTensor` of shape (B, L)): the masker's probability that a token is hard to
            recover from its context, in [0, 1]; 0 at padding.
        per_token_loss (`torch.FloatTensor` of shape (B, L)): sum over attributes of w_i times the cross-entropy at
            each position (0 where every label is -100): the recovery loss the masker learns from.
        hidden_states, attentions (`tuple` of `torch.FloatTensor`): as in `BaseModelOutput`, when asked for.
    """

    loss: torch.FloatTensor | None = None
    attribute_losses: torch.FloatTensor | None = None
    logits: tuple[torch.FloatTensor, ...] | None = None
    masker_scores: torch.FloatTensor | None = None
    per_token_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class AdvMidiBertMasker(nn.Module):
    """Masker head: dropout -> Linear(hidden, masker_hidden_size) -> ReLU -> Linear(., 1) -> sigmoid."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.masker_dropout)
        self.dense = nn.Linear(config.hidden_size, config.masker_hidden_size)
        self.out_proj = nn.Linear(config.masker_hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, hidden) -> scores (B, L) in [0, 1], in the head's own dtype (float32) under any
        autocast: in bf16 a sigmoid keeps so few distinct values that the tie-break, not the masker, would choose."""
        with _without_autocast(hidden_states.device):
            hidden_states = torch.relu(self.dense(self.dropout(hidden_states.to(self.dense.weight.dtype))))
            return torch.sigmoid(self.out_proj(hidden_states)).squeeze(-1)


class AdvMidiBertForMaskedLM(AdvMidiBertPreTrainedModel):
    """The encoder with one masked-LM classifier per attribute (`lm_heads`) and the masker head (`masker`)."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__(config)
        self.adv_midibert = AdvMidiBertModel(config)
        self.lm_heads = nn.ModuleList(nn.Linear(config.hidden_size, size) for size in config.vocab_sizes)
        self.masker = AdvMidiBertMasker(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attribute_weights: torch.Tensor | list[float] | None = None,
        compute_logits: bool = True,
        compute_masker: bool = True,
        detach_masker_input: bool = False,
        masker_grad_scale: float = 1.0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> AdvMidiBertMaskedLMOutput | tuple:
        """Predict every attribute at every position, and score every position with the masker.

        Args:
            input_ids (`torch.LongTensor` of shape (B, L, 8)): attribute ids (corrupted ones for the recoverer).
            attention_mask (`torch.Tensor` of shape (B, L), *optional*): 1 at real rows, 0 at padding.
            labels (`torch.LongTensor` of shape (B, L, 8), *optional*): target ids, -100 where no loss is taken.
            attribute_weights (`torch.Tensor` or list of 8 floats, *optional*): w_i of each attribute's loss;
                defaults to 1/8 each.
            compute_logits (`bool`, defaults to `True`): run the masked-LM heads (they also run when `labels` is
                given, since the loss needs them).
            compute_masker (`bool`, defaults to `True`): run the masker head.
            detach_masker_input (`bool`, defaults to `False`): the same as `masker_grad_scale=0`.
            masker_grad_scale (`float`, defaults to 1): share of the masker's gradient that flows back into the
                encoder (0: none; the forward values are unchanged; see `scale_gradient`).
            output_attentions, output_hidden_states, return_dict (`bool`, *optional*): as in `AdvMidiBertModel`.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.adv_midibert(
            input_ids,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        sequence_output = outputs.last_hidden_state

        logits = None
        if compute_logits or labels is not None:
            logits = tuple(head(sequence_output) for head in self.lm_heads)

        masker_scores = None
        if compute_masker:
            masker_input = scale_gradient(sequence_output, 0.0 if detach_masker_input else masker_grad_scale)
            masker_scores = self.masker(masker_input)
            if attention_mask is None:
                attention_mask = (input_ids != self.config.pad_token_id).any(dim=-1)
            masker_scores = masker_scores * attention_mask.to(masker_scores.dtype)

        loss = attribute_losses = per_token_loss = None
        if labels is not None:
            loss, attribute_losses, per_token_loss = self.masked_lm_loss(logits, labels, attribute_weights)

        output = AdvMidiBertMaskedLMOutput(
            loss=loss,
            attribute_losses=attribute_losses,
            logits=logits if compute_logits else None,
            masker_scores=masker_scores,
            per_token_loss=per_token_loss,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    def masked_lm_loss(
        self,
        logits: tuple[torch.Tensor, ...],
        labels: torch.Tensor,
        attribute_weights: torch.Tensor | list[float] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted masked-LM loss of the 8 attributes' ``logits`` against ``labels`` `(B, L, 8)` (-100 ignored),
        ``attribute_weights`` 1/8 each by default: ``(loss, attribute_losses (8,), per_token_loss (B, L))``, see
        `AdvMidiBertMaskedLMOutput`."""
        num_attributes = len(logits)
        if labels.shape != logits[0].shape[:2] + (num_attributes,):
            raise ValueError(
                f"`labels` must have shape {tuple(logits[0].shape[:2]) + (num_attributes,)} (batch, length, "
                f"attributes), got {tuple(labels.shape)}."
            )
        device = logits[0].device
        if attribute_weights is None:
            weights = torch.full((num_attributes,), 1.0 / num_attributes, device=device)
        else:
            weights = torch.as_tensor(attribute_weights, dtype=torch.float32, device=device)
            if weights.shape != (num_attributes,):
                raise ValueError(
                    f"`attribute_weights` must hold {num_attributes} weights, got shape {tuple(weights.shape)}."
                )
        # (8, B, L): cross-entropy per attribute and position, 0 where the label is -100.
        token_losses = torch.stack(
            [
                F.cross_entropy(
                    attribute_logits.transpose(1, 2).float(), labels[..., i], ignore_index=-100, reduction="none"
                )
                for i, attribute_logits in enumerate(logits)
            ]
        )
        # float32 sums under any autocast: bf16 per-token losses tie (they rank the masker's targets) and fp16 sums
        # overflow beyond about 15 k tokens.
        with _without_autocast(device):
            token_losses = token_losses.float()
            counts = (labels != -100).sum(dim=(0, 1)).to(token_losses.dtype)  # (8,)
            attribute_losses = token_losses.sum(dim=(1, 2)) / counts.clamp(min=1)
            loss = (weights.float() * attribute_losses).sum()
            per_token_loss = torch.einsum("a,abl->bl", weights.float(), token_losses)
        return loss, attribute_losses, per_token_loss


# ---- Sequence classification (structured self-attentive pooling) ----------------------------------------------


@dataclass
class AdvMidiBertSequenceClassifierOutput(SequenceClassifierOutput):
    """`SequenceClassifierOutput` plus ``pooling_attentions`` (B, r, L): the r attention views of the self-attentive
    pooling (each sums to 1 over the real tokens; 0 at padding)."""

    pooling_attentions: torch.FloatTensor | None = None


class AdvMidiBertSelfAttentivePooling(nn.Module):
    """Structured self-attentive pooling (Lin et al. 2017): A = softmax_L(W2 tanh(W1 H)), M = A H.

    `ws1` is W1 (d_a x hidden) and `ws2` is W2 (r x d_a), both without bias as in the reference code. Padding is
    excluded from the softmax (the reference code forgets this).
    """

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__()
        self.ws1 = nn.Linear(config.hidden_size, config.pooling_attention_size, bias=False)
        self.ws2 = nn.Linear(config.pooling_attention_size, config.pooling_num_views, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, L, hidden) and mask (B, L) -> pooled (B, r * hidden) and weights (B, r, L)."""
        scores = self.ws2(torch.tanh(self.ws1(hidden_states))).transpose(1, 2)  # (B, r, L)
        scores = scores.float().masked_fill(~attention_mask.bool()[:, None, :], torch.finfo(torch.float32).min)
        weights = F.softmax(scores, dim=-1).to(hidden_states.dtype)
        pooled = torch.matmul(weights, hidden_states)  # (B, r, hidden)
        return pooled.flatten(1), weights


class AdvMidiBertForSequenceClassification(AdvMidiBertPreTrainedModel):
    """The encoder, self-attentive pooling and Linear(r*hidden, 256) -> ReLU -> Linear(256, num_labels)."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.adv_midibert = AdvMidiBertModel(config)
        self.pooling = AdvMidiBertSelfAttentivePooling(config)
        self.classifier = nn.Sequential(
            nn.Linear(config.pooling_num_views * config.hidden_size, config.classifier_hidden_size),
            nn.ReLU(),
            nn.Linear(config.classifier_hidden_size, config.num_labels),
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> AdvMidiBertSequenceClassifierOutput | tuple:
        """Classify each segment: ``labels`` are class ids `(B,)`, floats for regression (``num_labels == 1``), or
        multi-hot floats `(B, num_labels)` for ``"multi_label_classification"``; the other arguments as in
        `AdvMidiBertModel`. Returns ``logits`` `(B, num_labels)` and ``pooling_attentions`` `(B, r, L)`."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).any(dim=-1)
        outputs = self.adv_midibert(
            input_ids,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        pooled, pooling_attentions = self.pooling(outputs.last_hidden_state, attention_mask)
        logits = self.classifier(pooled)

        loss = None
        if labels is not None:
            loss = self.classification_loss(logits, labels)
        output = AdvMidiBertSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            pooling_attentions=pooling_attentions,
        )
        return output if return_dict else output.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """BERT's loss choice (MSE for regression, cross-entropy for single-label, BCE for multi-label), inferring and
        storing ``config.problem_type`` as BERT does when it is unset."""
        labels = labels.to(logits.device)
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


# ---- Token classification -------------------------------------------------------------------------------------


class AdvMidiBertForTokenClassification(AdvMidiBertPreTrainedModel):
    """The encoder and dropout -> Linear(hidden, 256) -> ReLU -> Linear(256, num_labels) at every token."""

    def __init__(self, config: AdvMidiBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.adv_midibert = AdvMidiBertModel(config)
        self.classifier = nn.Sequential(
            nn.Dropout(config.classifier_dropout),
            nn.Linear(config.hidden_size, config.classifier_hidden_size),
            nn.ReLU(),
            nn.Linear(config.classifier_hidden_size, config.num_labels),
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        """Classify each token: ``labels`` `(B, L)` are class ids, -100 where no loss is taken (BOS, EOS, padding,
        masked positions); the other arguments as in `AdvMidiBertModel`. Returns a `TokenClassifierOutput` with
        ``logits`` `(B, L, num_labels)`."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.adv_midibert(
            input_ids,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(
                    f"`labels` must have shape {tuple(logits.shape[:2])} (batch, length), got {tuple(labels.shape)}."
                )
            loss = F.cross_entropy(
                logits.float().reshape(-1, self.num_labels), labels.to(logits.device).reshape(-1), ignore_index=-100
            )
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


__all__ = ["AdvMidiBertPreTrainedModel", "AdvMidiBertModel", "AdvMidiBertForMaskedLM", "AdvMidiBertMaskedLMOutput",
           "AdvMidiBertForSequenceClassification", "AdvMidiBertSequenceClassifierOutput",
           "AdvMidiBertForTokenClassification"]
