"""Convert a checkpoint of the authors' reference Adversarial-MidiBERT code into our Hub format.

    adv-midibert convert --checkpoint ckpt.pt|FOLDER|HUB_ID --dictionary Octuple.pkl \\
        --task mlm|sequence|token [--num_labels C] --output_dir DIR [--tokenizer DIR]

The reference code (a ``MidiBert`` around a transformers-4 ``BertModel`` with ``relative_key_query`` positions,
docs/method.md section 6) saves plain state dicts. The converter loads one safely (weights only, no NaN/inf), maps
the encoder onto ``AdvMidiBertModel`` (the same computation), matches the reference dictionary (``Octuple.pkl``:
``Pitch 60``, ``Duration 7``...) to our miditok tokens (``Pitch_60``, ``Duration_1.0.8``...) by *value* with the
reference encoder's own quantisation (:func:`reference_key`, :func:`our_key`), re-orders the embedding and
masked-LM rows, and writes ``save_pretrained`` output, the remote code, the tokenizer and
``conversion_report.json``. The report lists our tokens without a source row (they get the mean non-special row,
and the lowest bias of the head, so they start as unlikely predictions), reference tokens without a target, and
the checkpoint keys not mapped (those the reference never reads are "ignored by design"). Positions and durations
are compared in quarter-note beats, so for x/8 bars the mapping is approximate.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ..atomic_io import atomic_write_json, write_folder_aside
from ..constants import ATTRIBUTE_NAMES
from ..output_folders import check_output_folder
from ._common import HubPublishError

# The reference dictionary's attribute names, in our attribute order.
REFERENCE_ATTRIBUTES: tuple[str, ...] = (
    "Bar", "Position", "Instrument", "Pitch", "Duration", "Velocity", "TimeSig", "Tempo"
)
REFERENCE_SPECIALS = {"<PAD>": "PAD", "<MASK>": "MASK", "<SOS>": "BOS", "<EOS>": "EOS", "<CLS>": "CLS", "<SEP>": "SEP"}
OUR_SPECIALS = {"PAD_None": "PAD", "BOS_None": "BOS", "EOS_None": "EOS", "MASK_None": "MASK"}

# The reference encoder's quantisation (MusicBERT's OctupleMIDI, used by the authors' data code).
POS_RESOLUTION = 16  # positions per quarter note
DURATION_MAX = 8
VELOCITY_QUANT = 4
TEMPO_QUANT = 12
MIN_TEMPO, MAX_TEMPO = 16, 256
MAX_TS_DENOMINATOR_POWER = 6
MAX_NOTES_PER_BAR = 2

IGNORED_BY_DESIGN = (
    "bert.embeddings.word_embeddings.",  # the reference feeds inputs_embeds
    "bert.embeddings.position_embeddings.",  # unused with relative_key_query positions
    "bert.embeddings.position_ids",
    "bert.embeddings.token_type_ids",
    "bert.pooler.",  # the reference never reads pooler_output
    "attention_linear.",  # defined in MidiBert, never called in forward
)


CONVERSION_REPORT_NAME = "conversion_report.json"


class ConversionError(ValueError):
    """The checkpoint or the dictionary cannot be converted; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------
# Vocabulary mapping
# --------------------------------------------------------------------------------------------
def _duration_encoding() -> list[int]:
    """The reference code's duration bins: index = length in 1/16 quarter notes, value = duration token."""
    encoding: list[int] = []
    token = 0
    for i in range(DURATION_MAX):
        for _ in range(POS_RESOLUTION):
            encoding.extend([token] * (2**i))
            token += 1
    return encoding


_DURATION_ENCODING = _duration_encoding()


def _tempo_bin(bpm: float) -> int:
    bpm = min(max(bpm, MIN_TEMPO), MAX_TEMPO)
    return round(math.log2(bpm / MIN_TEMPO) * TEMPO_QUANT)


def _reduce_time_signature(numerator: int, denominator: int) -> tuple[int, int]:
    """The reference code's ``time_signature_reduce``."""
    while denominator > 2**MAX_TS_DENOMINATOR_POWER and denominator % 2 == 0 and numerator % 2 == 0:
        denominator //= 2
        numerator //= 2
    while numerator > MAX_NOTES_PER_BAR * denominator:
        for i in range(2, numerator + 1):
            if numerator % i == 0:
                numerator //= i
                break
    return numerator, denominator


def reference_key(attribute: int, token: str) -> Any:
    """Canonical key of a token of the REFERENCE dictionary (e.g. ``"Pitch 60"``), or None if not a value.

    Keys are what the reference encoder would produce: bar index, position in 1/16 quarter notes, program
    (``"drums"`` for percussion), ``("pitch", n)`` / ``("drum", n)``, duration token index, velocity bin, reduced
    ``(numerator, denominator)``, tempo bin; special tokens map to ``"PAD"``, ``"MASK"``, ``"BOS"``... ``"SEP"``.

    Args:
        attribute: attribute index in our order (0 bar ... 7 tempo).
        token: the dictionary's token string.
    """
    name, _, value = token.partition(" ")
    if value in REFERENCE_SPECIALS:
        return REFERENCE_SPECIALS[value]
    try:
        if attribute == 0:
            return int(value)
        if attribute == 1:
            return int(value.split("/")[0])
        if attribute == 2:
            return "drums" if value == "percussion" else int(value)
        if attribute == 3:
            if value.startswith("percussion "):
                return ("drum", int(value.split()[1]))
            return ("pitch", int(value))
        if attribute == 4:
            return int(value)
        if attribute == 5:
            return int(value) // VELOCITY_QUANT
        if attribute == 6:
            numerator, denominator = value.split("/")
            return (int(numerator), int(denominator))
        if attribute == 7:
            return _tempo_bin(float(value))
    except (ValueError, IndexError):
        return None
    return None


def our_key(attribute: int, token: str) -> Any:
    """Canonical key (see :func:`reference_key`) of one of OUR miditok tokens, e.g. ``"Duration_1.0.8"``.

    Values are converted with the reference encoder's own quantisation (positions and durations to 1/16 quarter
    notes, then the logarithmic duration bins; velocity and tempo bins; reduced time signatures). Returns None for
    a token it cannot read.

    Args:
        attribute: attribute index in our order (0 bar ... 7 tempo).
        token: our token string (``Type_value``).
    """
    if token in OUR_SPECIALS:
        return OUR_SPECIALS[token]
    kind, _, value = token.partition("_")
    try:
        if attribute == 0:
            return int(value)
        if attribute == 1:
            return None if kind != "Position" else ("ticks", int(value))  # resolved with the resolution
        if attribute == 2:
            program = int(value)
            return "drums" if program == -1 else program
        if attribute == 3:
            return ("drum", int(value)) if kind == "PitchDrum" else ("pitch", int(value))
        if attribute == 4:
            beat, tick, resolution = (int(x) for x in value.split("."))
            length = round((Fraction(beat) + Fraction(tick, resolution)) * POS_RESOLUTION)
            return _DURATION_ENCODING[min(length, len(_DURATION_ENCODING) - 1)]
        if attribute == 5:
            return int(value) // VELOCITY_QUANT
        if attribute == 6:
            numerator, denominator = value.split("/")
            return _reduce_time_signature(int(numerator), int(denominator))
        if attribute == 7:
            return _tempo_bin(float(value))
    except (ValueError, IndexError):
        return None
    return None


def build_vocabulary_maps(
    reference_vocabularies: Sequence[Mapping[str, int]],
    our_vocabularies: Sequence[Sequence[str]],
    positions_per_beat: int,
) -> tuple[list[list[int]], dict[str, Any]]:
    """Match every token of ours to a reference token (or none), attribute by attribute.

    Args:
        reference_vocabularies: per attribute in our order, the reference ``event2word`` dict
            (token string -> row index).
        our_vocabularies: per attribute in our order, our token strings indexed by id.
        positions_per_beat: ticks per quarter note of our ``Position_n`` tokens (miditok's
            ``max(beat_res.values())``).

    Returns:
        ``(source_rows, report)``: ``source_rows[a][i]`` is the reference row of our id ``i`` of attribute ``a``
        (-1: none), and per attribute the unmapped tokens of both sides and the mapped fractions.
    """
    source_rows: list[list[int]] = []
    report: dict[str, Any] = {}
    for attribute, (reference, ours) in enumerate(zip(reference_vocabularies, our_vocabularies)):
        by_key: dict[Any, int] = {}
        for token, row in reference.items():
            key = reference_key(attribute, token)
            if key is not None:
                by_key.setdefault(key, int(row))
        rows = []
        for token in ours:
            key = our_key(attribute, token)
            if isinstance(key, tuple) and key and key[0] == "ticks":
                key = round(Fraction(key[1] * POS_RESOLUTION, positions_per_beat))
            rows.append(by_key.get(key, -1) if key is not None else -1)
        used = set(rows)
        ours_unmapped = [token for token, row in zip(ours, rows) if row < 0]
        theirs_unmapped = [token for token, row in sorted(reference.items(), key=lambda kv: kv[1]) if row not in used]
        name = ATTRIBUTE_NAMES[attribute]
        report[name] = {
            "ours_size": len(ours),
            "reference_size": len(reference),
            "ours_mapped": len(ours) - len(ours_unmapped),
            "ours_mapped_fraction": round((len(ours) - len(ours_unmapped)) / max(len(ours), 1), 4),
            "reference_used": len(reference) - len(theirs_unmapped),
            "reference_used_fraction": round((len(reference) - len(theirs_unmapped)) / max(len(reference), 1), 4),
            "ours_without_source": ours_unmapped,
            "reference_without_target": theirs_unmapped,
        }
        source_rows.append(rows)
    return source_rows, report


class DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, tuples, strings, numbers (what ``Octuple.pkl`` holds).

    A pickle can name any importable callable and have it called while loading; this unpickler refuses every
    such name (``find_class``), so a crafted file fails with an error instead of running code.
    """

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data (dicts, lists, strings, "
                                     "numbers) is read from a dictionary file")


def _check_plain(value: Any, depth: int = 0, seen: set[int] | None = None) -> None:
    """Raise :class:`ConversionError` unless ``value`` is plain data; each container is checked once (a pickle
    can reference one list from many places: walking every reference would take exponential time)."""
    seen = set() if seen is None else seen
    if depth > 8:
        raise ConversionError("nested too deeply")
    if isinstance(value, (dict, list, tuple)):
        if id(value) in seen:
            return
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _check_plain(key, depth + 1, seen)
            _check_plain(item, depth + 1, seen)
    elif not isinstance(value, (str, int, float)):
        raise ConversionError(f"holds a {type(value).__name__}, not plain data")


def load_reference_dictionary(path: str | Path) -> list[dict[str, int]]:
    """The ``event2word`` dicts, in our attribute order, of the reference ``Octuple.pkl`` (a pickled
    ``(event2word, word2event)``), read with :class:`DataOnlyUnpickler`: nothing in the file is ever run.

    Raises:
        ConversionError: the file is missing, not a pickle of plain data of that shape, or lacks an attribute.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"--dictionary {path} does not exist")
    try:
        with path.open("rb") as handle:
            data = DataOnlyUnpickler(handle).load()
    except Exception as error:  # any unpickling failure is a bad file
        raise ConversionError(f"--dictionary {path} is not a readable pickle of plain data: {error}") from error
    try:
        _check_plain(data)
    except ConversionError as error:
        raise ConversionError(f"--dictionary {path} {error}") from None
    event2word = data[0] if isinstance(data, (tuple, list)) else data
    if not isinstance(event2word, dict):
        raise ConversionError(f"--dictionary {path} must hold (event2word, word2event), found {type(data).__name__}")
    missing = [name for name in REFERENCE_ATTRIBUTES if name not in event2word]
    if missing:
        raise ConversionError(f"--dictionary {path} lacks the attribute(s) {missing}; found {list(event2word)}")
    for name in REFERENCE_ATTRIBUTES:  # token string -> row, the rows 0..n-1 each once (an embedding table's rows)
        table = event2word[name]
        if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
            raise ConversionError(f"--dictionary {path}: {name} must map token strings to rows, found "
                                  f"{type(table).__name__}" + (" with non-string keys" if isinstance(table, dict)
                                                               else ""))
        rows = list(table.values())
        if any(type(r) is not int for r in rows) or sorted(rows) != list(range(len(rows))):
            bad = next((r for r in rows if type(r) is not int or not 0 <= r < len(rows)), None)
            raise ConversionError(f"--dictionary {path}: the rows of {name} must be the integers 0..{len(rows) - 1} "
                                  f"each once" + (f", found {bad!r}" if bad is not None else ", found repeats"))
    return [dict(event2word[name]) for name in REFERENCE_ATTRIBUTES]


# --------------------------------------------------------------------------------------------
# Checkpoint
# --------------------------------------------------------------------------------------------
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what a Hub repository of weights holds (the mixin's first)


def _checkpoint_file(source: str | Path) -> Path:
    """The weights file of ``--checkpoint``: a file; a folder holding one of :data:`WEIGHT_FILES` (the layout
    ``PyTorchModelHubMixin.save_pretrained`` writes); or a Hub id, downloaded (or read from the Hub cache)."""
    import re

    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        found = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
        if found is None:
            raise ConversionError(f"--checkpoint {path} is a folder without {' or '.join(WEIGHT_FILES)}")
        return found
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
        raise ConversionError(f"--checkpoint {path} does not exist")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for name in WEIGHT_FILES:
        try:
            return Path(hf_hub_download(str(source), name))
        except EntryNotFoundError:
            continue
        except (OSError, ValueError) as error:
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConversionError(f"--checkpoint {source}: not a readable Hub repository of weights "
                                  f"({message})") from None
    raise ConversionError(f"--checkpoint {source}: the Hub repository holds neither {' nor '.join(WEIGHT_FILES)} "
                          "(or they are not in the Hub cache, offline)")


def _encoder_prefixes(keys: Sequence[str], path: Path) -> tuple[str, str]:
    """``(encoder, outer)``: the prefix of the encoder's keys (the one before ``in_linear.weight``, e.g.
    ``midibert.`` or ``model.midibert.``) and the prefix of the whole model (``model.``), stripped from the heads."""
    anchors = [k for k in keys if k == "in_linear.weight" or k.endswith(".in_linear.weight")]
    if len(anchors) != 1:
        raise ConversionError(f"--checkpoint {path}: {'no' if not anchors else 'several'} 'in_linear.weight' key(s) "
                              f"{anchors[:3] if anchors else ''}; is this a reference MidiBert state dict?")
    encoder = anchors[0][: -len("in_linear.weight")]
    return encoder, encoder.removesuffix("midibert.")


def load_reference_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """Load a reference checkpoint (a ``torch.load(weights_only=True)`` or ``.safetensors`` file, a folder saved by
    ``PyTorchModelHubMixin``, or the Hub id of one) and strip its wrappers: a ``{"state_dict": ...}`` (or ``"model"``,
    ``"model_state_dict"``) dict, DataParallel's ``module.`` and the encoder's prefix, so that encoder keys start with
    ``bert.``, ``word_emb.`` or ``in_linear.`` and heads with ``mask_lm.``, ``classifier.``, ``attention.``.

    Raises:
        ConversionError: the source is missing or cannot be loaded safely, holds no tensors, a tensor is stored in
            fewer bytes than its shape needs, or holds NaN or infinite values (the message names it).
    """
    path = _checkpoint_file(source)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure means an unusable file
        raise ConversionError(f"--checkpoint {source} cannot be loaded safely ({path.name}: "
                              f"safetensors or torch.load(weights_only=True)): {error}") from error
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
            break
    if not isinstance(data, dict) or not any(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConversionError(f"--checkpoint {source} holds no state dict of tensors")
    tensors = {key.removeprefix("module."): value for key, value in data.items() if isinstance(value, torch.Tensor)}
    encoder, outer = _encoder_prefixes(list(tensors), path)
    state = {}
    for key, value in tensors.items():
        stored = value.untyped_storage().nbytes()
        if stored < value.numel() * value.element_size():  # a stride-0 view: copying it would allocate the shape
            raise ConversionError(f"--checkpoint {path}: tensor {key} {tuple(value.shape)} is stored in {stored} "
                                  f"bytes, less than its shape needs ({value.numel() * value.element_size()}; a "
                                  "stride-0 view); refusing to expand it")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ConversionError(f"--checkpoint {source}: tensor {key} holds {bad} value(s) that are NaN or infinite; "
                                  "refusing to convert weights that cannot predict")
        state[key.removeprefix(encoder) if key.startswith(encoder) else key.removeprefix(outer)] = value
    return state


def infer_config_kwargs(state: Mapping[str, torch.Tensor], path: str = "checkpoint") -> dict[str, Any]:
    """``AdvMidiBertConfig`` keyword arguments (sizes only, not the vocabularies) read from the shapes of a
    prefix-stripped reference state dict; ``path`` names the checkpoint in errors."""
    import re

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise ConversionError(f"{path}: key {key!r} missing; is this a reference MidiBert state dict?")
        if state[key].dim() != 2:
            raise ConversionError(f"{path}: {key} has shape {tuple(state[key].shape)}; a reference MidiBert's is a "
                                  "matrix (2 dimensions)")
        return state[key]

    in_linear = need("in_linear.weight")
    hidden = in_linear.shape[0]
    layer_keys = [k for k in state if k.startswith("bert.encoder.layer.")]
    odd = [k for k in layer_keys if not re.match(r"bert\.encoder\.layer\.\d+\.", k)]
    if odd:
        raise ConversionError(f"{path}: key {odd[0]!r} is not 'bert.encoder.layer.<number>.*'; is this a reference "
                              "MidiBert state dict?")
    layers = sorted({int(k.split(".")[3]) for k in layer_keys})
    if not layers:
        raise ConversionError(f"{path}: no 'bert.encoder.layer.N.*' keys found")
    distance = need("bert.encoder.layer.0.attention.self.distance_embedding.weight")
    head_dim = distance.shape[1]
    if hidden % head_dim:
        raise ConversionError(f"{path}: hidden size {hidden} is not a multiple of the head size {head_dim}")
    attribute_embedding_size = need("word_emb.0.lut.weight").shape[1]
    kwargs = {
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": hidden // head_dim,
        "intermediate_size": need("bert.encoder.layer.0.intermediate.dense.weight").shape[0],
        "max_position_embeddings": (distance.shape[0] + 1) // 2,
        "attribute_embedding_size": attribute_embedding_size,
        "position_embedding_type": "relative_key_query",
    }
    if "attention.ws1.weight" in state:
        kwargs["pooling_attention_size"] = state["attention.ws1.weight"].shape[0]
        kwargs["pooling_num_views"] = need("attention.ws2.weight").shape[0]
        kwargs["classifier_hidden_size"] = need("classifier.0.weight").shape[0]
    elif "classifier.1.weight" in state:
        kwargs["classifier_hidden_size"] = state["classifier.1.weight"].shape[0]
    return kwargs


def _remap_rows(source: torch.Tensor, rows: Sequence[int], fill: torch.Tensor) -> torch.Tensor:
    """Rows of ``source`` picked by ``rows`` (-1 -> ``fill``), as one gather."""
    index = torch.tensor(rows, dtype=torch.long)
    out = source[index.clamp(min=0)].clone()
    missing = index < 0
    if bool(missing.any()):
        out[missing] = fill.to(out.dtype)
    return out


def convert_state_dict(
    state: Mapping[str, torch.Tensor],
    source_rows: Sequence[Sequence[int]],
    reference_special_rows: Sequence[Sequence[int]],
    task: str,
    prefix: str = "adv_midibert.",
    padding_class: str = "first",
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map a reference state dict onto our parameter names, re-ordering vocabulary rows.

    Args:
        state: the reference state dict (prefix-stripped).
        source_rows: per attribute, the reference row of each of our ids (-1: none), see
            :func:`build_vocabulary_maps`.
        reference_special_rows: per attribute, the rows of special tokens (left out of the fill means).
        task: ``mlm``, ``sequence`` or ``token``.
        prefix: our base model's prefix.
        padding_class: ``token`` task: which of the reference's C+1 classes is padding (``first``: MidiBERT-Piano's
            label 0, or ``last``); it is dropped.

    Returns:
        ``(converted, used)``: our state dict, and for each reference key used, what it became.
    """
    converted: dict[str, torch.Tensor] = {}
    used: dict[str, str] = {}

    def put(ours: str, theirs: str, value: torch.Tensor | None = None) -> None:
        converted[ours] = (state[theirs] if value is None else value).clone()
        used[theirs] = ours

    for attribute, rows in enumerate(source_rows):
        key = f"word_emb.{attribute}.lut.weight"
        table = state[key]
        keep = [r for r in range(table.shape[0]) if r not in set(reference_special_rows[attribute])]
        put(f"{prefix}embeddings.attribute_embeddings.{attribute}.weight", key,
            _remap_rows(table, rows, table[keep].mean(0)))
    put(f"{prefix}embeddings.in_linear.weight", "in_linear.weight")
    put(f"{prefix}embeddings.in_linear.bias", "in_linear.bias")
    put(f"{prefix}embeddings.token_type_embeddings.weight", "bert.embeddings.token_type_embeddings.weight",
        state["bert.embeddings.token_type_embeddings.weight"][:1])
    for name in ("weight", "bias"):
        put(f"{prefix}embeddings.LayerNorm.{name}", f"bert.embeddings.LayerNorm.{name}")
    for key in state:
        if key.startswith("bert.encoder.layer."):
            put(prefix + key[len("bert."):], key)

    if task == "mlm":
        for attribute, rows in enumerate(source_rows):
            weight, bias = state[f"mask_lm.proj.{attribute}.weight"], state[f"mask_lm.proj.{attribute}.bias"]
            keep = [r for r in range(weight.shape[0]) if r not in set(reference_special_rows[attribute])]
            put(f"lm_heads.{attribute}.weight", f"mask_lm.proj.{attribute}.weight",
                _remap_rows(weight, rows, weight[keep].mean(0)))
            put(f"lm_heads.{attribute}.bias", f"mask_lm.proj.{attribute}.bias",
                _remap_rows(bias, rows, bias[keep].min()))
    elif task == "sequence":
        put("pooling.ws1.weight", "attention.ws1.weight")
        put("pooling.ws2.weight", "attention.ws2.weight")
        for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
            put(f"classifier.{name}", f"classifier.{name}")
    elif task == "token":
        put("classifier.1.weight", "classifier.1.weight")
        put("classifier.1.bias", "classifier.1.bias")
        keep = slice(1, None) if padding_class == "first" else slice(None, -1)
        put("classifier.3.weight", "classifier.3.weight", state["classifier.3.weight"][keep])
        put("classifier.3.bias", "classifier.3.bias", state["classifier.3.bias"][keep])
    else:
        raise ConversionError(f"--task must be mlm, sequence or token, got {task!r}")
    return converted, used


def _tokenizer_vocabularies(tokenizer) -> tuple[list[list[str]], int]:
    """Our token strings per attribute (indexed by id) and the ticks per quarter note of Position tokens."""
    vocabularies = tokenizer.vocab  # token string -> id, one dict per attribute in our order
    ours = []
    for vocabulary in vocabularies:
        if isinstance(vocabulary, Mapping):
            tokens = [""] * len(vocabulary)
            for token, index in vocabulary.items():
                tokens[int(index)] = token
        else:
            tokens = list(vocabulary)
        ours.append(tokens)
    return ours, int(tokenizer.max_num_pos_per_beat)


def _check_checkpoint(state: Mapping[str, torch.Tensor], reference_vocabularies: list[dict[str, int]], task: str,
                      checkpoint: str | Path, dictionary: str | Path) -> None:
    """The dictionary fits the checkpoint's embedding tables, and the checkpoint holds the head of ``task``."""
    for attribute, vocabulary in enumerate(reference_vocabularies):
        rows = state.get(f"word_emb.{attribute}.lut.weight")
        if rows is not None and rows.shape[0] != len(vocabulary):
            raise ConversionError(
                f"{checkpoint}: embedding table {attribute} ({ATTRIBUTE_NAMES[attribute]}) has {rows.shape[0]} rows "
                f"but {dictionary} has {len(vocabulary)} {REFERENCE_ATTRIBUTES[attribute]} tokens: wrong dictionary?"
            )
    head_keys = {"mlm": "mask_lm.proj.0.weight", "sequence": "classifier.2.weight", "token": "classifier.3.weight"}
    if head_keys[task] not in state:
        raise ConversionError(f"{checkpoint}: --task {task} needs key {head_keys[task]!r}, absent from the checkpoint")


def _target_model(state: Mapping[str, torch.Tensor], task: str, num_labels: int | None, vocab_sizes: list[int],
                  checkpoint: str | Path):
    """Our model of ``task``, sized from the checkpoint's shapes (classes from its head); with its config kwargs."""
    from .. import modeling_adv_midibert as modeling
    from ..configuration_adv_midibert import AdvMidiBertConfig

    config_kwargs = infer_config_kwargs(state, str(checkpoint))
    head_classes = None
    if task == "sequence":
        head_classes = state["classifier.2.weight"].shape[0]
    elif task == "token":
        head_classes = state["classifier.3.weight"].shape[0] - 1
    if head_classes is not None:
        if num_labels is not None and num_labels != head_classes:
            raise ConversionError(
                f"--num_labels {num_labels} does not match the checkpoint's classifier ({head_classes} classes"
                f"{' + 1 padding class' if task == 'token' else ''})"
            )
        config_kwargs["num_labels"] = head_classes
    model_class = {
        "mlm": modeling.AdvMidiBertForMaskedLM,
        "sequence": modeling.AdvMidiBertForSequenceClassification,
        "token": modeling.AdvMidiBertForTokenClassification,
    }[task]
    return model_class(AdvMidiBertConfig(vocab_sizes=vocab_sizes, **config_kwargs)).eval(), config_kwargs


def _load_converted(model, converted: Mapping[str, torch.Tensor]) -> list[str]:
    """Load the converted weights into ``model``; return the parameters they did not give."""
    own = model.state_dict()
    for key, value in converted.items():
        if key not in own or own[key].shape != value.shape:
            raise ConversionError(
                f"{key} {tuple(value.shape)} does not fit the model "
                f"({tuple(own[key].shape) if key in own else 'no such parameter'}): the checkpoint's tensors do not "
                "have a reference MidiBert's shapes"
            )
    missing, _ = model.load_state_dict(converted, strict=False)
    return missing


def convert(
    checkpoint: str | Path,
    dictionary: str | Path,
    task: str,
    output_dir: str | Path,
    num_labels: int | None = None,
    tokenizer=None,
    padding_class: str = "first",
    progress: bool = True,
) -> dict[str, Any]:
    """Convert a reference checkpoint into a model folder ready for ``push_to_hub``; return the report.

    Args:
        checkpoint: the reference state dict file, a folder saved by ``PyTorchModelHubMixin`` (as the authors publish
            their weights, e.g. ``RS2002/Adversarial-MidiBERT``), or the Hub id of one.
        dictionary: the reference ``Octuple.pkl``.
        task: ``mlm``, ``sequence`` or ``token`` (our masked-LM, sequence or token classification model).
        output_dir: the folder to write: missing, empty, or an earlier conversion (replaced whole); written aside
            and swapped in when complete, under a lock.
        num_labels: classes of a ``sequence``/``token`` head (checked against its shape; read from it when None).
        tokenizer: our ``OctupleTokenizer`` defining the target vocabularies (default: ``OctupleTokenizer()``); the
            folder's tokenizer cuts segments to at most the model's ``max_position_embeddings`` rows.
        padding_class: ``first`` or ``last``: the padding class of a reference token classifier (dropped).
        progress: show a progress bar over the four stages.

    Returns:
        The conversion report (also written to ``output_dir/conversion_report.json``).

    Raises:
        ConversionError: bad arguments or files, or a head missing from the checkpoint for ``task``.
        FileExistsError: ``output_dir`` holds something this function did not write.
    """
    from ..atomic_io import FolderLock

    with FolderLock(output_dir):
        check_output_folder(output_dir, "converted model", _is_conversion, inputs=[checkpoint, dictionary],
                            overwrite_hint=None)
        return _convert(checkpoint, dictionary, task, Path(output_dir), num_labels, tokenizer, padding_class, progress)


def _is_conversion(folder: Path, names: set[str]) -> bool:
    return CONVERSION_REPORT_NAME in names


def _convert(checkpoint, dictionary, task, output_dir: Path, num_labels, tokenizer, padding_class, progress):
    if task not in ("mlm", "sequence", "token"):
        raise ConversionError(f"--task must be mlm, sequence or token, got {task!r}")
    if padding_class not in ("first", "last"):
        raise ConversionError(f"--padding_class must be first or last, got {padding_class!r}")
    from tqdm.auto import tqdm

    with tqdm(total=4, desc="converting", unit="stage", disable=not progress) as stages:  # closed on errors too
        stages.set_postfix_str("reading the checkpoint")
        state = load_reference_state_dict(checkpoint)
        reference_vocabularies = load_reference_dictionary(dictionary)
        stages.update(1)
        stages.set_postfix_str("mapping the vocabularies")
        _check_checkpoint(state, reference_vocabularies, task, checkpoint, dictionary)
        if tokenizer is None:
            from ..tokenization_octuple import OctupleTokenizer

            tokenizer = OctupleTokenizer()
        ours, positions_per_beat = _tokenizer_vocabularies(tokenizer)
        source_rows, vocabulary_report = build_vocabulary_maps(reference_vocabularies, ours, positions_per_beat)
        special_rows = [
            [row for token, row in vocabulary.items() if token.partition(" ")[2] in REFERENCE_SPECIALS]
            for vocabulary in reference_vocabularies
        ]

        model, config_kwargs = _target_model(state, task, num_labels, [len(v) for v in ours], checkpoint)
        if tokenizer.max_seq_len > model.config.max_position_embeddings:  # every longer segment would fail
            tokenizer = type(tokenizer)(max_seq_len=model.config.max_position_embeddings,
                                        tokenizer_config=tokenizer.config, warn=tokenizer.warn)

        stages.update(1)
        stages.set_postfix_str("converting the weights")
        converted, used = convert_state_dict(state, source_rows, special_rows, task, padding_class=padding_class)
        missing = _load_converted(model, converted)
        not_from_checkpoint = sorted(missing)

        unmapped = sorted(k for k in state if k not in used)
        ignored = [k for k in unmapped if k.startswith(IGNORED_BY_DESIGN)]
        report = {
            "checkpoint": str(checkpoint),
            "dictionary": str(dictionary),
            "task": task,
            "model_class": type(model).__name__,
            "config": config_kwargs,
            "tokenizer_max_seq_len": tokenizer.max_seq_len,
            "vocab_sizes": {"ours": [len(v) for v in ours], "reference": [len(v) for v in reference_vocabularies]},
            "vocabularies": vocabulary_report,
            "fill_rule": (
                "our tokens without a source get the mean of the reference table's non-special rows (embeddings) and "
                "the mean non-special weight row with the lowest non-special bias (masked-LM heads)"
            ),
            "checkpoint_keys_mapped": len(used),
            "checkpoint_keys_ignored_by_design": ignored,
            "checkpoint_keys_not_mapped": [k for k in unmapped if k not in ignored],
            "model_parameters_not_from_checkpoint": not_from_checkpoint,
        }
        if task == "token":
            report["padding_class_dropped"] = padding_class

        stages.update(1)
        stages.set_postfix_str("writing the model folder")
        with write_folder_aside(output_dir) as tmp:
            model.save_pretrained(tmp)  # with the code files and the complete auto_map (remote code)
            tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / CONVERSION_REPORT_NAME, report)
        stages.update(1)
    return report


def parse_args(argv=None, prog=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="the reference code's state dict (.pt/.ckpt/.safetensors), a folder saved by "
                        "PyTorchModelHubMixin (model.safetensors), or its Hub id (e.g. RS2002/Adversarial-MidiBERT)")
    parser.add_argument("--dictionary", type=Path, required=True, help="the reference Octuple.pkl")
    parser.add_argument("--task", choices=("mlm", "sequence", "token"), required=True,
                        help="mlm: pre-trained MidiBertLM; sequence/token: fine-tuned classifiers")
    parser.add_argument("--num_labels", type=int, default=None,
                        help="classes of a sequence/token head (checked against the checkpoint)")
    parser.add_argument("--padding_class", choices=("first", "last"), default="first",
                        help="token task: which of the reference's C+1 outputs is the padding class (dropped)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="folder with our octuple_tokenizer.json (default: OctupleTokenizer() defaults)")
    parser.add_argument("--output_dir", type=Path, required=True, help="where to write the converted model folder")
    return parser.parse_args(argv)


def main(argv=None, prog: str = "adv-midibert convert") -> int:
    from ..atomic_io import FolderBusyError

    args = parse_args(argv, prog)
    tokenizer = None
    if args.tokenizer is not None:
        from ..tokenization_octuple import OctupleTokenizer

        tokenizer = OctupleTokenizer.from_pretrained(args.tokenizer)
    try:
        report = convert(args.checkpoint, args.dictionary, args.task, args.output_dir, num_labels=args.num_labels,
                         tokenizer=tokenizer, padding_class=args.padding_class)
    except (ConversionError, HubPublishError, ValueError, OSError, FolderBusyError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0
