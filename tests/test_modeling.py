"""Model classes: relative attention, eager == sdpa, padding invariance, losses, checkpointing, and the checks
transformers' model tests run over every head (save/load, batching, ``return_dict=False``, initialisation)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import adversarial_midibert  # noqa: F401  (registers the Auto classes)
from adversarial_midibert import (
    AdvMidiBertForMaskedLM,
    AdvMidiBertForSequenceClassification,
    AdvMidiBertForTokenClassification,
    AdvMidiBertModel,
)

from tiny_models import TINY_VOCAB_SIZES, tiny_config

VOCAB_SIZES = TINY_VOCAB_SIZES
ATOL = 1e-5


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [torch.randint(4, size, (batch, length), generator=generator) for size in VOCAB_SIZES], dim=-1
    )


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two segments of lengths 10 and 7, padded to 10."""
    ids = random_ids(2, 10, seed)
    mask = torch.ones(2, 10, dtype=torch.long)
    ids[1, 7:] = 0
    mask[1, 7:] = 0
    return ids, mask


def build(model_class, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return model_class(tiny_config(**overrides)).eval()


HEADS = [AdvMidiBertModel, AdvMidiBertForMaskedLM, AdvMidiBertForSequenceClassification,
         AdvMidiBertForTokenClassification]


def main_output(model, outputs) -> torch.Tensor:
    if isinstance(model, AdvMidiBertModel):
        return outputs.last_hidden_state
    if isinstance(model, AdvMidiBertForMaskedLM):
        return torch.cat([*outputs.logits, outputs.masker_scores[..., None]], dim=-1)
    return outputs.logits


# --- embeddings and attention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["relative_key", "relative_key_query"])
def test_relative_scores_match_naive_einsum(kind):
    model = build(AdvMidiBertModel, position_embedding_type=kind)
    attention = model.encoder.layer[0].attention.self
    query, key = torch.randn(2, 2, 2, 13, 16).unbind(0)
    max_positions = model.config.max_position_embeddings
    positions = torch.arange(13)
    table = attention.distance_embedding(positions[:, None] - positions[None, :] + max_positions - 1)
    expected = torch.einsum("bhld,lrd->bhlr", query, table)
    if kind == "relative_key_query":
        expected = expected + torch.einsum("bhrd,lrd->bhlr", key, table)
    torch.testing.assert_close(attention.relative_position_scores(query, key), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("keys", [False, True])
def test_blocked_relative_scores_equal_the_gather_path(keys):
    """The skewed, blocked computation gives the scores of the direct product-and-gather (float64: to rounding)."""
    from adversarial_midibert.modeling_adv_midibert import (
        relative_distance_scores,
        relative_distance_scores_by_gather,
    )

    generator = torch.Generator().manual_seed(0)
    for max_positions, length, block in [(40, 1, 64), (40, 2, 1), (40, 13, 4), (40, 40, 16), (100, 65, 64),
                                         (100, 100, 7), (100, 64, 64)]:
        states = torch.randn(2, 3, length, 8, dtype=torch.float64, generator=generator)
        table = torch.randn(2 * max_positions - 1, 8, dtype=torch.float64, generator=generator)
        got = relative_distance_scores(states, table, max_positions, keys=keys, block_size=block)
        expected = relative_distance_scores_by_gather(states, table, max_positions, keys=keys)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0, msg=f"L={length}, block={block}")


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_model_with_blocked_relative_scores_equals_the_gather_path(implementation, monkeypatch):
    """Whole model, padded batch, outputs and gradients: the blocked relative scores against the previous path."""
    from adversarial_midibert import modeling_adv_midibert as modeling

    ids, mask = padded_batch()
    results = {}
    for path in ("blocked", "gather"):
        if path == "gather":
            monkeypatch.setattr(modeling, "relative_distance_scores", modeling.relative_distance_scores_by_gather)
        model = build(AdvMidiBertForMaskedLM, attn_implementation=implementation).double()
        out = model(ids, attention_mask=mask)
        main_output(model, out)[mask.bool()].square().sum().backward()
        grad = torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "distance_embedding" in n])
        results[path] = (main_output(model, out).detach(), grad)
    torch.testing.assert_close(results["blocked"][0], results["gather"][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(results["blocked"][1], results["gather"][1], atol=1e-10, rtol=1e-10)


def test_embeddings_scale_and_project():
    model = build(AdvMidiBertModel, hidden_dropout_prob=0.0)
    embeddings = model.embeddings
    ids = random_ids(1, 5)
    concatenated = torch.cat([table(ids[..., i]) for i, table in enumerate(embeddings.attribute_embeddings)], -1)
    expected = embeddings.in_linear(concatenated * 8**0.5) + embeddings.token_type_embeddings.weight[0]
    torch.testing.assert_close(embeddings(ids), embeddings.LayerNorm(expected))
    assert all(torch.all(table.weight[0] == 0) for table in embeddings.attribute_embeddings)  # PAD rows


def test_bad_input_ids_raise_clear_errors():
    model = build(AdvMidiBertModel)
    with pytest.raises(ValueError, match=r"\(batch, length, 8\)"):
        model(random_ids(2, 5)[..., :7])
    ids = random_ids(2, 5)
    ids[1, 2, 3] = VOCAB_SIZES[3]
    with pytest.raises(ValueError, match="'pitch'"):
        model(ids)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(random_ids(1, 41))
    with pytest.raises(ValueError, match="attention_mask"):
        model(random_ids(2, 5), attention_mask=torch.ones(2, 4))


@pytest.mark.parametrize("kind", ["absolute", "relative_key", "relative_key_query"])
def test_sdpa_matches_eager(kind):
    ids, mask = padded_batch()
    model = build(AdvMidiBertModel, position_embedding_type=kind)
    assert model.config._attn_implementation == "sdpa"
    sdpa = model(ids, attention_mask=mask).last_hidden_state
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    eager = model(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(sdpa, eager, atol=ATOL, rtol=0)
    # output_attentions on an sdpa model falls back to eager for that call
    model.set_attn_implementation("sdpa")
    with_attentions = model(ids, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(with_attentions.last_hidden_state, eager, atol=ATOL, rtol=0)


def test_sdpa_and_eager_gradients_match():
    ids, mask = padded_batch()
    grads = {}
    for implementation in ("sdpa", "eager"):
        model = build(AdvMidiBertModel, attn_implementation=implementation)
        model(ids, attention_mask=mask).last_hidden_state.square().sum().backward()
        grads[implementation] = model.encoder.layer[0].attention.self.distance_embedding.weight.grad
    torch.testing.assert_close(grads["sdpa"], grads["eager"], atol=1e-4, rtol=1e-4)


def test_attn_implementation_through_from_pretrained(tmp_path):
    build(AdvMidiBertModel).save_pretrained(tmp_path)
    assert AutoModel.from_pretrained(tmp_path).config._attn_implementation == "sdpa"
    assert AutoModel.from_pretrained(tmp_path, attn_implementation="eager").config._attn_implementation == "eager"
    config = tiny_config()
    assert AutoModel.from_config(config, attn_implementation="eager").config._attn_implementation == "eager"


# --- padding ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["absolute", "relative_key_query"])
def test_bare_model_is_padding_invariant(kind):
    model = build(AdvMidiBertModel, position_embedding_type=kind)
    ids = random_ids(1, 7)
    alone = model(ids).last_hidden_state
    padded_ids = torch.cat([ids, torch.zeros(1, 5, 8, dtype=ids.dtype)], dim=1)
    padded_mask = torch.tensor([[1] * 7 + [0] * 5])
    padded = model(padded_ids, attention_mask=padded_mask).last_hidden_state
    torch.testing.assert_close(padded[:, :7], alone, atol=ATOL, rtol=0)
    # without a mask, all-PAD rows are treated as padding
    torch.testing.assert_close(model(padded_ids).last_hidden_state[:, :7], alone, atol=ATOL, rtol=0)


def test_hidden_attributes_are_never_seen():
    """config.hidden_attributes (velocity for velocity prediction): the one place they are hidden, in every head."""
    model = build(AdvMidiBertForTokenClassification, hidden_attributes=["velocity"])
    velocity = tiny_config().attribute_names.index("velocity")
    ids, mask = padded_batch()
    other = ids.clone()
    other[0, :, velocity] = 5
    torch.testing.assert_close(model(other, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    masked = ids.clone()
    masked[mask.bool(), velocity] = tiny_config().mask_token_id
    torch.testing.assert_close(model(masked, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    assert not torch.equal(build(AdvMidiBertForTokenClassification)(other).logits,
                           build(AdvMidiBertForTokenClassification)(ids).logits)
    with pytest.raises(ValueError, match="hidden_attributes"):
        tiny_config(hidden_attributes=["loudness"])


def test_heads_are_padding_invariant():
    ids = random_ids(1, 7)
    padded_ids = torch.cat([ids, torch.zeros(1, 4, 8, dtype=ids.dtype)], dim=1)
    padded_mask = torch.tensor([[1] * 7 + [0] * 4])

    classifier = build(AdvMidiBertForSequenceClassification)
    alone = classifier(ids)
    padded = classifier(padded_ids, attention_mask=padded_mask)
    torch.testing.assert_close(padded.logits, alone.logits, atol=ATOL, rtol=0)
    assert torch.all(padded.pooling_attentions[..., 7:] == 0)
    torch.testing.assert_close(padded.pooling_attentions.sum(-1), torch.ones(1, 2))

    masked_lm = build(AdvMidiBertForMaskedLM)
    padded_scores = masked_lm(padded_ids, attention_mask=padded_mask).masker_scores
    torch.testing.assert_close(padded_scores[:, :7], masked_lm(ids).masker_scores, atol=ATOL, rtol=0)
    assert torch.all(padded_scores[:, 7:] == 0)


# --- heads and losses -------------------------------------------------------------------------------------------


def test_masked_lm_outputs_and_loss():
    model = build(AdvMidiBertForMaskedLM)
    ids, mask = padded_batch()
    labels = torch.full_like(ids, -100)
    labels[0, 2] = ids[0, 2]
    labels[1, 4, :3] = ids[1, 4, :3]
    labels[0, 5, 6] = ids[0, 5, 6]
    out = model(ids, attention_mask=mask, labels=labels)
    assert [tuple(t.shape) for t in out.logits] == [(2, 10, size) for size in VOCAB_SIZES]
    assert out.masker_scores.shape == (2, 10)
    assert torch.all((out.masker_scores >= 0) & (out.masker_scores <= 1))
    assert torch.all(out.masker_scores[1, 7:] == 0)

    # reference: per attribute, mean cross-entropy over its labelled positions; default weights 1/8
    expected_attribute = torch.zeros(8)
    expected_token = torch.zeros(2, 10)
    for i, logits in enumerate(out.logits):
        chosen = labels[..., i] != -100
        if chosen.any():
            ce = torch.nn.functional.cross_entropy(logits[chosen], labels[..., i][chosen], reduction="none")
            expected_attribute[i] = ce.mean()
            expected_token[chosen] += ce / 8
    torch.testing.assert_close(out.attribute_losses, expected_attribute)
    torch.testing.assert_close(out.loss, expected_attribute.mean())
    torch.testing.assert_close(out.per_token_loss, expected_token)
    assert torch.all(out.per_token_loss[labels.eq(-100).all(-1)] == 0)

    weights = torch.tensor([0.5, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    weighted = model(ids, attention_mask=mask, labels=labels, attribute_weights=weights)
    torch.testing.assert_close(weighted.loss, (weights * expected_attribute).sum())
    with pytest.raises(ValueError, match="attribute_weights"):
        model(ids, labels=labels, attribute_weights=[1.0, 2.0])


def test_masked_lm_switches():
    model = build(AdvMidiBertForMaskedLM)
    ids, mask = padded_batch()
    masker_only = model(ids, attention_mask=mask, compute_logits=False)
    assert masker_only.logits is None and masker_only.masker_scores is not None
    logits_only = model(ids, attention_mask=mask, compute_masker=False)
    assert logits_only.masker_scores is None and len(logits_only.logits) == 8

    model.train()
    detached = model(ids, attention_mask=mask, compute_logits=False, detach_masker_input=True)
    detached.masker_scores.sum().backward()
    assert model.adv_midibert.embeddings.in_linear.weight.grad is None
    assert model.masker.dense.weight.grad is not None
    model.zero_grad(set_to_none=True)
    model(ids, attention_mask=mask, compute_logits=False).masker_scores.sum().backward()
    assert model.adv_midibert.embeddings.in_linear.weight.grad is not None


MULTI_HOT = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
PROBLEM_TYPES = {  # problem type: (num_labels, labels of the padded batch, the loss BERT takes)
    "single_label_classification": (3, torch.tensor([0, 2]), lambda logits, y: F.cross_entropy(logits, y)),
    "regression": (1, torch.tensor([0.5, -1.0]), lambda logits, y: F.mse_loss(logits.squeeze(-1), y)),
    "multi_label_classification": (3, MULTI_HOT, lambda logits, y: F.binary_cross_entropy_with_logits(logits, y)),
}


@pytest.mark.parametrize("given", [False, True], ids=["inferred", "given"])
@pytest.mark.parametrize("problem_type", PROBLEM_TYPES)
def test_sequence_head_takes_the_loss_of_each_problem_type(problem_type, given):
    """BERT's choice: MSE for one label, cross-entropy for class ids, BCE for multi-hot floats; inferred from the
    labels when ``config.problem_type`` is unset."""
    num_labels, labels, loss = PROBLEM_TYPES[problem_type]
    ids, mask = padded_batch()
    model = build(AdvMidiBertForSequenceClassification, num_labels=num_labels,
                  problem_type=problem_type if given else None)
    out = model(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, num_labels) and model.config.problem_type == problem_type
    torch.testing.assert_close(out.loss, loss(out.logits, labels))
    assert out.pooling_attentions.shape == (2, 2, 10)


def test_token_classification_ignores_minus_100():
    ids, mask = padded_batch()
    model = build(AdvMidiBertForTokenClassification)
    labels = torch.randint(0, 3, (2, 10))
    labels[:, 0] = -100
    labels[1, 6:] = -100
    out = model(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, 10, 3)
    keep = labels != -100
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[keep], labels[keep]))


def test_output_hidden_states_and_attentions_shapes():
    ids, mask = padded_batch()
    model = build(AdvMidiBertForMaskedLM)
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    hidden = model.config.hidden_size
    assert len(out.hidden_states) == 3 and all(h.shape == (2, 10, hidden) for h in out.hidden_states)
    assert len(out.attentions) == 2 and all(a.shape == (2, 2, 10, 10) for a in out.attentions)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 2, 10))
    assert torch.all(out.attentions[0][1, :, :, 7:] == 0)  # no attention to padding
    plain = model(ids, attention_mask=mask)
    assert plain.hidden_states is None and plain.attentions is None


def test_gradient_checkpointing_gives_same_gradients():
    ids, mask = padded_batch()
    labels = ids.clone()
    grads = []
    for checkpointing in (False, True):
        model = build(AdvMidiBertForMaskedLM, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      masker_dropout=0.0)
        model.train()
        if checkpointing:
            # transformers 5 renamed gradient_checkpointing_enable (deprecated alias kept until v6)
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            assert model.adv_midibert.encoder.gradient_checkpointing
        out = model(ids, attention_mask=mask, labels=labels)
        (out.loss + out.masker_scores.sum()).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


# --- save / load ------------------------------------------------------------------------------------------------

AUTO_CLASSES = {
    AdvMidiBertModel: AutoModel,
    AdvMidiBertForMaskedLM: AutoModelForMaskedLM,
    AdvMidiBertForSequenceClassification: AutoModelForSequenceClassification,
    AdvMidiBertForTokenClassification: AutoModelForTokenClassification,
}


@pytest.mark.parametrize("model_class", HEADS, ids=lambda c: c.__name__)
def test_save_and_auto_load_give_identical_outputs(tmp_path, model_class):
    ids, mask = padded_batch()
    model = build(model_class)
    model.save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_adv_midibert.py", "modeling_adv_midibert.py"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForMaskedLM",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
    }
    loaded = AUTO_CLASSES[model_class].from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    with torch.no_grad():
        torch.testing.assert_close(
            main_output(loaded, loaded(ids, attention_mask=mask)),
            main_output(model, model(ids, attention_mask=mask)),
            atol=0,
            rtol=0,
        )


def head_labels(model_class, ids, mask):
    """Labels of the padded batch for each head's ``forward`` (-100 at padding); None for the bare model."""
    if model_class is AdvMidiBertForMaskedLM:
        return ids.masked_fill(~mask.bool()[..., None], -100)
    if model_class is AdvMidiBertForSequenceClassification:
        return torch.tensor([0, 2])
    if model_class is AdvMidiBertForTokenClassification:
        return torch.randint(0, 3, mask.shape, generator=torch.Generator().manual_seed(0)).masked_fill(mask == 0, -100)
    return None


@pytest.mark.parametrize("model_class", HEADS, ids=lambda c: c.__name__)
def test_every_head_gives_a_batched_segment_the_output_it_has_alone(model_class):
    ids, mask = padded_batch()
    model = build(model_class)
    batched = main_output(model, model(ids, attention_mask=mask))
    for row, length in enumerate(mask.sum(1).tolist()):
        alone = main_output(model, model(ids[row:row + 1, :length]))
        expected = batched[row:row + 1] if batched.dim() == 2 else batched[row:row + 1, :length]
        torch.testing.assert_close(alone, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model_class", HEADS, ids=lambda c: c.__name__)
def test_every_head_returns_the_same_values_with_return_dict_false(model_class):
    ids, mask = padded_batch()
    model = build(model_class)
    labels = head_labels(model_class, ids, mask)
    kwargs = {"attention_mask": mask, **({"labels": labels} if labels is not None else {})}
    as_dict, as_tuple = model(ids, **kwargs), model(ids, **kwargs, return_dict=False)
    assert type(as_tuple) is tuple
    if labels is not None:
        torch.testing.assert_close(as_tuple[0], as_dict.loss, atol=0, rtol=0)
    torch.testing.assert_close(as_tuple, as_dict.to_tuple(), atol=0, rtol=0)


@pytest.mark.parametrize("model_class", HEADS, ids=lambda c: c.__name__)
def test_every_head_initialises_its_parameters_as_bert(model_class):
    """With ``initializer_range`` near 0 (transformers' ``_config_zero_init``), every weight and bias is 0 and every
    LayerNorm scale 1: nothing escapes ``_init_weights``."""
    model = build(model_class, initializer_range=1e-10)
    for name, parameter in model.named_parameters():
        expected = 1.0 if name.endswith("LayerNorm.weight") else 0.0
        assert abs(parameter.detach().abs().mean().item() - expected) < 1e-9, name


def test_heads_load_encoder_from_masked_lm(tmp_path):
    masked_lm = build(AdvMidiBertForMaskedLM)
    masked_lm.save_pretrained(tmp_path)
    classifier = AdvMidiBertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    assert classifier.config.num_labels == 5
    for name, parameter in masked_lm.adv_midibert.state_dict().items():
        torch.testing.assert_close(classifier.adv_midibert.state_dict()[name], parameter, atol=0, rtol=0)
    ids, _ = padded_batch()
    assert classifier(ids).logits.shape == (2, 5)


def test_parameter_count_of_tiny_model_is_plausible():
    model = build(AdvMidiBertModel)
    c = model.config
    h, a, i = c.hidden_size, c.attribute_embedding_size, c.intermediate_size
    head = h // c.num_attention_heads
    embedding = sum(size * a for size in VOCAB_SIZES) + 8 * a * h + h + h + 2 * h
    attention = 4 * (h * h + h) + (2 * c.max_position_embeddings - 1) * head + 2 * h
    feed_forward = h * i + i + i * h + h + 2 * h
    assert model.num_parameters() == embedding + 2 * (attention + feed_forward)


# --- real tokens ------------------------------------------------------------------------------------------------


def test_real_tokens_run_through_every_head(data_root):
    tokenization = pytest.importorskip("adversarial_midibert.tokenization_octuple")
    tokenizer = tokenization.OctupleTokenizer(max_seq_len=64)
    files = sorted((data_root / "Pianist8" / "midi").rglob("*.mid"))[:2]
    if not files:
        pytest.skip(f"no Pianist8 MIDI files under {data_root}")
    batch = tokenizer([str(f) for f in files], return_tensors="pt")
    ids, mask = batch["input_ids"][:4], batch["attention_mask"][:4]
    config = tiny_config(vocab_sizes=list(tokenizer.vocab_sizes), max_position_embeddings=64)
    torch.manual_seed(0)
    model = AdvMidiBertForMaskedLM(config).eval()
    out = model(ids, attention_mask=mask, labels=ids.masked_fill(~mask.bool()[..., None], -100))
    assert torch.isfinite(out.loss)
    assert out.masker_scores.shape == ids.shape[:2]
    torch.manual_seed(0)
    classifier = AdvMidiBertForSequenceClassification(config).eval()
    assert torch.isfinite(classifier(ids, attention_mask=mask).logits).all()
