"""Octuple tokenizer: one row of eight ids per note, on top of miditok's ``Octuple``.

The vocabulary and the configuration are miditok's (:class:`miditok.Octuple`, :class:`miditok.TokenizerConfig`):
this module does not fork its tables. It adds

* a vectorised encoder (:meth:`OctupleTokenizer.encode_score`) that reads a file with symusic, works on the
  notes as numpy arrays and produces exactly the ids miditok's own encoder produces (same notes, same order),
  about two orders of magnitude faster, and that can say which source note each token came from;
* the column order of the reference code (``constants.ATTRIBUTE_NAMES``: bar, position, program, pitch,
  duration, velocity, time_signature, tempo) instead of miditok's (Pitch, Position, Bar, Velocity, Duration,
  Program, Tempo, TimeSig);
* segmenting into model inputs (``[BOS] + notes + [EOS]``, bars counted from the segment's first note), a
  transformers-like ``__call__`` returning a :class:`transformers.BatchEncoding`, a decoder back to a
  :class:`symusic.Score`, and ``save_pretrained`` / ``from_pretrained``.

Default configuration (:func:`default_tokenizer_config`), miditok's defaults except where noted:

* pitch range 21..109 (piano range), drums as separate ``PitchDrum`` tokens for pitches 27..88 (program -1);
* 8 positions per beat for durations up to 4 beats, 4 per beat up to 12 beats (``beat_res``); onsets are
  quantised to 1/8 of a beat;
* 32 velocity bins (3, 7, ..., 127), 32 tempos linearly spaced in 40..250 qpm;
* time signatures ``*/8`` with 3, 6, 12 beats and ``*/4`` with 1..6 beats;
* programs -1 (drums) and 0..127, tracks with the same program merged (miditok's rule);
* ``max_bar_embedding = 256`` (ours; miditok's default is 60): the size of the bar vocabulary. Bars are
  counted from the start of each segment, so this only bounds the bars one segment may span (see
  :meth:`OctupleTokenizer.segment`); :meth:`OctupleTokenizer.encode_score` never drops a note for its bar.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from miditok import Octuple, TokenizerConfig
from miditok.constants import TIME_SIGNATURE
from symusic import Note, Score, Tempo, TimeSignature, Track

from .constants import (
    ATTRIBUTE_NAMES,
    BAR,
    BOS_ID,
    EOS_ID,
    MASK_ID,
    NUM_ATTRIBUTES,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    PITCH,
    PROGRAM,
    TOKENIZER_FILE_NAME,
)

__all__ = [
    "DEFAULT_MAX_BAR_EMBEDDING",
    "EncodingReport",
    "MidiReadError",
    "OctupleTokenizer",
    "TOKENIZER_FORMAT_VERSION",
    "default_tokenizer_config",
]

TOKENIZER_FORMAT_VERSION = 1
DEFAULT_MAX_BAR_EMBEDDING = 256

# miditok token type of each of our attributes (ATTRIBUTE_NAMES order).
_MIDITOK_TYPES = {
    "bar": "Bar",
    "position": "Position",
    "program": "Program",
    "pitch": "Pitch",
    "duration": "Duration",
    "velocity": "Velocity",
    "time_signature": "TimeSig",
    "tempo": "Tempo",
}
_SPECIAL_TOKENS = ["PAD_None", "BOS_None", "EOS_None", "MASK_None"]
_NOTE_FIELDS = ("time", "duration", "pitch", "velocity")


class MidiReadError(ValueError):
    """A MIDI file is missing, empty, truncated or corrupt. The message names the file."""


@dataclass
class EncodingReport:
    """What :meth:`OctupleTokenizer.encode_score` did with one piece.

    Attributes:
        source: the file path, or ``"<Score>"`` for an in-memory score.
        num_notes_in: notes in the symusic score (all tracks).
        num_notes_out: note tokens produced.
        dropped: notes that could not be represented, per reason (``pitch_out_of_range``,
            ``drum_pitch_out_of_range``, ``program_not_in_vocabulary``).
        ignored_time_signatures: time signature changes outside the vocabulary; the notes under them are kept
            and encoded under the previous supported time signature (miditok's rule).
    """

    source: str
    num_notes_in: int = 0
    num_notes_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    ignored_time_signatures: int = 0

    @property
    def num_dropped(self) -> int:
        """Total number of notes left out."""
        return int(sum(self.dropped.values()))

    def to_dict(self) -> dict[str, Any]:
        """The report as a plain (JSON-serialisable) dict."""
        return asdict(self)


def default_tokenizer_config(max_bar_embedding: int = DEFAULT_MAX_BAR_EMBEDDING, **overrides: Any) -> TokenizerConfig:
    """The miditok configuration used by default (see the module docstring for the values).

    Args:
        max_bar_embedding: size of the bar vocabulary (bars one segment may span).
        **overrides: any other :class:`miditok.TokenizerConfig` argument, replacing our default.
    """
    kwargs: dict[str, Any] = {
        "use_programs": True,
        "one_token_stream_for_programs": True,
        "use_tempos": True,
        "use_time_signatures": True,
        "use_velocities": True,
        "special_tokens": list(_SPECIAL_TOKENS),
    }
    kwargs.update(overrides)
    # TokenizerConfig stores unknown keyword arguments in ``config.additional_params``.
    additional = dict(kwargs.pop("additional_params", {}) or {})
    additional.setdefault("max_bar_embedding", int(max_bar_embedding))
    return TokenizerConfig(**kwargs, **additional)


def _config_from_dict(values: Mapping[str, Any]) -> TokenizerConfig:
    """Rebuild a :class:`miditok.TokenizerConfig` from ``config.to_dict(serialize=True)`` read back from JSON."""
    values = dict(values)
    for key in ("beat_res", "beat_res_rest"):
        if key in values:
            values[key] = {tuple(map(int, str(k).split("_"))): v for k, v in values[key].items()}
    if "time_signature_range" in values:
        values["time_signature_range"] = {int(k): list(v) for k, v in values["time_signature_range"].items()}
    if "chord_maps" in values:
        values["chord_maps"] = {k: tuple(v) for k, v in values["chord_maps"].items()}
    return TokenizerConfig.from_dict(values)


def _closest_index(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the closest ``reference`` value for each value (ties as ``miditok.utils.np_get_closest``)."""
    idx = np.searchsorted(reference, values, side="left")
    prev = np.maximum(idx - 1, 0)
    nxt = np.minimum(idx, len(reference) - 1)
    take_prev = (idx == len(reference)) | (np.fabs(values - reference[prev]) < np.fabs(values - reference[nxt]))
    idx[take_prev] -= 1
    return idx


def _resample_ticks(ticks: np.ndarray, new_tpq: int, old_tpq: int) -> np.ndarray:
    """symusic's ``Score.resample`` time conversion: ``round(new * t / old)``, halves away from zero."""
    ticks = ticks.astype(np.int64)
    return (2 * new_tpq * ticks + old_tpq) // (2 * old_tpq)


class OctupleTokenizer:
    """Octuple tokenizer for Adversarial-MidiBERT (one row of 8 ids per note).

    Token layout: every row is ``(bar, position, program, pitch, duration, velocity, time_signature, tempo)``
    ids (:attr:`attribute_names`); each attribute has its own miditok vocabulary that starts with the special
    tokens ``PAD=0, BOS=1, EOS=2, MASK=3``. A model input segment is a BOS row (all eight ids BOS), at most
    ``max_seq_len - 2`` note rows, and an EOS row (all EOS); batches are padded with PAD rows (id 0) and an
    ``attention_mask`` of 0.

    Args:
        max_seq_len: the most rows of one segment, BOS and EOS rows included (1024 in the paper).
        tokenizer_config: a :class:`miditok.TokenizerConfig`; :func:`default_tokenizer_config` when ``None``.
            Programs, velocities, durations, tempos and time signatures must be on (the eight attributes), all
            tracks in one stream (``one_token_stream_for_programs``), and ``remove_duplicated_notes`` off.
        warn: emit a ``warnings.warn`` naming the file whenever notes are left out (see :attr:`last_report`).
    """

    attribute_names: tuple[str, ...] = ATTRIBUTE_NAMES
    pad_token_id: int = PAD_ID
    bos_token_id: int = BOS_ID
    eos_token_id: int = EOS_ID
    mask_token_id: int = MASK_ID
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, max_seq_len: int = 1024, tokenizer_config: TokenizerConfig | None = None, warn: bool = True):
        if int(max_seq_len) < 3:
            raise ValueError(f"max_seq_len must be at least 3 (BOS, one note, EOS), got {max_seq_len}")
        self.max_seq_len = int(max_seq_len)
        self.warn = bool(warn)
        config = tokenizer_config if tokenizer_config is not None else default_tokenizer_config()
        self._check_config(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._miditok = Octuple(config)
        self.config: TokenizerConfig = self._miditok.config
        self.last_report: EncodingReport | None = None
        self._build_tables()

    # ------------------------------------------------------------------ configuration and tables
    @staticmethod
    def _check_config(config: TokenizerConfig) -> None:
        needed = {
            "use_programs": True,
            "one_token_stream_for_programs": True,
            "use_velocities": True,
            "use_tempos": True,
            "use_time_signatures": True,
            "remove_duplicated_notes": False,
        }
        wrong = [f"{k}={v!r}" for k, v in needed.items() if bool(getattr(config, k)) != v]
        if not config.use_note_duration_programs:  # miditok's Octuple extends a non-empty set to all programs
            wrong.append("use_note_duration_programs is empty (no duration attribute)")
        if wrong:
            raise ValueError(f"tokenizer_config: unsupported settings for OctupleTokenizer ({', '.join(wrong)})")
        if list(config.special_tokens[:NUM_SPECIAL_TOKENS]) != _SPECIAL_TOKENS:
            raise ValueError(
                f"tokenizer_config.special_tokens must start with {_SPECIAL_TOKENS}, got {config.special_tokens}"
            )

    def _build_tables(self) -> None:
        mt = self._miditok
        cfg = self.config
        vocab = mt.vocab  # list of dicts, miditok column order
        self._perm = np.array([mt.vocab_types_idx[_MIDITOK_TYPES[name]] for name in ATTRIBUTE_NAMES])
        self._vocabs = [vocab[i] for i in self._perm]  # our order
        for name, voc in zip(ATTRIBUTE_NAMES, self._vocabs, strict=True):
            for tok_id, tok in enumerate(_SPECIAL_TOKENS):
                if voc.get(tok) != tok_id:
                    raise ValueError(f"miditok vocabulary of {name!r}: {tok} is not id {tok_id}")
        self._inv_vocabs = [{v: k for k, v in voc.items()} for voc in self._vocabs]
        self.vocab_sizes: tuple[int, ...] = tuple(len(v) for v in self._vocabs)
        self.max_num_pos_per_beat = int(cfg.max_num_pos_per_beat)
        self.max_bar_embedding = int(cfg.additional_params["max_bar_embedding"])
        bar_voc, pos_voc = self._vocabs[BAR], self._vocabs[1]
        if bar_voc.get("Bar_0") != NUM_SPECIAL_TOKENS or pos_voc.get("Position_0") != NUM_SPECIAL_TOKENS:
            raise ValueError("miditok vocabulary: Bar_0 / Position_0 are expected right after the special tokens")

        # Pitch: id per MIDI pitch (-1: not representable); drums separately when PitchDrum tokens are used.
        pitch_voc = self._vocabs[PITCH]
        self.pitch_range: tuple[int, int] = (int(cfg.pitch_range[0]), int(cfg.pitch_range[1]))
        self._pitch_ids = np.array([pitch_voc.get(f"Pitch_{p}", -1) for p in range(128)], dtype=np.int64)
        self.use_pitchdrum_tokens = bool(cfg.use_pitchdrum_tokens)
        if self.use_pitchdrum_tokens:
            self._drum_pitch_ids = np.array([pitch_voc.get(f"PitchDrum_{p}", -1) for p in range(128)], dtype=np.int64)
        else:
            self._drum_pitch_ids = self._pitch_ids
        # Program: index program + 1 (drums are -1).
        prog_voc = self._vocabs[PROGRAM]
        self._program_ids = np.array([prog_voc.get(f"Program_{p}", -1) for p in range(-1, 128)], dtype=np.int64)
        self.drum_program_token_id: int | None = prog_voc.get("Program_-1")
        # Velocity.
        self.velocity_values = np.asarray(mt.velocities, dtype=np.int64)
        self._velocity_ids = np.array([self._vocabs[5][f"Velocity_{v}"] for v in self.velocity_values])
        # Duration: per ticks-per-beat value, the bin ticks and their ids.
        dur_voc = self._vocabs[4]
        self._dur_ticks: dict[int, np.ndarray] = {}
        self._dur_ids: dict[int, np.ndarray] = {}
        for tpb, ticks in mt._tpb_to_time_array.items():
            self._dur_ticks[int(tpb)] = np.asarray(ticks, dtype=np.int64)
            self._dur_ids[int(tpb)] = np.array(
                [dur_voc[f"Duration_{mt._tpb_ticks_to_tokens[tpb][int(t)]}"] for t in ticks], dtype=np.int64
            )
        # Lookup tables (value -> id) for the encoder: velocity 0..127, duration 0..longest bin (longer
        # durations take the last bin), both with miditok's closest-value rule.
        self._velocity_lut = self._velocity_ids[_closest_index(self.velocity_values, np.arange(128))]
        self._dur_lut = {
            tpb: self._dur_ids[tpb][_closest_index(ticks, np.arange(int(ticks[-1]) + 1))]
            for tpb, ticks in self._dur_ticks.items()
        }
        # Tempo: miditok quantises microseconds per quarter to the closest of its (sorted) mspq table, then
        # writes the tempo token from symusic's qpm of that mspq rounded to 2 decimals.
        tempo_voc = self._vocabs[7]
        self._tempos_mspq = np.asarray(mt._tempos_mspq, dtype=np.float64)
        mocked = Tempo.from_numpy(np.zeros(len(self._tempos_mspq), np.int32), self._tempos_mspq)
        qpm = np.array([t.tempo for t in mocked])
        self._tempo_qpm = qpm
        self._tempo_ids = np.array([tempo_voc[f"Tempo_{round(float(q), 2)}"] for q in qpm], dtype=np.int64)
        self._default_tempo = float(mt.default_tempo)
        self._default_tempo_id = tempo_voc[f"Tempo_{mt.default_tempo}"]
        # Time signatures.
        ts_voc = self._vocabs[6]
        self._ts_ids = {tuple(map(int, ts)): ts_voc[f"TimeSig_{ts[0]}/{ts[1]}"] for ts in mt.time_signatures}
        self._ts_by_id = {v: k for k, v in self._ts_ids.items()}

        # Decoding tables (id -> value), -1 for ids that are not notes.
        self._dec_pitch = np.full(self.vocab_sizes[PITCH], -1, dtype=np.int64)
        self._dec_is_drum_pitch = np.zeros(self.vocab_sizes[PITCH], dtype=bool)
        for tok, i in pitch_voc.items():
            kind, _, value = tok.partition("_")
            if kind in ("Pitch", "PitchDrum"):
                self._dec_pitch[i] = int(value)
                self._dec_is_drum_pitch[i] = kind == "PitchDrum"
        self._dec_program = np.full(self.vocab_sizes[PROGRAM], -2, dtype=np.int64)
        for tok, i in prog_voc.items():
            if tok.startswith("Program_"):
                self._dec_program[i] = int(tok.split("_")[1])
        self._dec_velocity = np.zeros(self.vocab_sizes[5], dtype=np.int64)
        self._dec_velocity[self._velocity_ids] = self.velocity_values
        self._dec_tempo = np.zeros(self.vocab_sizes[7], dtype=np.float64)
        for tok, i in tempo_voc.items():
            if tok.startswith("Tempo_"):
                self._dec_tempo[i] = float(tok.split("_")[1])
        self._dec_duration: dict[int, np.ndarray] = {}
        for tpb, tok_to_ticks in mt._tpb_tokens_to_ticks.items():
            table = np.zeros(self.vocab_sizes[4], dtype=np.int64)
            for value, ticks in tok_to_ticks.items():
                table[dur_voc[f"Duration_{value}"]] = ticks
            self._dec_duration[int(tpb)] = table

    # ------------------------------------------------------------------ public vocabulary helpers
    @property
    def num_attributes(self) -> int:
        """Number of attributes per token row (8)."""
        return NUM_ATTRIBUTES

    @property
    def vocab(self) -> list[dict[str, int]]:
        """The eight miditok vocabularies (token string -> id), in :attr:`attribute_names` order."""
        return [dict(v) for v in self._vocabs]

    @property
    def miditok_tokenizer(self) -> Octuple:
        """The underlying :class:`miditok.Octuple` (miditok column order, its own encoder and decoder)."""
        return self._miditok

    @property
    def attribute_permutation(self) -> tuple[int, ...]:
        """For each of our attributes, its column in miditok's Octuple rows (``ours = miditok[:, perm]``)."""
        return tuple(int(i) for i in self._perm)

    def pitch_token_id(self, pitch: int | np.ndarray) -> int | np.ndarray:
        """Pitch-attribute id of a (non-drum) MIDI pitch; ids are contiguous and ascending in pitch.

        Args:
            pitch: a MIDI pitch or an integer array of them, within :attr:`pitch_range` (inclusive).
        """
        arr = np.asarray(pitch, dtype=np.int64)
        lo, hi = self.pitch_range
        if np.any((arr < lo) | (arr > hi)):
            raise ValueError(f"pitch {pitch} outside the tokenizer's pitch range {lo}..{hi}")
        ids = self._pitch_ids[arr]
        return int(ids) if ids.ndim == 0 else ids

    def token_to_id(self, attribute: str | int, token: str) -> int:
        """Id of a miditok token string (e.g. ``"Pitch_60"``) in one attribute's vocabulary.

        Args:
            attribute: attribute name (see :attr:`attribute_names`) or index.
            token: the miditok token string.
        """
        a = self._attribute_index(attribute)
        try:
            return self._vocabs[a][token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the {ATTRIBUTE_NAMES[a]!r} vocabulary") from None

    def id_to_token(self, attribute: str | int, token_id: int) -> str:
        """miditok token string of an id in one attribute's vocabulary (bars beyond the vocabulary included).

        Args:
            attribute: attribute name (see :attr:`attribute_names`) or index.
            token_id: the id.
        """
        a = self._attribute_index(attribute)
        token_id = int(token_id)
        if a == BAR and token_id >= self.vocab_sizes[BAR]:
            return f"Bar_{token_id - NUM_SPECIAL_TOKENS}"
        try:
            return self._inv_vocabs[a][token_id]
        except KeyError:
            raise KeyError(f"id {token_id} is not in the {ATTRIBUTE_NAMES[a]!r} vocabulary") from None

    def ids_to_values(self, attribute: str | int, ids: np.ndarray) -> np.ndarray:
        """Numeric values of ids (vectorised); special ids give -1 (0.0 for tempo).

        Values: bar and position indices, program (-1 drums), MIDI pitch, velocity, tempo in qpm, duration
        in beats (float), time signature as ``numerator / denominator`` pairs (array (..., 2)).

        Args:
            attribute: attribute name or index.
            ids: integer array of ids of that attribute.
        """
        a = self._attribute_index(attribute)
        ids = np.asarray(ids, dtype=np.int64)
        special = ids < NUM_SPECIAL_TOKENS
        name = ATTRIBUTE_NAMES[a]
        if name in ("bar", "position"):
            return np.where(special, -1, ids - NUM_SPECIAL_TOKENS)
        if name == "pitch":
            return self._dec_pitch[ids]
        if name == "program":
            return np.where(special, -1, self._dec_program[ids])
        if name == "velocity":
            return np.where(special, -1, self._dec_velocity[ids])
        if name == "tempo":
            return self._dec_tempo[ids]
        if name == "duration":
            tpb = next(iter(self._dec_duration))  # ticks at any ticks-per-beat, divided by it: beats
            return np.where(special, -1.0, self._dec_duration[tpb][ids] / tpb)
        # time signature
        out = np.full(ids.shape + (2,), -1, dtype=np.int64)
        for tok_id, ts in self._ts_by_id.items():
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

    # ------------------------------------------------------------------ reading
    @staticmethod
    def load_score(score_or_path: Score | str | os.PathLike) -> tuple[Score, str]:
        """Return ``(score, source_name)``; read a path with symusic, raising :class:`MidiReadError` on failure.

        Args:
            score_or_path: a :class:`symusic.Score` or a path to a MIDI file.
        """
        if isinstance(score_or_path, Score):
            if "Tick" not in type(score_or_path).__name__:  # ScoreQuarter / ScoreSecond
                return score_or_path.to("tick"), "<Score>"
            return score_or_path, "<Score>"
        if not isinstance(score_or_path, (str, os.PathLike)):
            raise TypeError(f"expected a symusic.Score or a MIDI file path, got {type(score_or_path).__name__}")
        path = Path(score_or_path)
        if not path.is_file():
            raise MidiReadError(f"{path}: MIDI file not found")
        if path.stat().st_size == 0:
            raise MidiReadError(f"{path}: empty file, not a MIDI file")
        try:
            score = Score(str(path))
        except Exception as err:  # symusic raises RuntimeError / ValueError / IndexError on corrupt data
            with path.open("rb") as handle:
                head = handle.read(4)
            if head != b"MThd" and path.suffix.lower() in (".mid", ".midi", ".smf", ""):
                raise MidiReadError(
                    f"{path}: not a MIDI file (starts with {head!r}, expected b'MThd'; {err})"
                ) from err
            raise MidiReadError(f"{path}: corrupt or truncated MIDI file ({type(err).__name__}: {err})") from err
        if score.ticks_per_quarter <= 0:
            raise MidiReadError(f"{path}: invalid time division {score.ticks_per_quarter}")
        return score, str(path)

    # ------------------------------------------------------------------ encoding
    def _process_time_signatures(self, score: Score) -> tuple[np.ndarray, int, int]:
        """miditok's time-signature preprocessing. Returns ``(ts (K, 3) [time, num, den], new_tpq, ignored)``."""
        soa = score.time_signatures.numpy()
        times, nums, dens = (np.asarray(soa[k], dtype=np.int64) for k in ("time", "numerator", "denominator"))
        supported = np.array([(int(n), int(d)) in self._ts_ids for n, d in zip(nums, dens, strict=True)], dtype=bool)
        ignored = int((~supported).sum())
        times, nums, dens = times[supported], nums[supported], dens[supported]
        if len(times) == 0 or times[0] != 0:
            times = np.concatenate([[0], times])
            nums = np.concatenate([[TIME_SIGNATURE[0]], nums])
            dens = np.concatenate([[TIME_SIGNATURE[1]], dens])
        new_tpq = int(self.max_num_pos_per_beat * int(dens.max()) / 4)
        tpq = score.ticks_per_quarter
        if tpq != new_tpq:
            times = (times * (new_tpq / tpq)).astype(np.int32).astype(np.int64)
        # Sequential rules (few time signatures): dedupe, delay to the next bar, keep the last at one tick.
        ts = [[int(t), int(n), int(d)] for t, n, d in zip(times, nums, dens, strict=True)]

        def tpbar(entry: list[int]) -> int:
            return self._ticks_per_beat(entry[2], new_tpq) * entry[1]

        i = 0
        ticks_per_bar = tpbar(ts[0])
        previous_tick = 0
        while i < len(ts):
            if i >= 1 and ts[i][1:] == ts[i - 1][1:]:
                del ts[i]
                continue
            if i >= 1 and ts[i][0] < ts[i - 1][0]:
                ts[i][0] = ts[i - 1][0]
            bar_offset, rest = divmod(ts[i][0] - previous_tick, ticks_per_bar)
            if rest > 0:
                ts[i][0] = previous_tick + (bar_offset + 1) * ticks_per_bar
            ticks_per_bar = tpbar(ts[i])
            previous_tick = ts[i][0]
            if i >= 1 and ts[i][0] == ts[i - 1][0]:
                del ts[i - 1]
                if i >= 2 and ts[i - 1][1:] == ts[i - 2][1:]:
                    del ts[i - 1]
                    ticks_per_bar = tpbar(ts[i - 2])
                    previous_tick = ts[i - 2][0]
                    i -= 1
                continue
            i += 1
        if self.config.delete_equal_successive_time_sig_changes and tuple(ts[0][1:]) == TIME_SIGNATURE:
            ts[0][0] = 0
        elif ts[0][0] != 0:
            ts.insert(0, [0, *TIME_SIGNATURE])
        return np.array(ts, dtype=np.int64).reshape(-1, 3), new_tpq, ignored

    @staticmethod
    def _ticks_per_beat(denominator: int, tpq: int) -> int:
        """miditok's ``compute_ticks_per_beat``: ticks in one beat of a time signature's denominator."""
        return tpq if denominator == 4 else int(tpq * (4 / denominator))

    def _process_tempos(self, score: Score, new_tpq: int, factors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """miditok's tempo preprocessing. Returns ``(times, token_ids)`` of the kept tempo changes."""
        soa = score.tempos.numpy()
        if len(soa["time"]) == 0:
            return np.zeros(1, np.int64), np.array([self._default_tempo_id])
        times = np.asarray(soa["time"], dtype=np.int64)
        if score.ticks_per_quarter != new_tpq:
            times = _resample_ticks(times, new_tpq, score.ticks_per_quarter)
        idx = _closest_index(self._tempos_mspq, np.asarray(soa["mspq"], dtype=np.float64))
        if factors is not None:
            times = self._adjust_times(times, factors)
        # Several changes at one tick: keep the last. Then successive equal tempos: keep the first.
        keep = np.ones(len(times), dtype=bool)
        keep[:-1] = times[1:] != times[:-1]
        times, idx = times[keep], idx[keep]
        keep = np.ones(len(times), dtype=bool)
        keep[1:] = idx[1:] != idx[:-1]
        times, idx = times[keep], idx[keep]
        ids = self._tempo_ids[idx]
        if self._tempo_qpm[idx[0]] == self._default_tempo:
            times[0] = 0
        elif times[0] != 0:
            times = np.concatenate([[0], times])
            ids = np.concatenate([[self._default_tempo_id], ids])
        return times, ids

    @staticmethod
    def _sections(ts: np.ndarray, step_of_denominator) -> np.ndarray:
        """Sections of equal step between time signature changes: array (S, 2) of ``[start tick, step]``.

        Equal successive steps are merged (miditok's ``get_score_ticks_per_beat`` and resampling factors).
        """
        sections = [[0, step_of_denominator(int(ts[0, 2]))]]
        for time, _, den in ts[1:].tolist():
            step = step_of_denominator(den)
            if step != sections[-1][1]:
                sections.append([time, step])
        return np.array(sections, dtype=np.int64)

    @staticmethod
    def _adjust_times(times: np.ndarray, factors: np.ndarray) -> np.ndarray:
        """miditok's ``_adjust_time_to_tpb``: round onsets to the grid of their time-signature section."""
        section = np.searchsorted(factors[1:, 0], times, side="right")
        start, step = factors[section, 0], factors[section, 1]
        return (np.round((times - start) / step) * step + start).astype(np.int64)

    def encode_score(
        self, score_or_path: Score | str | os.PathLike, return_note_indices: bool = False
    ) -> np.ndarray | tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Encode a whole piece: one row of 8 ids per note, absolute bars, no BOS/EOS.

        The ids, their order (time, then track in miditok's merged-track order, then the track's note order)
        and the notes kept are exactly those of miditok's ``Octuple.encode`` with this configuration (and a
        bar limit high enough for the piece), after the column permutation to :attr:`attribute_names`.
        Bar ids are ``4 + bar index from the start of the piece`` and may exceed the bar vocabulary until the
        piece is cut by :meth:`segment`. Notes that cannot be represented (pitch outside the range, program
        outside the vocabulary) are left out, counted in :attr:`last_report` and reported with a warning.

        Args:
            score_or_path: a :class:`symusic.Score` (tick time) or a MIDI file path.
            return_note_indices: also return ``(track_index, note_index)``, int64 arrays (N,) giving each
                token's source note ``score.tracks[track_index].notes[note_index]`` in the score as read
                (tracks merged by program still point to their own source track).

        Returns:
            ``ids`` (N, 8) int64, or ``(ids, (track_index, note_index))``.

        Raises:
            MidiReadError: the file is missing, empty or not a readable MIDI file.
        """
        score, source = self.load_score(score_or_path)
        report = EncodingReport(source=source)
        ts, new_tpq, report.ignored_time_signatures = self._process_time_signatures(score)
        tpq = score.ticks_per_quarter

        # Resampling factors (several denominators): onsets are re-quantised per section.
        factors = None
        if len(set(ts[:, 2].tolist())) > 1:
            factors = self._sections(ts, lambda d: int(new_tpq // (self.max_num_pos_per_beat * (d / 4))))
        tpb_sections = self._sections(ts, lambda d: self._ticks_per_beat(d, new_tpq))

        # Tracks: grouped by program (drums -1) and merged at the position of the group's first track.
        tracks = score.tracks
        track_programs = [(-1 if t.is_drum else int(t.program)) for t in tracks]
        groups: dict[int, list[int]] = {}
        for ti, prog in enumerate(track_programs):
            groups.setdefault(prog, []).append(ti)
        sizes = np.array([t.note_num() for t in tracks], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        report.num_notes_in = int(offsets[-1])

        parts: list[tuple[np.ndarray, ...]] = []
        dropped = {"pitch_out_of_range": 0, "drum_pitch_out_of_range": 0, "program_not_in_vocabulary": 0}
        for group in sorted(groups.values(), key=lambda g: g[0]):
            prog = track_programs[group[0]]
            count = int(sizes[group].sum())
            if count == 0:
                continue
            if self._program_ids[prog + 1] < 0:
                dropped["program_not_in_vocabulary"] += count
                continue
            arrays = [tracks[ti].notes.numpy() for ti in group if sizes[ti]]
            if len(arrays) == 1:
                a = arrays[0]
                time, dur, pitch, vel = a["time"], a["duration"], a["pitch"], a["velocity"]
                ti0 = next(ti for ti in group if sizes[ti])
                src = np.arange(offsets[ti0], offsets[ti0 + 1])
            else:
                time, dur, pitch, vel = (np.concatenate([a[k] for a in arrays]) for k in _NOTE_FIELDS)
                src = np.concatenate([np.arange(offsets[ti], offsets[ti + 1]) for ti in group])
            time = time.astype(np.int64)
            dur = dur.astype(np.int64)
            if tpq != new_tpq:
                time = _resample_ticks(time, new_tpq, tpq)
                dur = np.maximum(_resample_ticks(dur, new_tpq, tpq), 1)
            if len(arrays) > 1:  # merged tracks: symusic's note order (time, duration, pitch, velocity)
                perm = np.lexsort((vel, pitch, dur, time))
                time, dur, pitch, vel, src = time[perm], dur[perm], pitch[perm], vel[perm], src[perm]
            is_drum = prog == -1
            pitch_id = (self._drum_pitch_ids if is_drum else self._pitch_ids)[pitch.astype(np.intp) & 127]
            ok = pitch_id >= 0
            ok &= pitch >= 0
            if not ok.all():
                reason = "drum_pitch_out_of_range" if is_drum and self.use_pitchdrum_tokens else "pitch_out_of_range"
                dropped[reason] += int((~ok).sum())
                time, dur, pitch_id, vel, src = time[ok], dur[ok], pitch_id[ok], vel[ok], src[ok]
            parts.append((time, dur, pitch_id, vel, src, np.full(len(time), self._program_ids[prog + 1])))

        report.dropped = {k: v for k, v in dropped.items() if v}
        if not parts:
            ids = np.zeros((0, NUM_ATTRIBUTES), dtype=np.int64)
            src = np.zeros(0, dtype=np.int64)
        else:
            if len(parts) == 1:
                time, dur, pitch_id, vel, src, prog_id = parts[0]
            else:
                time, dur, pitch_id, vel, src, prog_id = (np.concatenate(c) for c in zip(*parts, strict=True))
            if factors is not None:
                time = self._adjust_times(time, factors)
            ids = np.empty((len(time), NUM_ATTRIBUTES), dtype=np.int64)
            ids[:, PITCH] = pitch_id
            ids[:, PROGRAM] = prog_id
            ids[:, 5] = self._velocity_lut[vel.astype(np.intp) & 127]
            # Durations: closest bin for the ticks-per-beat of the onset's time-signature section.
            if len(tpb_sections) == 1:
                lut = self._dur_lut[int(tpb_sections[0, 1])]
                ids[:, 4] = lut[np.clip(dur, 0, len(lut) - 1)]
            else:
                tpb = tpb_sections[np.searchsorted(tpb_sections[1:, 0], time, side="right"), 1]
                for value in np.unique(tpb):
                    sel = tpb == value
                    lut = self._dur_lut[int(value)]
                    ids[sel, 4] = lut[np.clip(dur[sel], 0, len(lut) - 1)]
            # Bar and position from the time signature in force at the onset.
            tpbeat = np.array([self._ticks_per_beat(int(d), new_tpq) for d in ts[:, 2]], dtype=np.int64)
            tpbar = tpbeat * ts[:, 1]
            tppos = tpbeat // self.max_num_pos_per_beat
            if len(ts) == 1:
                bar, offset = np.divmod(time, tpbar[0])
                ids[:, BAR] = bar + NUM_SPECIAL_TOKENS
                ids[:, 1] = offset // tppos[0] + NUM_SPECIAL_TOKENS
                ids[:, 6] = self._ts_ids[(int(ts[0, 1]), int(ts[0, 2]))]
            else:
                k = np.searchsorted(ts[:, 0], time, side="right") - 1
                bar_at_ts = np.zeros(len(ts), dtype=np.int64)
                bar_at_ts[1:] = np.cumsum(np.diff(ts[:, 0]) // tpbar[:-1])
                bar_in, offset = np.divmod(time - ts[k, 0], tpbar[k])
                ids[:, BAR] = NUM_SPECIAL_TOKENS + bar_at_ts[k] + bar_in
                ids[:, 1] = NUM_SPECIAL_TOKENS + offset // tppos[k]
                ts_ids = np.array([self._ts_ids[(int(n), int(d))] for _, n, d in ts], dtype=np.int64)
                ids[:, 6] = ts_ids[k]
            tempo_times, tempo_ids = self._process_tempos(score, new_tpq, factors)
            if len(tempo_times) == 1 and tempo_times[0] == 0:
                ids[:, 7] = tempo_ids[0]
            else:
                j = np.searchsorted(tempo_times, time, side="right") - 1
                ids[:, 7] = np.where(j >= 0, tempo_ids[np.maximum(j, 0)], self._default_tempo_id)
            # Stable sort by onset: ties keep the track order, then the track's note order (miditok's event sort).
            perm = np.argsort(time, kind="stable")
            ids = ids[perm]
            src = src[perm]

        report.num_notes_out = len(ids)
        self.last_report = report
        if self.warn and (report.dropped or report.ignored_time_signatures):
            details = [f"{n} {reason.replace('_', ' ')}" for reason, n in report.dropped.items()]
            if report.ignored_time_signatures:
                details.append(
                    f"{report.ignored_time_signatures} time signature change(s) outside the vocabulary ignored "
                    "(their notes are encoded under the previous time signature)"
                )
            warnings.warn(
                f"{source}: {report.num_dropped} of {report.num_notes_in} notes left out; " + "; ".join(details),
                stacklevel=2,
            )
        if return_note_indices:
            track_index = np.searchsorted(offsets, src, side="right") - 1
            return ids, (track_index.astype(np.int64), (src - offsets[track_index]).astype(np.int64))
        return ids

    # ------------------------------------------------------------------ segmenting
    def segment(
        self,
        ids: np.ndarray,
        note_aligned_arrays: Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
        add_special_tokens: bool = True,
        max_seq_len: int | None = None,
        fill_value: int = -100,
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[Any]]:
        """Cut a piece (rows of :meth:`encode_score`) into model segments.

        Rule: segments are consecutive and cover every note once. A segment holds at most ``max_seq_len - 2``
        notes (``max_seq_len`` rows with the BOS and EOS rows), and it is cut earlier when its next note would
        lie ``max_bar_embedding`` or more bars after the segment's first note, so that bar ids, counted from
        the segment's first note (whose bar becomes ``Bar_0``), always stay inside the bar vocabulary.

        Args:
            ids: ``(N, 8)`` ids of a whole piece (absolute bars), as returned by :meth:`encode_score`.
            note_aligned_arrays: optional arrays with one entry per note (labels, source indices...): a
                sequence of arrays or a mapping name -> array, each of first dimension N. They are cut the same
                way; with ``add_special_tokens`` they get ``fill_value`` at the BOS and EOS rows so that they
                stay aligned with the segment rows.
            add_special_tokens: add the BOS row (all attributes BOS) and the EOS row (all EOS).
            max_seq_len: override of :attr:`max_seq_len` (rows per segment including BOS/EOS when added).
            fill_value: value of the note-aligned arrays at BOS/EOS rows (-100: ignored by losses).

        Returns:
            a list of ``(L, 8)`` int64 arrays; with ``note_aligned_arrays`` a tuple ``(segments, aligned)``
            where ``aligned[s]`` is a tuple (or dict, for a mapping) of the cut arrays of segment ``s``.
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
        segments: list[np.ndarray] = []
        aligned: list[Any] = []
        start = 0
        n = len(ids)
        while start < n:
            end = min(start + max_notes, n)
            bar_end = int(np.searchsorted(bars, bars[start] + self.max_bar_embedding, side="left"))
            end = max(start + 1, min(end, bar_end))
            seg = ids[start:end].copy()
            seg[:, BAR] -= bars[start] - NUM_SPECIAL_TOKENS
            cut = [a[start:end] for a in extras]
            if add_special_tokens:
                seg = np.concatenate(
                    [np.full((1, NUM_ATTRIBUTES), BOS_ID), seg, np.full((1, NUM_ATTRIBUTES), EOS_ID)]
                ).astype(np.int64)
                cut = [self._pad_aligned(a, fill_value) for a in cut]
            segments.append(seg)
            if extras:
                aligned.append(dict(zip(names, cut, strict=True)) if is_mapping else tuple(cut))
            start = end
        if note_aligned_arrays is None:
            return segments
        return segments, aligned

    @staticmethod
    def _pad_aligned(arr: np.ndarray, fill_value: Any) -> np.ndarray:
        pad = np.full((1, *arr.shape[1:]), fill_value, dtype=np.result_type(arr.dtype, np.asarray(fill_value)))
        return np.concatenate([pad, arr.astype(pad.dtype, copy=False), pad])

    # ------------------------------------------------------------------ transformers-like call
    def __call__(
        self,
        inputs: Score | str | os.PathLike | Sequence[Score | str | os.PathLike],
        return_tensors: str | None = None,
        padding: bool | str = True,
        add_special_tokens: bool = True,
        max_seq_len: int | None = None,
    ):
        """Tokenize one or several pieces into padded segments, like a transformers tokenizer.

        Every piece is encoded (:meth:`encode_score`) and cut (:meth:`segment`): a segment is a BOS row (all
        eight ids = BOS), its notes and an EOS row (all EOS). Segments are padded at the end with PAD rows
        (id 0 in every attribute) and ``attention_mask`` 0, to the longest segment (``padding=True`` or
        ``"longest"``) or to ``max_seq_len`` (``"max_length"``); ``padding=False`` leaves them unpadded
        (lists only, or tensors when all have the same length).

        Args:
            inputs: a MIDI path, a :class:`symusic.Score`, or a list of them.
            return_tensors: ``None`` (Python lists), ``"np"`` or ``"pt"``.
            padding: ``True``/``"longest"``, ``"max_length"`` or ``False``/``"do_not_pad"``.
            add_special_tokens: add the BOS/EOS rows.
            max_seq_len: override of :attr:`max_seq_len`.

        Returns:
            a :class:`transformers.BatchEncoding` with ``input_ids`` (segments, length, 8), ``attention_mask``
            (segments, length) and ``piece_index`` (segments,): the input each segment came from.

        Raises:
            MidiReadError: an input file is missing or not a readable MIDI file (named in the message).
        """
        from transformers import BatchEncoding

        if isinstance(inputs, (Score, str, os.PathLike)):
            inputs = [inputs]
        length = self.max_seq_len if max_seq_len is None else int(max_seq_len)
        segments: list[np.ndarray] = []
        piece_index: list[int] = []
        for i, item in enumerate(inputs):
            segs = self.segment(self.encode_score(item), add_special_tokens=add_special_tokens, max_seq_len=length)
            segments.extend(segs)
            piece_index.extend([i] * len(segs))
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
            data = {
                "input_ids": [s.tolist() for s in segments] if return_tensors is None else np.stack(segments),
                "attention_mask": [[1] * len(s) for s in segments]
                if return_tensors is None
                else np.ones((len(segments), len(segments[0]) if segments else 0), np.int64),
                "piece_index": piece_index if return_tensors is None else np.asarray(piece_index, np.int64),
            }
        else:
            input_ids = np.full((len(segments), target, NUM_ATTRIBUTES), PAD_ID, dtype=np.int64)
            attention_mask = np.zeros((len(segments), target), dtype=np.int64)
            for s, seg in enumerate(segments):
                input_ids[s, : len(seg)] = seg
                attention_mask[s, : len(seg)] = 1
            data = {"input_ids": input_ids, "attention_mask": attention_mask, "piece_index": np.asarray(piece_index)}
            if return_tensors is None:
                data = {k: v.tolist() for k, v in data.items()}
        return BatchEncoding(data, tensor_type=return_tensors)

    # ------------------------------------------------------------------ decoding
    def decode(self, input_ids: Any) -> Score:
        """Rebuild a :class:`symusic.Score` from token rows (a segment or a whole piece).

        Rows with a special id (PAD, BOS, EOS, MASK) in any attribute are skipped. Onsets follow miditok's
        Octuple decoding: bar and position on the grid of the row's time signature, a time signature change
        taking effect at the bar of the first note that carries it. Durations, velocities and tempos are the
        vocabulary's values; one track per program (program -1: drums). The score's time division is
        miditok's (``tokenizer.miditok_tokenizer.time_division``); write it with ``score.dump_midi(path)``.

        Args:
            input_ids: ``(N, 8)`` ids (numpy, torch or nested lists), or ``(1, N, 8)``.
        """
        if hasattr(input_ids, "detach"):
            input_ids = input_ids.detach().cpu().numpy()
        ids = np.asarray(input_ids, dtype=np.int64)
        if ids.ndim == 3 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 2 or ids.shape[1] != NUM_ATTRIBUTES:
            raise ValueError(
                f"input_ids must have shape (N, {NUM_ATTRIBUTES}) or (1, N, {NUM_ATTRIBUTES}), got {ids.shape}"
            )
        upper = np.array(self.vocab_sizes)
        upper[BAR] = np.iinfo(np.int64).max
        valid = np.all((ids >= NUM_SPECIAL_TOKENS) & (ids < upper), axis=1)
        ids = ids[valid]
        tpq = int(self._miditok.time_division)
        score = Score(tpq)
        if len(ids) == 0:
            score.tempos = [Tempo(0, self._default_tempo)]
            score.time_signatures = [TimeSignature(0, *TIME_SIGNATURE)]
            return score
        bar = ids[:, BAR] - NUM_SPECIAL_TOKENS
        pos = ids[:, 1] - NUM_SPECIAL_TOKENS
        ts_ids = ids[:, 6]
        # Time-signature changes: at the first row whose time signature differs from the previous row's.
        change = np.flatnonzero(np.concatenate([[True], ts_ids[1:] != ts_ids[:-1]]))
        ts_vals = np.array([self._ts_by_id[int(t)] for t in ts_ids[change]], dtype=np.int64)
        tpbeat = np.array([self._ticks_per_beat(int(d), tpq) for d in ts_vals[:, 1]], dtype=np.int64)
        tpbar = tpbeat * ts_vals[:, 0]
        tick_at = np.zeros(len(change), dtype=np.int64)
        bar_at = np.zeros(len(change), dtype=np.int64)
        for c in range(1, len(change)):
            bar_at[c] = bar[change[c]]
            tick_at[c] = tick_at[c - 1] + (bar_at[c] - bar_at[c - 1]) * tpbar[c - 1]
        seg = np.searchsorted(change, np.arange(len(ids)), side="right") - 1
        tick = tick_at[seg] + (bar - bar_at[seg]) * tpbar[seg] + pos * (tpbeat[seg] // self.max_num_pos_per_beat)
        duration = np.zeros(len(ids), dtype=np.int64)
        row_tpb = tpbeat[seg]
        for value in np.unique(row_tpb):
            sel = row_tpb == value
            duration[sel] = self._dec_duration[int(value)][ids[sel, 4]]
        pitch = self._dec_pitch[ids[:, PITCH]]
        velocity = self._dec_velocity[ids[:, 5]]
        program = self._dec_program[ids[:, PROGRAM]]
        keep = (pitch >= 0) & (program >= -1)
        tracks = []
        for prog in np.unique(program[keep]):
            sel = keep & (program == prog)
            notes = Note.from_numpy(
                tick[sel].astype(np.int32),
                duration[sel].astype(np.int32),
                pitch[sel].astype(np.int8),
                velocity[sel].astype(np.int8),
            )
            name = "Drums" if prog == -1 else f"Program {int(prog)}"
            track = Track(name=name, program=0 if prog == -1 else int(prog), is_drum=bool(prog == -1))
            track.notes = notes
            tracks.append(track)
        score.tracks = tracks
        tempo_ids = ids[:, 7]
        tchange = np.flatnonzero(np.concatenate([[True], tempo_ids[1:] != tempo_ids[:-1]]))
        tempo_times = tick[tchange]
        tempo_times[0] = 0
        score.tempos = [
            Tempo(int(t), float(self._dec_tempo[i])) for t, i in zip(tempo_times, tempo_ids[tchange], strict=True)
        ]
        score.time_signatures = [
            TimeSignature(int(t), int(n), int(d)) for t, (n, d) in zip(tick_at, ts_vals, strict=True)
        ]
        return score

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

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``octuple_tokenizer.json`` into ``save_directory`` (created if needed); return the file path.

        Args:
            save_directory: folder to write into.
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / TOKENIZER_FILE_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> OctupleTokenizer:
        """Load a tokenizer written by :meth:`save_pretrained`.

        Args:
            path: the folder holding ``octuple_tokenizer.json``, or the file itself.
            **kwargs: overrides of constructor arguments (``max_seq_len``, ``warn``).
        """
        path = Path(path)
        file = path / TOKENIZER_FILE_NAME if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no {TOKENIZER_FILE_NAME} found")
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err})") from err
        version = data.get("format_version")
        if version is None or int(version) > TOKENIZER_FORMAT_VERSION:
            raise ValueError(
                f"{file}: tokenizer format version {version!r} is not supported (this version reads "
                f"<= {TOKENIZER_FORMAT_VERSION})"
            )
        if "miditok_config" not in data:
            raise ValueError(f"{file}: missing 'miditok_config'")
        config = _config_from_dict(data["miditok_config"])
        init = {"max_seq_len": data.get("max_seq_len", 1024)}
        init.update(kwargs)
        tokenizer = cls(tokenizer_config=config, **init)
        saved_sizes = data.get("vocab_sizes")
        if saved_sizes is not None and list(saved_sizes) != list(tokenizer.vocab_sizes):
            raise ValueError(
                f"{file}: vocabulary sizes {saved_sizes} differ from those rebuilt by this miditok version "
                f"{list(tokenizer.vocab_sizes)}"
            )
        return tokenizer

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(ATTRIBUTE_NAMES, self.vocab_sizes, strict=True))
        return f"{type(self).__name__}(max_seq_len={self.max_seq_len}, vocab_sizes=({sizes}))"
