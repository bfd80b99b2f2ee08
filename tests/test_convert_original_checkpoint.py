"""adversarial_midibert.hub.convert (adv-midibert convert): a reference-layout state dict converts to a model that
computes the same.

The test builds a random state dict with the reference code's key names and shapes (docs/method.md section 6; a tiny
hidden size), runs an independent re-implementation of the reference forward on real POP909 segments (ids mapped
into the reference vocabulary), and checks our converted model's hidden states and masked-LM logits against it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adversarial_midibert.hub import convert as conv
from adversarial_midibert.modeling_adv_midibert import (
    AdvMidiBertForMaskedLM,
    AdvMidiBertForSequenceClassification,
    AdvMidiBertForTokenClassification,
)
from adversarial_midibert.tokenization_octuple import OctupleTokenizer

HIDDEN, LAYERS, HEADS, MAX_POS, INTERMEDIATE, EMB = 32, 2, 2, 64, 64, 256



@pytest.fixture(scope="module")
def dictionary(data_root) -> Path:
    path = data_root / "reference" / "Octuple.pkl"
    if not path.is_file():
        pytest.skip(f"reference dictionary not found at {path}")
    return path


def reference_state_dict(vocab_sizes, task="mlm", num_classes=3, seed=0) -> dict[str, torch.Tensor]:
    """Random weights under the reference MidiBert(LM) key names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    h, head_dim = HIDDEN, HIDDEN // HEADS
    sd = {
        "bert.embeddings.word_embeddings.weight": rand(30522, h),
        "bert.embeddings.position_embeddings.weight": rand(MAX_POS, h),
        "bert.embeddings.token_type_embeddings.weight": rand(2, h),
        "bert.embeddings.LayerNorm.weight": 1 + rand(h, scale=0.1),
        "bert.embeddings.LayerNorm.bias": rand(h, scale=0.1),
        "bert.pooler.dense.weight": rand(h, h),
        "bert.pooler.dense.bias": rand(h),
        "in_linear.weight": rand(h, 8 * EMB, scale=0.02),
        "in_linear.bias": rand(h),
    }
    for n in range(LAYERS):
        p = f"bert.encoder.layer.{n}."
        for name in ("query", "key", "value"):
            sd[p + f"attention.self.{name}.weight"] = rand(h, h)
            sd[p + f"attention.self.{name}.bias"] = rand(h)
        sd[p + "attention.self.distance_embedding.weight"] = rand(2 * MAX_POS - 1, head_dim)
        sd[p + "attention.output.dense.weight"] = rand(h, h)
        sd[p + "attention.output.dense.bias"] = rand(h)
        sd[p + "attention.output.LayerNorm.weight"] = 1 + rand(h, scale=0.1)
        sd[p + "attention.output.LayerNorm.bias"] = rand(h, scale=0.1)
        sd[p + "intermediate.dense.weight"] = rand(INTERMEDIATE, h)
        sd[p + "intermediate.dense.bias"] = rand(INTERMEDIATE)
        sd[p + "output.dense.weight"] = rand(h, INTERMEDIATE)
        sd[p + "output.dense.bias"] = rand(h)
        sd[p + "output.LayerNorm.weight"] = 1 + rand(h, scale=0.1)
        sd[p + "output.LayerNorm.bias"] = rand(h, scale=0.1)
    for i, n in enumerate(vocab_sizes):
        sd[f"word_emb.{i}.lut.weight"] = rand(n, EMB, scale=0.05)
    for i, (o, k) in enumerate([(h, h), (h, h), (h, h)]):  # attention_linear: defined, never used
        sd[f"attention_linear.{2 * i}.weight"] = rand(o, k)
        sd[f"attention_linear.{2 * i}.bias"] = rand(o)
    if task == "mlm":
        sd = {f"midibert.{k}": v for k, v in sd.items()}
        for i, n in enumerate(vocab_sizes):
            sd[f"mask_lm.proj.{i}.weight"] = rand(n, h)
            sd[f"mask_lm.proj.{i}.bias"] = rand(n)
    elif task == "sequence":
        sd = {f"midibert.{k}": v for k, v in sd.items()}
        sd["attention.ws1.weight"], sd["attention.ws2.weight"] = rand(128, h), rand(4, 128)
        sd["classifier.0.weight"], sd["classifier.0.bias"] = rand(256, 4 * h, scale=0.05), rand(256)
        sd["classifier.2.weight"], sd["classifier.2.bias"] = rand(num_classes, 256), rand(num_classes)
    elif task == "token":
        sd = {f"midibert.{k}": v for k, v in sd.items()}
        sd["classifier.1.weight"], sd["classifier.1.bias"] = rand(256, h), rand(256)
        sd["classifier.3.weight"], sd["classifier.3.bias"] = rand(num_classes + 1, 256), rand(num_classes + 1)
    return sd


def reference_forward(sd, ids, mask):
    """The reference computation (docs/method.md 6), written independently of our modeling code."""
    sd = {k.removeprefix("midibert."): v for k, v in sd.items()}
    embeds = [F.embedding(ids[..., i], sd[f"word_emb.{i}.lut.weight"]) * math.sqrt(EMB) for i in range(8)]
    x = F.linear(torch.cat(embeds, -1), sd["in_linear.weight"], sd["in_linear.bias"])
    x = x + sd["bert.embeddings.token_type_embeddings.weight"][0]
    x = F.layer_norm(x, (HIDDEN,), sd["bert.embeddings.LayerNorm.weight"], sd["bert.embeddings.LayerNorm.bias"], 1e-12)
    B, L, _ = x.shape
    d = HIDDEN // HEADS
    distance = torch.arange(L)[:, None] - torch.arange(L)[None, :] + MAX_POS - 1  # [l, r] -> l - r + M - 1
    bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for n in range(LAYERS):
        p = f"bert.encoder.layer.{n}."

        def lin(t, name):
            return F.linear(t, sd[p + name + ".weight"], sd[p + name + ".bias"])

        q, k, v = (lin(x, f"attention.self.{m}").view(B, L, HEADS, d).transpose(1, 2) for m in ("query", "key",
                                                                                                "value"))
        D = sd[p + "attention.self.distance_embedding.weight"][distance]  # (L, L, d)
        scores = q @ k.transpose(-1, -2)
        scores = scores + torch.einsum("bhld,lrd->bhlr", q, D) + torch.einsum("bhrd,lrd->bhlr", k, D)
        probs = torch.softmax(scores / math.sqrt(d) + bias, dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(B, L, HIDDEN)
        ln = p + "attention.output.LayerNorm"
        x = F.layer_norm(lin(context, "attention.output.dense") + x, (HIDDEN,), sd[ln + ".weight"], sd[ln + ".bias"],
                         1e-12)
        inner = F.gelu(lin(x, "intermediate.dense"))
        ln = p + "output.LayerNorm"
        x = F.layer_norm(lin(inner, "output.dense") + x, (HIDDEN,), sd[ln + ".weight"], sd[ln + ".bias"], 1e-12)
    return x


@pytest.fixture(scope="module")
def real_segments(data_root):
    """Two real POP909 segments (BOS + notes + EOS, at most 40 rows), padded to one batch: our ids and mask."""
    tokenizer = OctupleTokenizer(max_seq_len=40)
    paths = [data_root / "POP909" / "001" / "001.mid", data_root / "POP909" / "002" / "002.mid"]
    rows = []
    for path in paths:
        if not path.is_file():
            pytest.skip(f"POP909 file {path} not found")
        rows.append(torch.as_tensor(tokenizer(str(path), return_tensors="np")["input_ids"][0]))
    lengths = [int((r != tokenizer.pad_token_id).any(-1).sum()) for r in rows]
    ids = torch.zeros(2, 40, 8, dtype=torch.long)
    mask = torch.zeros(2, 40, dtype=torch.long)
    for b, (r, n) in enumerate(zip(rows, [lengths[0], lengths[1] - 7])):  # the second one shorter: padding
        ids[b, :n] = r[:n]
        mask[b, :n] = 1
    return tokenizer, ids, mask


def to_reference_ids(ids, mask, source_rows, reference_pad_rows):
    out = torch.empty_like(ids)
    for a in range(8):
        table = torch.tensor(source_rows[a])
        mapped = table[ids[..., a]]
        assert bool((mapped[mask.bool()] >= 0).all()), f"attribute {a}: a real token has no reference row"
        out[..., a] = torch.where(mask.bool(), mapped, torch.full_like(mapped, reference_pad_rows[a]))
    return out


def test_converted_mlm_reproduces_the_reference_forward(tmp_path, dictionary, real_segments):
    tokenizer, ids, mask = real_segments
    reference_vocab = conv.load_reference_dictionary(dictionary)
    sizes = [len(v) for v in reference_vocab]
    assert sizes == [262, 134, 135, 262, 134, 38, 260, 55]
    sd = reference_state_dict(sizes, "mlm")
    checkpoint = tmp_path / "midibert_lm.pt"
    torch.save({"state_dict": sd, "epoch": 3}, checkpoint)

    out_dir = tmp_path / "converted"
    report = conv.convert(checkpoint, dictionary, "mlm", out_dir, tokenizer=tokenizer)

    source_rows, _ = conv.build_vocabulary_maps(reference_vocab, list(map(list, tokenizer.vocab)),
                                                tokenizer.max_num_pos_per_beat)
    pad_rows = [v[f"{name} <PAD>"] for v, name in zip(reference_vocab, conv.REFERENCE_ATTRIBUTES)]
    ref_ids = to_reference_ids(ids, mask, source_rows, pad_rows)
    expected_hidden = reference_forward(sd, ref_ids, mask)

    model = AdvMidiBertForMaskedLM.from_pretrained(out_dir).eval()
    assert model.config.hidden_size == HIDDEN and model.config.num_hidden_layers == LAYERS
    assert model.config.num_attention_heads == HEADS and model.config.max_position_embeddings == MAX_POS
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, compute_masker=False)
    real = mask.bool()
    torch.testing.assert_close(out.hidden_states[-1][real], expected_hidden[real], atol=1e-4, rtol=1e-4)
    for a in range(8):
        mapped = [j for j, r in enumerate(source_rows[a]) if r >= 0]
        theirs = F.linear(expected_hidden, sd[f"mask_lm.proj.{a}.weight"], sd[f"mask_lm.proj.{a}.bias"])
        torch.testing.assert_close(
            out.logits[a][real][:, mapped], theirs[real][:, [source_rows[a][j] for j in mapped]], atol=1e-4, rtol=1e-4
        )

    # The report: written, and complete about what was not mapped.
    saved = json.loads((out_dir / "conversion_report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    ignored = set(saved["checkpoint_keys_ignored_by_design"])
    assert {"bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
            "bert.pooler.dense.weight", "attention_linear.0.weight"} <= ignored
    assert saved["checkpoint_keys_not_mapped"] == []
    assert set(saved["model_parameters_not_from_checkpoint"]) == {
        k for k in model.state_dict() if k.startswith("masker.")
    }
    for name in ("bar", "position", "pitch", "velocity", "tempo"):
        entry = saved["vocabularies"][name]
        assert entry["ours_mapped"] + len(entry["ours_without_source"]) == entry["ours_size"]
    assert "Pitch <CLS>" in saved["vocabularies"]["pitch"]["reference_without_target"]
    assert saved["vocabularies"]["pitch"]["ours_mapped_fraction"] == 1.0
    # Unmapped tokens of ours got the mean of the reference rows.
    position_rows = source_rows[1]
    if -1 in position_rows:
        j = position_rows.index(-1)
        table = sd["midibert.word_emb.1.lut.weight"][:128]
        torch.testing.assert_close(model.adv_midibert.embeddings.attribute_embeddings[1].weight[j], table.mean(0))
    for name in ("config.json", "model.safetensors", "octuple_tokenizer.json", "modeling_adv_midibert.py"):
        assert (out_dir / name).is_file(), name


def test_token_classifier_drops_the_padding_class(tmp_path, dictionary):
    sizes = [len(v) for v in conv.load_reference_dictionary(dictionary)]
    sd = reference_state_dict(sizes, "token", num_classes=3, seed=1)
    checkpoint = tmp_path / "melody.ckpt"
    torch.save(sd, checkpoint)
    conv.convert(checkpoint, dictionary, "token", tmp_path / "out", num_labels=3)
    model = AdvMidiBertForTokenClassification.from_pretrained(tmp_path / "out")
    assert model.config.num_labels == 3
    torch.testing.assert_close(model.classifier[3].weight, sd["classifier.3.weight"][1:])
    with pytest.raises(conv.ConversionError, match="num_labels 5"):
        conv.convert(checkpoint, dictionary, "token", tmp_path / "out2", num_labels=5)


def test_bad_inputs_are_named(tmp_path, dictionary):
    with pytest.raises(conv.ConversionError, match="missing.pt"):
        conv.convert(tmp_path / "missing.pt", dictionary, "mlm", tmp_path / "o")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(conv.ConversionError, match="junk.pt"):
        conv.convert(junk, dictionary, "mlm", tmp_path / "o")
    sizes = [len(v) for v in conv.load_reference_dictionary(dictionary)]
    checkpoint = tmp_path / "seq.pt"
    torch.save(reference_state_dict(sizes, "token"), checkpoint)
    with pytest.raises(conv.ConversionError, match="mask_lm.proj.0.weight"):
        conv.convert(checkpoint, dictionary, "mlm", tmp_path / "o")
    assert conv.main(["--checkpoint", str(junk), "--dictionary", str(dictionary), "--task", "mlm",
                      "--output_dir", str(tmp_path / "o")]) == 2


class _RunsCode:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_crafted_dictionary_runs_no_code(tmp_path):
    """Issue 11 failure 2: --dictionary was read with pickle.load, so a crafted file ran code."""
    import pickle

    proof = tmp_path / "code_ran"
    crafted = tmp_path / "Octuple.pkl"
    crafted.write_bytes(pickle.dumps(({"Bar": {"Bar 0": 0}, "Pitch": _RunsCode(proof)}, {})))
    with pytest.raises(conv.ConversionError, match=r"Octuple.pkl is not a readable pickle of plain data: refusing "
                                                   r"to load pathlib"):
        conv.load_reference_dictionary(crafted)
    assert not proof.exists()
    odd = tmp_path / "odd.pkl"
    odd.write_bytes(pickle.dumps(({"Bar": {b"Bar 0", 1}}, {})))  # bytes and a set: not plain data
    with pytest.raises(conv.ConversionError, match="odd.pkl holds a set"):
        conv.load_reference_dictionary(odd)
    plain = tmp_path / "plain.pkl"
    event2word = {name: {f"{name} 0": 0} for name in conv.REFERENCE_ATTRIBUTES}
    plain.write_bytes(pickle.dumps((event2word, {})))
    assert conv.load_reference_dictionary(plain)[0] == {"Bar 0": 0}


# Token pairs checked by hand against the reference encoder's units (SPEC 6; our tokenizer has 8 positions per
# beat, the reference 16; its duration token = length in 1/16 notes up to 15, then every 2 up to 47...; velocity
# bins of 4; tempo bin = round(12 log2(bpm / 16)), each bin written as 16 * 2^(bin/12)).
HAND_CHECKED_PAIRS = {
    "bar": [("Bar_0", "Bar 0"), ("Bar_7", "Bar 7"), ("Bar_255", "Bar 255")],
    "position": [("Position_0", "Position 0/64"), ("Position_1", "Position 2/64"), ("Position_3", "Position 6/64"),
                 ("Position_31", "Position 62/64")],
    "program": [("Program_0", "Instrument 0"), ("Program_33", "Instrument 33"), ("Program_-1", "Instrument "
                                                                                               "percussion")],
    "pitch": [("Pitch_60", "Pitch 60"), ("Pitch_21", "Pitch 21"), ("PitchDrum_36", "Pitch percussion 36")],
    "duration": [("Duration_0.1.8", "Duration 2"), ("Duration_0.3.8", "Duration 6"), ("Duration_1.0.8", "Duration 16"),
                 ("Duration_2.0.8", "Duration 24")],
    "velocity": [("Velocity_3", "Velocity 2"), ("Velocity_63", "Velocity 62"), ("Velocity_127", "Velocity 126")],
    "time_signature": [("TimeSig_4/4", "TimeSig 4/4"), ("TimeSig_6/8", "TimeSig 6/8"), ("TimeSig_3/4", "TimeSig 3/4")],
    "tempo": [("Tempo_40.0", "Tempo 40.31747359663594"), ("Tempo_60.32", "Tempo 60.407956011628386"),
              ("Tempo_100.97", "Tempo 101.59366732596476"), ("Tempo_121.29", "Tempo 120.81591202325676"),
              ("Tempo_250.0", "Tempo 256.0")],
}


def _hand_checked_rows(tokenizer, reference_vocab):
    """Rows of our ids and of the reference rows built from HAND_CHECKED_PAIRS (row j takes pair j of each)."""
    width = max(len(pairs) for pairs in HAND_CHECKED_PAIRS.values())
    ours = torch.zeros(1, width, 8, dtype=torch.long)
    theirs = torch.zeros(1, width, 8, dtype=torch.long)
    for a, name in enumerate(tokenizer.attribute_names):
        pairs = HAND_CHECKED_PAIRS[name]
        for j in range(width):
            our_token, reference_token = pairs[j % len(pairs)]
            ours[0, j, a] = tokenizer.vocab[a][our_token]
            theirs[0, j, a] = reference_vocab[a][reference_token]
    return ours, theirs


def test_converted_rows_match_a_hand_checked_table(tmp_path, dictionary):
    """Issue 19 item 15: the test above builds its expected ids with ``build_vocabulary_maps``, the code under test,
    so "tempo bin + 1" passed. Here each of our tokens must carry the embedding and output rows of the reference
    token a person matched to it, and the converted model must compute the reference forward on those ids."""
    tokenizer = OctupleTokenizer(max_seq_len=40)
    reference_vocab = conv.load_reference_dictionary(dictionary)
    sd = reference_state_dict([len(v) for v in reference_vocab], "mlm", seed=2)
    torch.save(sd, tmp_path / "lm.pt")
    conv.convert(tmp_path / "lm.pt", dictionary, "mlm", tmp_path / "out", tokenizer=tokenizer, progress=False)
    model = AdvMidiBertForMaskedLM.from_pretrained(tmp_path / "out").eval()
    for a, name in enumerate(tokenizer.attribute_names):
        for our_token, reference_token in HAND_CHECKED_PAIRS[name]:
            ours, theirs = tokenizer.vocab[a][our_token], reference_vocab[a][reference_token]
            torch.testing.assert_close(model.adv_midibert.embeddings.attribute_embeddings[a].weight[ours],
                                       sd[f"midibert.word_emb.{a}.lut.weight"][theirs], msg=f"{our_token}")
            torch.testing.assert_close(model.lm_heads[a].weight[ours], sd[f"mask_lm.proj.{a}.weight"][theirs],
                                       msg=f"{our_token}")
    ids, reference_ids = _hand_checked_rows(tokenizer, reference_vocab)
    mask = torch.ones(ids.shape[:2], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, compute_masker=False)
    torch.testing.assert_close(out.hidden_states[-1], reference_forward(sd, reference_ids, mask), atol=1e-4, rtol=1e-4)


def test_converted_sequence_classifier_reproduces_the_reference_head(tmp_path, dictionary):
    """Issue 19 item 15: no test covered the sequence head, so a zeroed pooling weight passed. The reference head
    (SPEC 2): A = softmax over tokens of W2 tanh(W1 H), M = A H flattened, Linear -> ReLU -> Linear."""
    tokenizer = OctupleTokenizer(max_seq_len=40)
    reference_vocab = conv.load_reference_dictionary(dictionary)
    sd = reference_state_dict([len(v) for v in reference_vocab], "sequence", num_classes=5, seed=3)
    torch.save(sd, tmp_path / "seq.pt")
    conv.convert(tmp_path / "seq.pt", dictionary, "sequence", tmp_path / "out", tokenizer=tokenizer, progress=False)
    model = AdvMidiBertForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert model.config.num_labels == 5
    ids, reference_ids = _hand_checked_rows(tokenizer, reference_vocab)
    mask = torch.ones(ids.shape[:2], dtype=torch.long)  # no padding: the reference's unmasked softmax agrees
    hidden = reference_forward(sd, reference_ids, mask)
    views = torch.softmax(F.linear(torch.tanh(F.linear(hidden, sd["attention.ws1.weight"])),
                                   sd["attention.ws2.weight"]),
                          dim=1)  # (B, L, r): over the tokens
    pooled = (views.transpose(1, 2) @ hidden).flatten(1)  # (B, r * h)
    inner = F.relu(F.linear(pooled, sd["classifier.0.weight"], sd["classifier.0.bias"]))
    expected = F.linear(inner, sd["classifier.2.weight"], sd["classifier.2.bias"])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_a_pickle_referencing_one_list_many_times_is_checked_in_bounded_time(tmp_path):
    """Issue 19 item 7: a 456-byte pickle referencing one list from many places (fan-out 30, depth 7) made the
    plain-data check walk 30^7 paths (hours). Each container is now checked once."""
    import pickle
    import time

    value: list = ["x"]
    for _ in range(6):  # with the outer list and tuple, 8 levels: within the depth limit
        value = [value] * 30
    data = pickle.dumps((value, {}))
    assert len(data) < 1000
    (tmp_path / "fan.pkl").write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(conv.ConversionError, match="must hold \\(event2word, word2event\\)|lacks"):
        conv.load_reference_dictionary(tmp_path / "fan.pkl")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("attribute, table, match", [
    ("Bar", {"Bar 0": float("nan"), "Bar 1": 1}, r"rows of Bar must be the integers 0..1 each once, found nan"),
    ("Bar", {"Bar 0": "0"}, r"found '0'"),
    ("Bar", {"Bar 0": 0, "Bar 1": 10**12}, r"found 1000000000000"),
    ("Bar", {"Bar 0": 0, "Bar 1": 0}, r"found repeats"),
    ("Pitch", {0: 0}, r"Pitch must map token strings to rows, found dict with non-string keys"),
    ("Tempo", "Tempo 120", r"Tempo must map token strings to rows, found str"),
])
def test_dictionary_values_of_the_wrong_kind_are_named(tmp_path, attribute, table, match):
    """Issue 19 item 12: NaN, string or huge rows, int keys or a string attribute gave tracebacks."""
    import pickle

    event2word = {name: {f"{name} 0": 0} for name in conv.REFERENCE_ATTRIBUTES}
    event2word[attribute] = table
    (tmp_path / "Octuple.pkl").write_bytes(pickle.dumps((event2word, {})))
    with pytest.raises(conv.ConversionError, match=rf"Octuple.pkl: (the )?.*{match}"):
        conv.load_reference_dictionary(tmp_path / "Octuple.pkl")


def test_a_stride_zero_tensor_is_refused_before_it_is_expanded(tmp_path):
    """Issue 19 item 7: a tensor saved as ``expand`` (stride 0) holds a few bytes but copying it allocates its whole
    shape (32 GB in the reported case); it is refused, naming the key."""
    (tmp_path / "ckpt.pt").write_bytes(b"")
    torch.save({"bert.embeddings.LayerNorm.weight": torch.ones(1).expand(1 << 20),
                "in_linear.weight": torch.zeros(2, 2)}, tmp_path / "ckpt.pt")
    with pytest.raises(conv.ConversionError, match=r"tensor bert.embeddings.LayerNorm.weight \(1048576,\) is stored "
                                                   r"in 4 bytes"):
        conv.load_reference_state_dict(tmp_path / "ckpt.pt")


# ------------------------------------------------------------------------------ the authors' weights, by Hub id
AUTHORS_REPO = "RS2002/Adversarial-MidiBERT"


def authors_hub_folder(folder: Path, vocab_sizes, outer: str = "") -> Path:
    """A replica of the authors' Hub repository: the reference module layout (``midibert.word_emb.N.lut``,
    ``midibert.bert.encoder.layer.N...``, ``mask_lm.proj.N``) with random weights, saved by huggingface_hub's
    ``PyTorchModelHubMixin`` (``model.safetensors`` and ``config.json``, no Octuple dictionary); ``outer`` is a
    prefix of every key (a model wrapped in another module)."""
    from huggingface_hub import PyTorchModelHubMixin

    class MidiBertLM(torch.nn.Module, PyTorchModelHubMixin):
        def __init__(self, vocab_sizes: list, seed: int = 0):
            super().__init__()
            for key, value in reference_state_dict(vocab_sizes, "mlm", seed=seed).items():
                *path, name = (outer + key).split(".")
                module = self
                for part in path:
                    if part not in module._modules:
                        module.add_module(part, torch.nn.Module())
                    module = module._modules[part]
                module.register_parameter(name, torch.nn.Parameter(value))

    MidiBertLM(vocab_sizes=list(vocab_sizes)).save_pretrained(folder)
    return folder


def test_the_authors_hub_layout_converts_by_hub_id_and_by_folder(tmp_path, dictionary, data_root, monkeypatch):
    import huggingface_hub.constants

    from adversarial_midibert.pipelines import MIDI_FEATURE_EXTRACTION, midi_pipeline

    from script_env import as_cached_hub_repo

    sizes = [len(v) for v in conv.load_reference_dictionary(dictionary)]
    authors = authors_hub_folder(tmp_path / "authors", sizes)
    assert {p.name for p in authors.iterdir()} >= {"model.safetensors", "config.json"}
    as_cached_hub_repo(authors, tmp_path / "hub_cache", AUTHORS_REPO)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    expected = reference_state_dict(sizes, "mlm")
    song = min((data_root / "POP909" / "001").glob("*.mid"))
    for source, name in ((AUTHORS_REPO, "by_id"), (authors, "by_folder"),
                         (authors_hub_folder(tmp_path / "wrapped", sizes, outer="model."), "wrapped")):
        out = tmp_path / f"converted_{name}"
        report = conv.convert(source, dictionary, "mlm", out, progress=False)
        assert report["checkpoint_keys_not_mapped"] == [], name
        model = AdvMidiBertForMaskedLM.from_pretrained(out)
        torch.testing.assert_close(model.adv_midibert.embeddings.in_linear.weight,
                                   expected["midibert.in_linear.weight"])
        # the tokenizer fits the model: a piece longer than its 64 positions runs as several segments
        assert OctupleTokenizer.from_pretrained(out).max_seq_len == MAX_POS == model.config.max_position_embeddings
        assert midi_pipeline(MIDI_FEATURE_EXTRACTION, str(out), device="cpu")(str(song))["num_segments"] > 1
    with pytest.raises(conv.ConversionError, match="some-org/not-there"):
        conv.convert("some-org/not-there", dictionary, "mlm", tmp_path / "none", progress=False)


def test_convert_writes_aside_and_never_over_a_folder_it_did_not_write(tmp_path, dictionary):
    sizes = [len(v) for v in conv.load_reference_dictionary(dictionary)]
    checkpoint = tmp_path / "lm.pt"
    torch.save(reference_state_dict(sizes, "mlm"), checkpoint)
    out = tmp_path / "converted"
    conv.convert(checkpoint, dictionary, "mlm", out, progress=False)
    (out / "all_results.json").write_text("{}")  # a file the conversion did not write
    conv.convert(checkpoint, dictionary, "mlm", out, progress=False)  # an earlier conversion: replaced whole
    assert not (out / "all_results.json").exists() and (out / "conversion_report.json").is_file()
    trained = tmp_path / "trained"
    AdvMidiBertForMaskedLM.from_pretrained(out).save_pretrained(trained)
    before = sorted(p.name for p in trained.iterdir())
    assert conv.main(["--checkpoint", str(checkpoint), "--dictionary", str(dictionary), "--task", "mlm",
                      "--output_dir", str(trained)]) == 2
    assert sorted(p.name for p in trained.iterdir()) == before and not (trained / "conversion_report.json").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_numbers_are_refused(tmp_path, dictionary, value, capsys):
    sizes = [len(v) for v in conv.load_reference_dictionary(dictionary)]
    sd = reference_state_dict(sizes, "mlm")
    sd["midibert.bert.encoder.layer.1.output.dense.weight"][3, 5] = value
    torch.save(sd, tmp_path / "lm.pt")
    assert conv.main(["--checkpoint", str(tmp_path / "lm.pt"), "--dictionary", str(dictionary), "--task", "mlm",
                      "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bert.encoder.layer.1.output.dense.weight" in err and "1 value" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", ["flat_distance", "layer_x"])
def test_a_malformed_checkpoint_is_one_line(tmp_path, dictionary, change, capsys):
    sizes = [len(v) for v in conv.load_reference_dictionary(dictionary)]
    sd = reference_state_dict(sizes, "mlm")
    if change == "flat_distance":
        key = "midibert.bert.encoder.layer.0.attention.self.distance_embedding.weight"
        sd[key] = sd[key].flatten()
        said = "distance_embedding.weight"
    else:
        sd["midibert.bert.encoder.layer.x.output.dense.weight"] = torch.zeros(2, 2)
        said = "bert.encoder.layer.x.output.dense.weight"
    torch.save(sd, tmp_path / "lm.pt")
    assert conv.main(["--checkpoint", str(tmp_path / "lm.pt"), "--dictionary", str(dictionary), "--task", "mlm",
                      "--output_dir", str(tmp_path / "out")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # the progress bar aside
    assert len(errors) == 1 and said in errors[0].split("error:", 1)[1], errors
