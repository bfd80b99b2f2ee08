"""Octuple encoding arithmetic as plain functions: MIDI notes <-> rows of eight ids, on miditok's vocabulary.

The numbers behind :mod:`adversarial_midibert.tokenization_octuple`, with no state between calls:
:class:`OctupleTables` (a :class:`miditok.Octuple` as lookup arrays, in ``constants.ATTRIBUTE_NAMES`` order),
:func:`load_score` (symusic, with :class:`MidiReadError` naming the file), :func:`encode_notes` (the vectorised encoder,
exactly miditok's ``Octuple.encode`` ids with bars from the start of the piece), :func:`segment_bounds` and
:func:`decode_rows`.

The default configuration (:func:`default_tokenizer_config`) is miditok's, with programs, tempos, time signatures and
velocities on, and ``max_bar_embedding = 256`` (miditok's default: 60): bars count from the start of each segment, so
this only bounds the bars one segment may span; no note is dropped for its bar.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
    DURATION,
    MIDI_SUFFIXES,
    NUM_ATTRIBUTES,
    NUM_SPECIAL_TOKENS,
    PITCH,
    POSITION,
    PROGRAM,
    TEMPO,
    VELOCITY,
)
from .constants import (
    TIME_SIGNATURE as TIME_SIGNATURE_COLUMN,
)

__all__ = ["DEFAULT_MAX_BAR_EMBEDDING", "SPECIAL_TOKENS", "EncodingReport", "MidiReadError", "OctupleTables",
           "config_from_dict", "decode_rows", "default_tokenizer_config", "encode_notes", "load_score",
           "segment_bounds"]

DEFAULT_MAX_BAR_EMBEDDING = 256
SPECIAL_TOKENS = ["PAD_None", "BOS_None", "EOS_None", "MASK_None"]

# miditok token type of each of our attributes (ATTRIBUTE_NAMES order).
_MIDITOK_TYPES = ("Bar", "Position", "Program", "Pitch", "Duration", "Velocity", "TimeSig", "Tempo")
_NOTE_FIELDS = ("time", "duration", "pitch", "velocity")
_MIDI_SUFFIXES = (*MIDI_SUFFIXES, "")


class MidiReadError(ValueError):
    """A MIDI file is missing, unreadable, empty, truncated or corrupt. The message names the file."""


@dataclass
class EncodingReport:
    """What :func:`encode_notes` did with one piece: its source (the file, or the name of an in-memory score), the
    notes in and out, the notes left out per reason (``dropped``) and the time signature changes outside the
    vocabulary (``ignored_time_signatures``: their notes are encoded under the previous one, miditok's rule)."""

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

    def message(self) -> str | None:
        """One line naming the source and what was left out, or None when nothing was."""
        if not (self.dropped or self.ignored_time_signatures):
            return None
        details = [f"{n} {reason.replace('_', ' ')}" for reason, n in self.dropped.items()]
        if self.ignored_time_signatures:
            details.append(
                f"{self.ignored_time_signatures} time signature change(s) outside the vocabulary ignored "
                "(their notes are encoded under the previous time signature)"
            )
        return f"{self.source}: {self.num_dropped} of {self.num_notes_in} notes left out; " + "; ".join(details)


# ---------------------------------------------------------------------------------------------- configuration
def default_tokenizer_config(max_bar_embedding: int = DEFAULT_MAX_BAR_EMBEDDING, **overrides: Any) -> TokenizerConfig:
    """The miditok configuration used by default; ``overrides`` are any other :class:`miditok.TokenizerConfig`
    arguments."""
    kwargs: dict[str, Any] = {
        "use_programs": True,
        "one_token_stream_for_programs": True,
        "use_tempos": True,
        "use_time_signatures": True,
        "use_velocities": True,
        "special_tokens": list(SPECIAL_TOKENS),
    }
    kwargs.update(overrides)
    # TokenizerConfig stores unknown keyword arguments in ``config.additional_params``.
    additional = dict(kwargs.pop("additional_params", {}) or {})
    additional.setdefault("max_bar_embedding", int(max_bar_embedding))
    return TokenizerConfig(**kwargs, **additional)


def config_from_dict(values: Mapping[str, Any]) -> TokenizerConfig:
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


def check_config(config: TokenizerConfig) -> None:
    """Raise ``ValueError`` unless ``config`` gives the eight Octuple attributes in one stream of tracks."""
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
    if list(config.special_tokens[:NUM_SPECIAL_TOKENS]) != SPECIAL_TOKENS:
        raise ValueError(f"tokenizer_config.special_tokens must start with {SPECIAL_TOKENS}, got "
                         f"{config.special_tokens}")


# ---------------------------------------------------------------------------------------------- small helpers
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


def ticks_per_beat(denominator: int, tpq: int) -> int:
    """miditok's ``compute_ticks_per_beat``: ticks in one beat of a time signature's denominator."""
    return tpq if denominator == 4 else int(tpq * (4 / denominator))


# ---------------------------------------------------------------------------------------------- tables
class OctupleTables:
    """Lookup tables of a :class:`miditok.Octuple` vocabulary (its config passing :func:`check_config`), in our
    attribute order: value -> id for encoding (``pitch_ids``, ``velocity_lut``, ``dur_lut``...), id -> value for
    decoding (``dec_pitch``, ``dec_duration``...)."""

    def __init__(self, miditok_tokenizer: Octuple):
        mt = miditok_tokenizer
        cfg = mt.config
        vocab = mt.vocab  # list of dicts, miditok column order
        self.time_division = int(mt.time_division)
        self.delete_equal_successive_time_sig_changes = bool(cfg.delete_equal_successive_time_sig_changes)
        self.perm = np.array([mt.vocab_types_idx[kind] for kind in _MIDITOK_TYPES])
        self.vocabs = [vocab[i] for i in self.perm]  # our order
        for name, voc in zip(ATTRIBUTE_NAMES, self.vocabs, strict=True):
            for tok_id, tok in enumerate(SPECIAL_TOKENS):
                if voc.get(tok) != tok_id:
                    raise ValueError(f"miditok vocabulary of {name!r}: {tok} is not id {tok_id}")
        self.inv_vocabs = [{v: k for k, v in voc.items()} for voc in self.vocabs]
        self.vocab_sizes: tuple[int, ...] = tuple(len(v) for v in self.vocabs)
        self.max_num_pos_per_beat = int(cfg.max_num_pos_per_beat)
        self.max_bar_embedding = int(cfg.additional_params["max_bar_embedding"])
        if (self.vocabs[BAR].get("Bar_0") != NUM_SPECIAL_TOKENS
                or self.vocabs[POSITION].get("Position_0") != NUM_SPECIAL_TOKENS):
            raise ValueError("miditok vocabulary: Bar_0 / Position_0 are expected right after the special tokens")

        # Pitch: id per MIDI pitch (-1: not representable); drums separately when PitchDrum tokens are used.
        pitch_voc = self.vocabs[PITCH]
        self.pitch_range: tuple[int, int] = (int(cfg.pitch_range[0]), int(cfg.pitch_range[1]))
        self.pitch_ids = np.array([pitch_voc.get(f"Pitch_{p}", -1) for p in range(128)], dtype=np.int64)
        self.use_pitchdrum_tokens = bool(cfg.use_pitchdrum_tokens)
        if self.use_pitchdrum_tokens:
            self.drum_pitch_ids = np.array([pitch_voc.get(f"PitchDrum_{p}", -1) for p in range(128)], dtype=np.int64)
        else:
            self.drum_pitch_ids = self.pitch_ids
        # Program: index program + 1 (drums are -1).
        prog_voc = self.vocabs[PROGRAM]
        self.program_ids = np.array([prog_voc.get(f"Program_{p}", -1) for p in range(-1, 128)], dtype=np.int64)
        self.drum_program_token_id: int | None = prog_voc.get("Program_-1")
        # Velocity.
        self.velocity_values = np.asarray(mt.velocities, dtype=np.int64)
        velocity_ids = np.array([self.vocabs[VELOCITY][f"Velocity_{v}"] for v in self.velocity_values])
        # Duration: per ticks-per-beat value, the bin ticks and their ids.
        dur_voc = self.vocabs[DURATION]
        dur_ticks: dict[int, np.ndarray] = {}
        dur_ids: dict[int, np.ndarray] = {}
        for tpb, ticks in mt._tpb_to_time_array.items():
            dur_ticks[int(tpb)] = np.asarray(ticks, dtype=np.int64)
            dur_ids[int(tpb)] = np.array(
                [dur_voc[f"Duration_{mt._tpb_ticks_to_tokens[tpb][int(t)]}"] for t in ticks], dtype=np.int64
            )
        # Lookup tables (value -> id) for the encoder: velocity 0..127, duration 0..longest bin (longer
        # durations take the last bin), both with miditok's closest-value rule.
        self.velocity_lut = velocity_ids[_closest_index(self.velocity_values, np.arange(128))]
        self.dur_lut = {
            tpb: dur_ids[tpb][_closest_index(ticks, np.arange(int(ticks[-1]) + 1))] for tpb, ticks in dur_ticks.items()
        }
        # Tempo: miditok quantises microseconds per quarter to the closest of its (sorted) mspq table, then
        # writes the tempo token from symusic's qpm of that mspq rounded to 2 decimals.
        tempo_voc = self.vocabs[TEMPO]
        self.tempos_mspq = np.asarray(mt._tempos_mspq, dtype=np.float64)
        mocked = Tempo.from_numpy(np.zeros(len(self.tempos_mspq), np.int32), self.tempos_mspq)
        self.tempo_qpm = np.array([t.tempo for t in mocked])
        self.tempo_ids = np.array([tempo_voc[f"Tempo_{round(float(q), 2)}"] for q in self.tempo_qpm], dtype=np.int64)
        self.default_tempo = float(mt.default_tempo)
        self.default_tempo_id = tempo_voc[f"Tempo_{mt.default_tempo}"]
        # Time signatures.
        ts_voc = self.vocabs[TIME_SIGNATURE_COLUMN]
        self.ts_ids = {tuple(map(int, ts)): ts_voc[f"TimeSig_{ts[0]}/{ts[1]}"] for ts in mt.time_signatures}
        self.ts_by_id = {v: k for k, v in self.ts_ids.items()}

        # Decoding tables (id -> value), -1 for ids that are not notes.
        self.dec_pitch = np.full(self.vocab_sizes[PITCH], -1, dtype=np.int64)
        for tok, i in pitch_voc.items():
            kind, _, value = tok.partition("_")
            if kind in ("Pitch", "PitchDrum"):
                self.dec_pitch[i] = int(value)
        self.dec_program = np.full(self.vocab_sizes[PROGRAM], -2, dtype=np.int64)
        for tok, i in prog_voc.items():
            if tok.startswith("Program_"):
                self.dec_program[i] = int(tok.split("_")[1])
        self.dec_velocity = np.zeros(self.vocab_sizes[VELOCITY], dtype=np.int64)
        self.dec_velocity[velocity_ids] = self.velocity_values
        self.dec_tempo = np.zeros(self.vocab_sizes[TEMPO], dtype=np.float64)
        for tok, i in tempo_voc.items():
            if tok.startswith("Tempo_"):
                self.dec_tempo[i] = float(tok.split("_")[1])
        self.dec_duration: dict[int, np.ndarray] = {}
        for tpb, tok_to_ticks in mt._tpb_tokens_to_ticks.items():
            table = np.zeros(self.vocab_sizes[DURATION], dtype=np.int64)
            for value, ticks in tok_to_ticks.items():
                table[dur_voc[f"Duration_{value}"]] = ticks
            self.dec_duration[int(tpb)] = table


# ---------------------------------------------------------------------------------------------- reading
def load_score(score_or_path: Score | str | os.PathLike, source: str | None = None) -> tuple[Score, str]:
    """Return ``(score, source_name)``: a :class:`symusic.Score` as given (named ``source``, default ``"<Score>"``) or
    read from a MIDI file path. The bytes are read first and parsed from memory, so every failure (missing, a folder,
    no permission, empty, truncated, not MIDI) is a :class:`MidiReadError` whose message starts with the path."""
    if isinstance(score_or_path, Score):
        name = source or "<Score>"
        if "Tick" not in type(score_or_path).__name__:  # ScoreQuarter / ScoreSecond
            return score_or_path.to("tick"), name
        return score_or_path, name
    if not isinstance(score_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a symusic.Score or a MIDI file path, got {type(score_or_path).__name__}")
    path = Path(score_or_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MidiReadError(f"{path}: MIDI file not found") from None
    except IsADirectoryError:
        raise MidiReadError(f"{path}: is a folder, not a MIDI file") from None
    except OSError as err:  # permission denied, I/O error...
        raise MidiReadError(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from err
    if not data:
        raise MidiReadError(f"{path}: empty file, not a MIDI file")
    try:
        score = Score.from_midi(data)
    except Exception as err:  # symusic raises RuntimeError / ValueError / IndexError on corrupt data
        head = data[:4]
        if head != b"MThd" and path.suffix.lower() in _MIDI_SUFFIXES:
            raise MidiReadError(f"{path}: not a MIDI file (starts with {head!r}, expected b'MThd'; {err})") from err
        raise MidiReadError(f"{path}: corrupt or truncated MIDI file ({type(err).__name__}: {err})") from err
    if score.ticks_per_quarter <= 0:
        raise MidiReadError(f"{path}: invalid time division {score.ticks_per_quarter}")
    return score, str(path)


# ---------------------------------------------------------------------------------------------- encoding
def _process_time_signatures(tables: OctupleTables, score: Score) -> tuple[np.ndarray, int, int]:
    """miditok's time-signature preprocessing. Returns ``(ts (K, 3) [time, num, den], new_tpq, ignored)``."""
    soa = score.time_signatures.numpy()
    times, nums, dens = (np.asarray(soa[k], dtype=np.int64) for k in ("time", "numerator", "denominator"))
    supported = np.array([(int(n), int(d)) in tables.ts_ids for n, d in zip(nums, dens, strict=True)], dtype=bool)
    ignored = int((~supported).sum())
    times, nums, dens = times[supported], nums[supported], dens[supported]
    if len(times) == 0 or times[0] != 0:
        times = np.concatenate([[0], times])
        nums = np.concatenate([[TIME_SIGNATURE[0]], nums])
        dens = np.concatenate([[TIME_SIGNATURE[1]], dens])
    new_tpq = int(tables.max_num_pos_per_beat * int(dens.max()) / 4)
    tpq = score.ticks_per_quarter
    if tpq != new_tpq:
        times = (times * (new_tpq / tpq)).astype(np.int32).astype(np.int64)
    # Sequential rules (few time signatures): dedupe, delay to the next bar, keep the last at one tick.
    ts = [[int(t), int(n), int(d)] for t, n, d in zip(times, nums, dens, strict=True)]

    def tpbar(entry: list[int]) -> int:
        return ticks_per_beat(entry[2], new_tpq) * entry[1]

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
    if tables.delete_equal_successive_time_sig_changes and tuple(ts[0][1:]) == TIME_SIGNATURE:
        ts[0][0] = 0
    elif ts[0][0] != 0:
        ts.insert(0, [0, *TIME_SIGNATURE])
    return np.array(ts, dtype=np.int64).reshape(-1, 3), new_tpq, ignored


def _process_tempos(
    tables: OctupleTables, score: Score, new_tpq: int, factors: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """miditok's tempo preprocessing. Returns ``(times, token_ids)`` of the kept tempo changes."""
    soa = score.tempos.numpy()
    if len(soa["time"]) == 0:
        return np.zeros(1, np.int64), np.array([tables.default_tempo_id])
    times = np.asarray(soa["time"], dtype=np.int64)
    if score.ticks_per_quarter != new_tpq:
        times = _resample_ticks(times, new_tpq, score.ticks_per_quarter)
    idx = _closest_index(tables.tempos_mspq, np.asarray(soa["mspq"], dtype=np.float64))
    if factors is not None:
        times = _adjust_times(times, factors)
    # Several changes at one tick: keep the last. Then successive equal tempos: keep the first.
    keep = np.ones(len(times), dtype=bool)
    keep[:-1] = times[1:] != times[:-1]
    times, idx = times[keep], idx[keep]
    keep = np.ones(len(times), dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    times, idx = times[keep], idx[keep]
    ids = tables.tempo_ids[idx]
    if tables.tempo_qpm[idx[0]] == tables.default_tempo:
        times[0] = 0
    elif times[0] != 0:
        times = np.concatenate([[0], times])
        ids = np.concatenate([[tables.default_tempo_id], ids])
    return times, ids


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


def _adjust_times(times: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """miditok's ``_adjust_time_to_tpb``: round onsets to the grid of their time-signature section."""
    section = np.searchsorted(factors[1:, 0], times, side="right")
    start, step = factors[section, 0], factors[section, 1]
    return (np.round((times - start) / step) * step + start).astype(np.int64)


def _notes_by_program(tables: OctupleTables, score: Score, new_tpq: int) -> tuple[list[tuple[np.ndarray, ...]],
                                                                                 dict[str, int], int]:
    """The score's notes grouped by program (drums -1), each group's tracks merged at the position of its first
    track, ticks resampled to ``new_tpq``, notes that cannot be represented left out and counted. Returns per group
    ``(time, duration, pitch id, velocity, source note, program id)`` arrays, the counts left out per reason, and
    the number of notes in the score."""
    tpq = score.ticks_per_quarter
    tracks = score.tracks
    track_programs = [(-1 if t.is_drum else int(t.program)) for t in tracks]
    groups: dict[int, list[int]] = {}
    for ti, prog in enumerate(track_programs):
        groups.setdefault(prog, []).append(ti)
    sizes = np.array([t.note_num() for t in tracks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])

    parts: list[tuple[np.ndarray, ...]] = []
    dropped = {"pitch_out_of_range": 0, "drum_pitch_out_of_range": 0, "program_not_in_vocabulary": 0}
    for group in sorted(groups.values(), key=lambda g: g[0]):
        prog = track_programs[group[0]]
        count = int(sizes[group].sum())
        if count == 0:
            continue
        if tables.program_ids[prog + 1] < 0:
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
        pitch_id = (tables.drum_pitch_ids if is_drum else tables.pitch_ids)[pitch.astype(np.intp) & 127]
        ok = (pitch_id >= 0) & (pitch >= 0)
        if not ok.all():
            reason = "drum_pitch_out_of_range" if is_drum and tables.use_pitchdrum_tokens else "pitch_out_of_range"
            dropped[reason] += int((~ok).sum())
            time, dur, pitch_id, vel, src = time[ok], dur[ok], pitch_id[ok], vel[ok], src[ok]
        parts.append((time, dur, pitch_id, vel, src, np.full(len(time), tables.program_ids[prog + 1])))

    return parts, dropped, int(offsets[-1])


def _fill_timing_columns(ids: np.ndarray, tables: OctupleTables, ts: np.ndarray, new_tpq: int, time: np.ndarray,
                         dur: np.ndarray) -> None:
    """Write the duration, bar, position and time-signature columns of ``ids`` from the notes' onsets and
    durations (ticks at ``new_tpq``), under the time signature in force at each onset."""
    tpb_sections = _sections(ts, lambda d: ticks_per_beat(d, new_tpq))
    # Durations: closest bin for the ticks-per-beat of the onset's time-signature section.
    if len(tpb_sections) == 1:
        lut = tables.dur_lut[int(tpb_sections[0, 1])]
        ids[:, DURATION] = lut[np.clip(dur, 0, len(lut) - 1)]
    else:
        tpb = tpb_sections[np.searchsorted(tpb_sections[1:, 0], time, side="right"), 1]
        for value in np.unique(tpb):
            sel = tpb == value
            lut = tables.dur_lut[int(value)]
            ids[sel, DURATION] = lut[np.clip(dur[sel], 0, len(lut) - 1)]
    # Bar and position from the time signature in force at the onset.
    tpbeat = np.array([ticks_per_beat(int(d), new_tpq) for d in ts[:, 2]], dtype=np.int64)
    tpbar = tpbeat * ts[:, 1]
    tppos = tpbeat // tables.max_num_pos_per_beat
    if len(ts) == 1:
        bar, offset = np.divmod(time, tpbar[0])
        ids[:, BAR] = bar + NUM_SPECIAL_TOKENS
        ids[:, POSITION] = offset // tppos[0] + NUM_SPECIAL_TOKENS
        ids[:, TIME_SIGNATURE_COLUMN] = tables.ts_ids[(int(ts[0, 1]), int(ts[0, 2]))]
    else:
        k = np.searchsorted(ts[:, 0], time, side="right") - 1
        bar_at_ts = np.zeros(len(ts), dtype=np.int64)
        bar_at_ts[1:] = np.cumsum(np.diff(ts[:, 0]) // tpbar[:-1])
        bar_in, offset = np.divmod(time - ts[k, 0], tpbar[k])
        ids[:, BAR] = NUM_SPECIAL_TOKENS + bar_at_ts[k] + bar_in
        ids[:, POSITION] = NUM_SPECIAL_TOKENS + offset // tppos[k]
        ts_ids = np.array([tables.ts_ids[(int(n), int(d))] for _, n, d in ts], dtype=np.int64)
        ids[:, TIME_SIGNATURE_COLUMN] = ts_ids[k]


def encode_notes(tables: OctupleTables, score: Score, source: str = "<Score>") -> tuple[np.ndarray, np.ndarray,
                                                                                        EncodingReport]:
    """Encode a whole piece (a tick-time score): one row of 8 ids per note, absolute bars, no BOS/EOS.

    The ids, their order (time, then track in miditok's merged-track order, then the track's note order) and the
    notes kept are those of miditok's ``Octuple.encode`` with this configuration (and a bar limit high enough), in our
    column order. Bar ids are ``4 + bar index``. Notes that cannot be represented are left out and counted.

    Returns:
        ``(ids (N, 8) int64, source_note (N,) int64, report)``: ``source_note`` is each token's note number in the
        score (tracks in order, notes in order within a track); the report is named ``source``.
    """
    report = EncodingReport(source=source)
    ts, new_tpq, report.ignored_time_signatures = _process_time_signatures(tables, score)

    # Resampling factors (several denominators): onsets are re-quantised per section.
    factors = None
    if len(set(ts[:, 2].tolist())) > 1:
        factors = _sections(ts, lambda d: int(new_tpq // (tables.max_num_pos_per_beat * (d / 4))))

    parts, dropped, report.num_notes_in = _notes_by_program(tables, score, new_tpq)
    report.dropped = {k: v for k, v in dropped.items() if v}
    if not parts:
        report.num_notes_out = 0
        return np.zeros((0, NUM_ATTRIBUTES), dtype=np.int64), np.zeros(0, dtype=np.int64), report
    if len(parts) == 1:
        time, dur, pitch_id, vel, src, prog_id = parts[0]
    else:
        time, dur, pitch_id, vel, src, prog_id = (np.concatenate(c) for c in zip(*parts, strict=True))
    if factors is not None:
        time = _adjust_times(time, factors)
    ids = np.empty((len(time), NUM_ATTRIBUTES), dtype=np.int64)
    ids[:, PITCH] = pitch_id
    ids[:, PROGRAM] = prog_id
    ids[:, VELOCITY] = tables.velocity_lut[vel.astype(np.intp) & 127]
    _fill_timing_columns(ids, tables, ts, new_tpq, time, dur)
    tempo_times, tempo_ids = _process_tempos(tables, score, new_tpq, factors)
    if len(tempo_times) == 1 and tempo_times[0] == 0:
        ids[:, TEMPO] = tempo_ids[0]
    else:
        j = np.searchsorted(tempo_times, time, side="right") - 1
        ids[:, TEMPO] = np.where(j >= 0, tempo_ids[np.maximum(j, 0)], tables.default_tempo_id)
    # Stable sort by onset: ties keep the track order, then the track's note order (miditok's event sort).
    perm = np.argsort(time, kind="stable")
    report.num_notes_out = len(ids)
    return ids[perm], src[perm].astype(np.int64), report


# ---------------------------------------------------------------------------------------------- segmenting
def segment_bounds(bars: np.ndarray, max_notes: int, max_bar_span: int) -> np.ndarray:
    """Where to cut a piece: consecutive ``[start, end)`` note ranges covering every note once, ``(S, 2)`` int64.

    A range holds at most ``max_notes`` notes, and ends before the first note ``max_bar_span`` (the bar vocabulary's
    size) or more bars after its first note; ``bars`` `(N,)` are the notes' non-decreasing bars (or bar ids).
    """
    bounds = []
    start, n = 0, len(bars)
    while start < n:  # one iteration per segment, never per note
        end = min(start + max_notes, n)
        bar_end = int(np.searchsorted(bars, bars[start] + max_bar_span, side="left"))
        end = max(start + 1, min(end, bar_end))
        bounds.append((start, end))
        start = end
    return np.asarray(bounds, dtype=np.int64).reshape(-1, 2)


# ---------------------------------------------------------------------------------------------- decoding
def decode_rows(tables: OctupleTables, ids: np.ndarray) -> Score:
    """Rebuild a :class:`symusic.Score` from ``(N, 8)`` rows with absolute bars (bar id = 4 + bar index).

    Rows with a special id in any attribute are skipped. Onsets follow miditok's Octuple decoding (bar and position on
    the grid of the row's time signature, a change taking effect at the bar of the first note that carries it);
    durations, velocities and tempos are the vocabulary's values; one track per program (-1: drums).
    """
    upper = np.array(tables.vocab_sizes)
    upper[BAR] = np.iinfo(np.int64).max
    ids = ids[np.all((ids >= NUM_SPECIAL_TOKENS) & (ids < upper), axis=1)]
    tpq = tables.time_division
    score = Score(tpq)
    if len(ids) == 0:
        score.tempos = [Tempo(0, tables.default_tempo)]
        score.time_signatures = [TimeSignature(0, *TIME_SIGNATURE)]
        return score
    # Rows in time order (a whole piece decoded from several segments may come in any order).
    ids = ids[np.lexsort((ids[:, POSITION], ids[:, BAR]))]
    bar = ids[:, BAR] - NUM_SPECIAL_TOKENS
    pos = ids[:, POSITION] - NUM_SPECIAL_TOKENS
    ts_col = ids[:, TIME_SIGNATURE_COLUMN]
    # Time-signature changes: at the first row whose time signature differs from the previous row's.
    change = np.flatnonzero(np.concatenate([[True], ts_col[1:] != ts_col[:-1]]))
    ts_vals = np.array([tables.ts_by_id[int(t)] for t in ts_col[change]], dtype=np.int64)
    tpbeat = np.array([ticks_per_beat(int(d), tpq) for d in ts_vals[:, 1]], dtype=np.int64)
    tpbar = tpbeat * ts_vals[:, 0]
    tick_at = np.zeros(len(change), dtype=np.int64)
    bar_at = np.zeros(len(change), dtype=np.int64)
    for c in range(1, len(change)):  # one iteration per time-signature change
        bar_at[c] = bar[change[c]]
        tick_at[c] = tick_at[c - 1] + (bar_at[c] - bar_at[c - 1]) * tpbar[c - 1]
    seg = np.searchsorted(change, np.arange(len(ids)), side="right") - 1
    tick = tick_at[seg] + (bar - bar_at[seg]) * tpbar[seg] + pos * (tpbeat[seg] // tables.max_num_pos_per_beat)
    duration = np.zeros(len(ids), dtype=np.int64)
    row_tpb = tpbeat[seg]
    for value in np.unique(row_tpb):
        sel = row_tpb == value
        duration[sel] = tables.dec_duration[int(value)][ids[sel, DURATION]]
    pitch = tables.dec_pitch[ids[:, PITCH]]
    velocity = tables.dec_velocity[ids[:, VELOCITY]]
    program = tables.dec_program[ids[:, PROGRAM]]
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
    tempo_col = ids[:, TEMPO]
    tchange = np.flatnonzero(np.concatenate([[True], tempo_col[1:] != tempo_col[:-1]]))
    tempo_times = tick[tchange]
    tempo_times[0] = 0
    score.tempos = [
        Tempo(int(t), float(tables.dec_tempo[i])) for t, i in zip(tempo_times, tempo_col[tchange], strict=True)
    ]
    score.time_signatures = [TimeSignature(int(t), int(n), int(d)) for t, (n, d) in zip(tick_at, ts_vals, strict=True)]
    return score
