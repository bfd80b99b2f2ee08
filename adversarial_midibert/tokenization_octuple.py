"""The Octuple tokenizer: MIDI files -> padded segments of note rows, the way a Hugging Face tokenizer works.

:class:`OctupleTokenizer` is called on files like a transformers tokenizer (a :class:`transformers.BatchEncoding`
comes back), decodes segments back to a :class:`symusic.Score`, and saves and loads like one, so that a model folder
or Hub repository loads it with ``AutoTokenizer.from_pretrained("org/name", trust_remote_code=True)`` where only
``transformers``, ``miditok`` and ``symusic`` are installed. The arithmetic lives in
:mod:`adversarial_midibert.octuple_encoding`; the vocabulary and configuration are miditok's.

It does not subclass ``PreTrainedTokenizerBase``: that base is built around one string vocabulary (``tokenize``,
special string tokens, chat templates), none of which applies to rows of eight ids from eight vocabularies, and
``AutoTokenizer`` only needs the class named by ``tokenizer_config.json`` and its ``from_pretrained``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from miditok import Octuple, TokenizerConfig
from symusic import Score

from .constants import (
    ATTRIBUTE_NAMES,
    BAR,
    BOS_ID,
    DURATION,
    EOS_ID,
    MASK_ID,
    NUM_ATTRIBUTES,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    PITCH,
    POSITION,
    PROGRAM,
    TEMPO,
    TOKENIZER_CONFIG_FILE_NAME,
    TOKENIZER_FILE_NAME,
    VELOCITY,
)
from .octuple_encoding import (
    DEFAULT_MAX_BAR_EMBEDDING,
    EncodingReport,
    MidiReadError,
    OctupleTables,
    check_config,
    config_from_dict,
    decode_rows,
    default_tokenizer_config,
    encode_notes,
    load_score,
    segment_bounds,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BAR_EMBEDDING", "EncodingReport", "MidiReadError", "OctupleTokenizer",
           "TOKENIZER_FORMAT_VERSION", "default_tokenizer_config", "tokenizer_code_files"]

TOKENIZER_FORMAT_VERSION = 1
# Keyword arguments of ``from_pretrained`` that select files on the Hub (passed to ``huggingface_hub``).
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
# Keyword arguments transformers' Auto classes and pipelines pass along that do not concern this tokenizer.
_IGNORED_KWARGS = ("trust_remote_code", "use_fast", "code_revision", "resume_download", "user_agent")


def tokenizer_code_files() -> list[Path]:
    """The tokenizer's code, shipped beside the tokenizer files for ``trust_remote_code``: this module first, then what
    it imports relatively, found as transformers' loader will find it (``get_relative_import_files``)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    return [Path(__file__).resolve(), *sorted(map(Path, get_relative_import_files(Path(__file__).resolve())))]


class OctupleTokenizer:
    """Octuple tokenizer for Adversarial-MidiBERT (one row of 8 ids per note).

    Every row holds the ids of :attr:`attribute_names`, each attribute with its own miditok vocabulary starting with
    ``PAD=0, BOS=1, EOS=2, MASK=3``. A segment is a BOS row, at most ``max_seq_len - 2`` note rows and an EOS row;
    batches are padded with PAD rows and an ``attention_mask`` of 0.

    Args:
        max_seq_len: the most rows of one segment, BOS and EOS rows included (1024 in the paper).
        tokenizer_config: a :class:`miditok.TokenizerConfig` (:func:`default_tokenizer_config` when ``None``) with
            the eight attributes on, all tracks in one stream and ``remove_duplicated_notes`` off.
        warn: emit a ``warnings.warn`` naming the file whenever notes are left out (see :attr:`last_report`).
    """

    attribute_names: tuple[str, ...] = ATTRIBUTE_NAMES
    pad_token_id: int = PAD_ID
    bos_token_id: int = BOS_ID
    eos_token_id: int = EOS_ID
    mask_token_id: int = MASK_ID
    padding_side: str = "right"
    model_input_names = ["input_ids", "attention_mask"]
    _auto_class: str | None = "AutoTokenizer"

    def __init__(self, max_seq_len: int = 1024, tokenizer_config: TokenizerConfig | None = None, warn: bool = True):
        if int(max_seq_len) < 3:
            raise ValueError(f"max_seq_len must be at least 3 (BOS, one note, EOS), got {max_seq_len}")
        self.max_seq_len = int(max_seq_len)
        self.warn = bool(warn)
        config = tokenizer_config if tokenizer_config is not None else default_tokenizer_config()
        check_config(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._miditok = Octuple(config)
        self.config: TokenizerConfig = self._miditok.config
        self.tables = OctupleTables(self._miditok)
        self.last_report: EncodingReport | None = None
        self.last_reports: list[EncodingReport] = []

    # ------------------------------------------------------------------ vocabulary
    @property
    def num_attributes(self) -> int:
        """Number of attributes per token row (8)."""
        return NUM_ATTRIBUTES

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """Size of each attribute's vocabulary, in :attr:`attribute_names` order."""
        return self.tables.vocab_sizes

    @property
    def vocab(self) -> list[dict[str, int]]:
        """The eight miditok vocabularies (token string -> id), in :attr:`attribute_names` order."""
        return [dict(v) for v in self.tables.vocabs]

    @property
    def max_bar_embedding(self) -> int:
        """Size of the bar vocabulary: the most bars one segment may span."""
        return self.tables.max_bar_embedding

    @property
    def max_num_pos_per_beat(self) -> int:
        """Positions per beat of the finest ``beat_res`` (the onset grid)."""
        return self.tables.max_num_pos_per_beat

    @property
    def pitch_range(self) -> tuple[int, int]:
        """Lowest and highest (non-drum) MIDI pitch of the vocabulary, inclusive."""
        return self.tables.pitch_range

    @property
    def drum_program_token_id(self) -> int | None:
        """Program id of drums, or None when drums are not in the vocabulary."""
        return self.tables.drum_program_token_id

    @property
    def velocity_values(self) -> np.ndarray:
        """The velocity bins' values, in id order."""
        return self.tables.velocity_values

    @property
    def miditok_tokenizer(self) -> Octuple:
        """The underlying :class:`miditok.Octuple` (miditok column order, its own encoder and decoder)."""
        return self._miditok

    @property
    def attribute_permutation(self) -> tuple[int, ...]:
        """For each of our attributes, its column in miditok's Octuple rows (``ours = miditok[:, perm]``)."""
        return tuple(int(i) for i in self.tables.perm)

    def pitch_token_id(self, pitch: int | np.ndarray) -> int | np.ndarray:
        """Pitch-attribute id of a (non-drum) MIDI pitch or array of them, within :attr:`pitch_range`; ids are
        contiguous and ascending in pitch."""
        arr = np.asarray(pitch, dtype=np.int64)
        lo, hi = self.pitch_range
        if np.any((arr < lo) | (arr > hi)):
            raise ValueError(f"pitch {pitch} outside the tokenizer's pitch range {lo}..{hi}")
        ids = self.tables.pitch_ids[arr]
        return int(ids) if ids.ndim == 0 else ids

    def token_to_id(self, attribute: str | int, token: str) -> int:
        """Id of a miditok token string (e.g. ``"Pitch_60"``) in one attribute's vocabulary (name or index)."""
        a = self._attribute_index(attribute)
        try:
            return self.tables.vocabs[a][token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the {ATTRIBUTE_NAMES[a]!r} vocabulary") from None

    def id_to_token(self, attribute: str | int, token_id: int) -> str:
        """miditok token string of an id in one attribute's vocabulary (name or index; bars beyond it included)."""
        a = self._attribute_index(attribute)
        token_id = int(token_id)
        if a == BAR and token_id >= self.vocab_sizes[BAR]:
            return f"Bar_{token_id - NUM_SPECIAL_TOKENS}"
        try:
            return self.tables.inv_vocabs[a][token_id]
        except KeyError:
            raise KeyError(f"id {token_id} is not in the {ATTRIBUTE_NAMES[a]!r} vocabulary") from None

    def ids_to_values(self, attribute: str | int, ids: np.ndarray) -> np.ndarray:
        """Numeric values of one attribute's ids (vectorised); special ids give -1 (0.0 for tempo).

        Values: bar and position indices, program (-1 drums), MIDI pitch, velocity, tempo in qpm, duration in beats
        (float), time signature as ``numerator / denominator`` pairs (array (..., 2)).
        """
        a = self._attribute_index(attribute)
        ids = np.asarray(ids, dtype=np.int64)
        special = ids < NUM_SPECIAL_TOKENS
        t = self.tables
        if a in (BAR, POSITION):
            return np.where(special, -1, ids - NUM_SPECIAL_TOKENS)
        if a == PITCH:
            return t.dec_pitch[ids]
        if a == PROGRAM:
            return np.where(special, -1, t.dec_program[ids])
        if a == VELOCITY:
            return np.where(special, -1, t.dec_velocity[ids])
        if a == TEMPO:
            return t.dec_tempo[ids]
        if a == DURATION:
            tpb = next(iter(t.dec_duration))  # ticks at any ticks-per-beat, divided by it: beats
            return np.where(special, -1.0, t.dec_duration[tpb][ids] / tpb)
        out = np.full(ids.shape + (2,), -1, dtype=np.int64)  # time signature
        for tok_id, ts in t.ts_by_id.items():
            out[ids == tok_id] = ts
        return out

    @staticmethod
    def _attribute_index(attribute: str | int) -> int:
        if isinstance(attribute, str):
            if attribute not in ATTRIBUTE_NAMES:
                raise KeyError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTE_NAMES}")
            return ATTRIBUTE_NAMES.index(attribute)
        if not 0 <= int(attribute) < NUM_ATTRIBUTES:
            raise KeyError(f"attribute index {attribute} outside 0..{NUM_ATTRIBUTES - 1}")
        return int(attribute)

    # ------------------------------------------------------------------ encoding
    @staticmethod
    def load_score(score_or_path: Score | str | os.PathLike, source: str | None = None) -> tuple[Score, str]:
        """``(score, source_name)``: see :func:`adversarial_midibert.octuple_encoding.load_score`."""
        return load_score(score_or_path, source)

    def encode_score(
        self, score_or_path: Score | str | os.PathLike, return_note_indices: bool = False, source: str | None = None
    ) -> np.ndarray | tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Encode a whole piece: one row of 8 ids per note, absolute bars, no BOS/EOS.

        The ids, their order and the notes kept are those of miditok's ``Octuple.encode``
        (:func:`~adversarial_midibert.octuple_encoding.encode_notes`); bar ids may exceed the bar vocabulary until
        :meth:`segment` cuts the piece. Notes left out are counted in :attr:`last_report` (and, with ``warn``,
        reported by a warning naming the file or ``source``, the name of an in-memory score).

        Args:
            score_or_path: a :class:`symusic.Score` (tick time) or a MIDI file path.
            return_note_indices: also return ``(track_index, note_index)``, int64 arrays (N,): each token's source
                note ``score.tracks[track_index].notes[note_index]`` in the score as read.
            source: the name used in reports and warnings for an in-memory score.

        Returns:
            ``ids`` (N, 8) int64, or ``(ids, (track_index, note_index))``. Raises :class:`MidiReadError` for a
            missing, unreadable, empty or non-MIDI file.
        """
        score, name = load_score(score_or_path, source)
        ids, note, report = encode_notes(self.tables, score, name)
        self.last_report = report
        message = report.message()
        if self.warn and message:
            warnings.warn(message, stacklevel=2)
        if return_note_indices:
            offsets = np.concatenate([[0], np.cumsum([t.note_num() for t in score.tracks])]).astype(np.int64)
            track_index = np.searchsorted(offsets, note, side="right") - 1
            return ids, (track_index.astype(np.int64), (note - offsets[track_index]).astype(np.int64))
        return ids

    def segment(
        self,
        ids: np.ndarray,
        note_aligned_arrays: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
        add_special_tokens: bool = True,
        max_seq_len: int | None = None,
        fill_value: int = -100,
        return_bar_offsets: bool = False,
    ) -> Any:
        """Cut a piece (rows of :meth:`encode_score`) into model segments.

        Segments are consecutive and cover every note once; one holds at most ``max_seq_len - 2`` notes and is cut
        earlier before a note ``max_bar_embedding`` or more bars after its first note, so that bar ids, counted from
        the segment's first note (``Bar_0``), stay inside the bar vocabulary.

        Args:
            ids: ``(N, 8)`` ids of a whole piece (absolute bars).
            note_aligned_arrays: arrays with one entry per note (labels, source indices...), a sequence or a mapping
                name -> array: cut the same way, with ``fill_value`` at the BOS and EOS rows.
            add_special_tokens: add the BOS row (all attributes BOS) and the EOS row (all EOS).
            max_seq_len: override of :attr:`max_seq_len`.
            fill_value: value of the note-aligned arrays at BOS/EOS rows (-100: ignored by losses).
            return_bar_offsets: also return each segment's bar offset (the absolute bar of its first note, which
                :meth:`decode` adds back).

        Returns:
            a list of ``(L, 8)`` int64 arrays; with ``note_aligned_arrays`` ``(segments, aligned)``, ``aligned[s]`` a
            tuple (or dict) of segment ``s``'s cut arrays; with ``return_bar_offsets`` the ``(S,)`` offsets appended.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] != NUM_ATTRIBUTES:
            raise ValueError(f"ids must have shape (N, {NUM_ATTRIBUTES}), got {ids.shape}")
        length = self.max_seq_len if max_seq_len is None else int(max_seq_len)
        max_notes = length - 2 if add_special_tokens else length
        if max_notes < 1:
            raise ValueError(f"max_seq_len={length} leaves no room for notes")
        is_mapping = isinstance(note_aligned_arrays, Mapping)
        if note_aligned_arrays is None:
            names, extras = [], []
        elif is_mapping:
            names, extras = list(note_aligned_arrays.keys()), [np.asarray(a) for a in note_aligned_arrays.values()]
        else:
            names, extras = [], [np.asarray(a) for a in note_aligned_arrays]
        for i, arr in enumerate(extras):
            if len(arr) != len(ids):
                label = names[i] if is_mapping else f"note_aligned_arrays[{i}]"
                raise ValueError(f"{label} has {len(arr)} entries for {len(ids)} notes")
        bars = ids[:, BAR]
        if len(bars) > 1 and np.any(np.diff(bars) < 0):
            raise ValueError("ids: bar ids must be non-decreasing (pass a whole piece from encode_score)")

        bounds = segment_bounds(bars, max_notes, self.max_bar_embedding)
        offsets = bars[bounds[:, 0]] - NUM_SPECIAL_TOKENS if len(bounds) else np.zeros(0, dtype=np.int64)
        segments: list[np.ndarray] = []
        aligned: list[Any] = []
        for (start, end), offset in zip(bounds.tolist(), offsets.tolist()):
            seg = ids[start:end].copy()
            seg[:, BAR] -= offset
            cut = [a[start:end] for a in extras]
            if add_special_tokens:
                seg = np.concatenate(
                    [np.full((1, NUM_ATTRIBUTES), BOS_ID), seg, np.full((1, NUM_ATTRIBUTES), EOS_ID)]
                ).astype(np.int64)
                cut = [self._pad_aligned(a, fill_value) for a in cut]
            segments.append(seg)
            if extras:
                aligned.append(dict(zip(names, cut, strict=True)) if is_mapping else tuple(cut))
        result: tuple = (segments,) if note_aligned_arrays is None else (segments, aligned)
        if return_bar_offsets:
            result = (*result, offsets.astype(np.int64))
        return result[0] if len(result) == 1 else result

    @staticmethod
    def _pad_aligned(arr: np.ndarray, fill_value: Any) -> np.ndarray:
        pad = np.full((1, *arr.shape[1:]), fill_value, dtype=np.result_type(arr.dtype, np.asarray(fill_value)))
        return np.concatenate([pad, arr.astype(pad.dtype, copy=False), pad])

    def __call__(
        self,
        inputs: Score | str | os.PathLike | Sequence[Score | str | os.PathLike],
        return_tensors: str | None = None,
        padding: bool | str = True,
        add_special_tokens: bool = True,
        max_seq_len: int | None = None,
    ):
        """Tokenize one or several pieces (MIDI paths or :class:`symusic.Score`) into padded segments.

        Every piece is encoded (:meth:`encode_score`) and cut (:meth:`segment`); segments are padded with PAD rows and
        ``attention_mask`` 0 to the longest one (``padding=True`` / ``"longest"``) or to ``max_seq_len``
        (``"max_length"``); ``padding=False`` leaves them unpadded (lists, or tensors of equal lengths). Each piece's
        report is kept in :attr:`last_reports`. ``return_tensors`` is ``None`` (lists), ``"np"`` or ``"pt"``.

        Returns:
            a :class:`transformers.BatchEncoding` with ``input_ids`` (segments, length, 8), ``attention_mask``,
            ``piece_index`` (the input each segment came from) and ``bar_offset`` (what :meth:`decode` adds back).
        """
        from transformers import BatchEncoding

        if isinstance(inputs, (Score, str, os.PathLike)):
            inputs = [inputs]
        length = self.max_seq_len if max_seq_len is None else int(max_seq_len)
        segments: list[np.ndarray] = []
        piece_index: list[int] = []
        bar_offset: list[int] = []
        reports = []
        for i, item in enumerate(inputs):
            segs, offsets = self.segment(
                self.encode_score(item), add_special_tokens=add_special_tokens, max_seq_len=length,
                return_bar_offsets=True,
            )
            reports.append(self.last_report)
            segments.extend(segs)
            piece_index.extend([i] * len(segs))
            bar_offset.extend(offsets.tolist())
        self.last_reports = reports
        if padding in (True, "longest"):
            target = max((len(s) for s in segments), default=0)
        elif padding == "max_length":
            target = length
        elif padding in (False, "do_not_pad", None):
            target = None
        else:
            raise ValueError(f"padding must be True, 'longest', 'max_length' or False, got {padding!r}")
        if target is None:
            if return_tensors is not None and len({len(s) for s in segments}) > 1:
                raise ValueError("padding=False with return_tensors needs segments of equal length; use padding=True")
            if return_tensors is None:
                data = {"input_ids": [s.tolist() for s in segments], "attention_mask": [[1] * len(s) for s in segments]}
            else:
                width = len(segments[0]) if segments else 0
                data = {"input_ids": np.stack(segments) if segments else np.zeros((0, 0, NUM_ATTRIBUTES), np.int64),
                        "attention_mask": np.ones((len(segments), width), np.int64)}
        else:
            input_ids = np.full((len(segments), target, NUM_ATTRIBUTES), PAD_ID, dtype=np.int64)
            attention_mask = np.zeros((len(segments), target), dtype=np.int64)
            for s, seg in enumerate(segments):  # one copy per segment
                input_ids[s, : len(seg)] = seg
                attention_mask[s, : len(seg)] = 1
            data = {"input_ids": input_ids, "attention_mask": attention_mask}
            if return_tensors is None:
                data = {k: v.tolist() for k, v in data.items()}
        if return_tensors is None:
            data.update(piece_index=piece_index, bar_offset=bar_offset)
        else:
            data.update(piece_index=np.asarray(piece_index, np.int64), bar_offset=np.asarray(bar_offset, np.int64))
        return BatchEncoding(data, tensor_type=return_tensors)

    # ------------------------------------------------------------------ decoding
    def decode(self, input_ids: Any, bar_offset: Any = None) -> Score:
        """Rebuild a :class:`symusic.Score` from token rows (see
        :func:`~adversarial_midibert.octuple_encoding.decode_rows`): ``(N, 8)`` ids of one segment or a whole piece,
        or ``(S, L, 8)`` segments of one piece with their ``bar_offset`` (from :meth:`__call__` or :meth:`segment`),
        which puts every note back at its bar. Write the result with ``score.dump_midi(path)``."""
        ids = _as_int_array(input_ids)
        if ids.ndim == 2:
            ids = ids[None]
        if ids.ndim != 3 or ids.shape[-1] != NUM_ATTRIBUTES:
            raise ValueError(
                f"input_ids must have shape (N, {NUM_ATTRIBUTES}) or (segments, N, {NUM_ATTRIBUTES}), got "
                f"{np.shape(input_ids)}"
            )
        if bar_offset is None:
            if ids.shape[0] > 1:
                raise ValueError(
                    f"decode got {ids.shape[0]} segments without bar_offset: pass the bar_offset of the encoding so "
                    "that each segment's notes are put back at their bars (or decode one segment at a time)"
                )
            offsets = np.zeros(1, dtype=np.int64)
        else:
            offsets = _as_int_array(bar_offset).reshape(-1)
            if len(offsets) != ids.shape[0]:
                raise ValueError(f"bar_offset has {len(offsets)} entries for {ids.shape[0]} segments")
        shifted = ids.copy()
        real = shifted[..., BAR] >= NUM_SPECIAL_TOKENS
        shifted[..., BAR] = np.where(real, shifted[..., BAR] + offsets[:, None], shifted[..., BAR])
        return decode_rows(self.tables, shifted.reshape(-1, NUM_ATTRIBUTES))

    def batch_decode(self, encoding: Mapping[str, Any]) -> list[Score]:
        """Decode every piece of a :meth:`__call__` output (``input_ids``, ``piece_index``, ``bar_offset``): one
        :class:`symusic.Score` per input, in input order."""
        for key in ("input_ids", "piece_index", "bar_offset"):
            if key not in encoding:
                raise KeyError(f"batch_decode needs '{key}' (the output of OctupleTokenizer.__call__)")
        ids = _as_int_array(encoding["input_ids"])
        pieces = _as_int_array(encoding["piece_index"]).reshape(-1)
        offsets = _as_int_array(encoding["bar_offset"]).reshape(-1)
        if not (len(ids) == len(pieces) == len(offsets)):
            raise ValueError(f"input_ids, piece_index and bar_offset disagree: {len(ids)}, {len(pieces)}, "
                             f"{len(offsets)}")
        count = int(pieces.max()) + 1 if len(pieces) else 0
        return [self.decode(ids[pieces == p], offsets[pieces == p]) for p in range(count)]

    # ------------------------------------------------------------------ saving and loading
    def to_dict(self) -> dict[str, Any]:
        """Serializable description: our format version, ``max_seq_len`` and the miditok configuration."""
        return {
            "format_version": TOKENIZER_FORMAT_VERSION,
            "tokenizer_class": type(self).__name__,
            "tokenization": "Octuple",
            "attribute_names": list(ATTRIBUTE_NAMES),
            "vocab_sizes": list(self.vocab_sizes),
            "max_seq_len": self.max_seq_len,
            "miditok_config": self.config.to_dict(serialize=True),
        }

    def tokenizer_config(self) -> dict[str, Any]:
        """The content of ``tokenizer_config.json``: the class, the ``auto_map`` of ``AutoTokenizer`` and the
        facts a transformers user looks for (``model_max_length``, ``model_input_names``, special ids)."""
        return {
            "tokenizer_class": type(self).__name__,
            "auto_map": {"AutoTokenizer": [f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}", None]},
            "tokenizer_file": TOKENIZER_FILE_NAME,
            "model_max_length": self.max_seq_len,
            "model_input_names": list(self.model_input_names),
            "padding_side": self.padding_side,
            "special_token_ids": {"pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID, "mask": MASK_ID},
            "requires": ["miditok", "symusic"],
        }

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoTokenizer") -> None:
        """Mark the class for ``AutoTokenizer`` (the only Auto class it serves); transformers calls this when it loads
        the class as remote code."""
        name = auto_class if isinstance(auto_class, str) else auto_class.__name__
        if name != "AutoTokenizer":
            raise ValueError(f"OctupleTokenizer registers for AutoTokenizer only, not {name}")
        cls._auto_class = name

    def save_pretrained(self, save_directory: str | os.PathLike, include_code: bool = True, **kwargs: Any) -> Path:
        """Write the tokenizer into ``save_directory`` (created if needed); return the path of its main file.

        Files (each written aside and renamed into place): ``octuple_tokenizer.json`` and, with ``include_code`` (off
        for data set folders), ``tokenizer_config.json`` and the code files for ``AutoTokenizer``. Other keyword
        arguments (transformers' ``Pipeline`` and ``Trainer`` pass their own) are ignored.
        """
        folder = Path(save_directory)
        if folder.is_file():
            raise NotADirectoryError(f"{folder}: save_pretrained needs a folder, this is a file")
        folder.mkdir(parents=True, exist_ok=True)
        _write_text(folder / TOKENIZER_FILE_NAME, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        if include_code and self._auto_class:
            _write_text(folder / TOKENIZER_CONFIG_FILE_NAME, json.dumps(self.tokenizer_config(), indent=2) + "\n")
            for source in tokenizer_code_files():  # not custom_object_save: it copies in place, not aside
                if source != (folder / source.name).resolve():
                    tmp = folder / f".{source.name}.tmp"
                    shutil.copyfile(source, tmp)
                    os.replace(tmp, folder / source.name)
        return folder / TOKENIZER_FILE_NAME

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *init_inputs: Any, **kwargs: Any):
        """Load a tokenizer written by :meth:`save_pretrained`, from a local folder, the file itself or a Hub id.

        A folder or Hub id is resolved with transformers' ``cached_file`` (offline from the cache). This is also the
        method ``AutoTokenizer.from_pretrained(..., trust_remote_code=True)`` ends in. Keyword arguments:
        ``max_seq_len`` / ``warn`` override the saved ones; ``revision``, ``cache_dir``, ``token``,
        ``local_files_only``, ``force_download``, ``subfolder``, ``proxies`` select the Hub file; the private ones of
        transformers' Auto classes are ignored. Raises ``FileNotFoundError`` (no tokenizer file) or ``ValueError``
        (not a tokenizer file this version reads).
        """
        if init_inputs:
            raise TypeError("OctupleTokenizer.from_pretrained takes no positional arguments after the path, got "
                            f"{init_inputs}")
        hub = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        init = {k: kwargs.pop(k) for k in ("max_seq_len", "warn") if k in kwargs}
        unknown = sorted(k for k in kwargs if not k.startswith("_") and k not in _IGNORED_KWARGS)
        if unknown:
            logger.warning("OctupleTokenizer.from_pretrained: ignored argument(s) %s", ", ".join(unknown))
        file = _resolve_tokenizer_file(pretrained_model_name_or_path, hub)
        try:
            data = json.loads(Path(file).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a JSON object, found {type(data).__name__}")
        version = data.get("format_version")
        if not isinstance(version, int) or version > TOKENIZER_FORMAT_VERSION:
            raise ValueError(
                f"{file}: tokenizer format version {version!r} is not supported (this version reads "
                f"<= {TOKENIZER_FORMAT_VERSION})"
            )
        if "miditok_config" not in data:
            raise ValueError(f"{file}: missing 'miditok_config'")
        config = config_from_dict(data["miditok_config"])
        tokenizer = cls(tokenizer_config=config, **{"max_seq_len": data.get("max_seq_len", 1024), **init})
        saved_sizes = data.get("vocab_sizes")
        if saved_sizes is not None and list(saved_sizes) != list(tokenizer.vocab_sizes):
            raise ValueError(
                f"{file}: vocabulary sizes {saved_sizes} differ from those rebuilt by this miditok version "
                f"{list(tokenizer.vocab_sizes)}"
            )
        return tokenizer

    def __len__(self) -> int:
        """Total number of ids over the eight vocabularies."""
        return int(sum(self.vocab_sizes))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(ATTRIBUTE_NAMES, self.vocab_sizes, strict=True))
        return f"{type(self).__name__}(max_seq_len={self.max_seq_len}, vocab_sizes=({sizes}))"


# ---------------------------------------------------------------------------------------------- helpers
def _as_int_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64)


def _write_text(path: Path, text: str) -> None:
    """Write aside and rename, so that a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _resolve_tokenizer_file(name_or_path: str | os.PathLike, hub: dict[str, Any]) -> Path:
    """The local path of ``octuple_tokenizer.json``: the file itself (transformers' ``cached_file`` takes folders and
    ids only), else ``cached_file``'s: a folder (and ``subfolder``), a Hub id (downloaded, or offline the cache's)."""
    if Path(name_or_path).is_file():
        return Path(name_or_path)
    from transformers.utils import cached_file

    try:
        return Path(cached_file(str(name_or_path), TOKENIZER_FILE_NAME, **hub))
    except OSError as err:  # no such folder, file, repository or cached copy; HTTP and connection errors
        raise FileNotFoundError(f"{name_or_path}: no {TOKENIZER_FILE_NAME} found ({err})") from err
