"""Octuple segments with ground truth for the masker gate: notes that context determines, and planted notes it cannot.

The adversarial method claims that its masker learns which notes cannot be recovered from their context. To check
that claim against an answer known in advance, this module builds segments in which

- most notes are *determined*: a motif of a few notes repeats in every bar with its bar's chord root, each motif
  note is doubled an octave below, velocity, tempo, program and metre are constant in the segment; a masked
  determined note can be read off its doubling or off the same slot in the other bars;
- a planted share of notes are *context-free*: each takes its placement (bar, position and the segment-level
  attributes) from a random note of its own segment, and its pitch, duration and velocity from a random note of
  *another* segment, so these three follow the corpus's own marginal distribution (rarity cannot give them away)
  and are independent of everything else in the segment.

:func:`plant_notes` does the planting, so the same procedure applies to real music (:func:`planted_real_segments`):
there the unplanted notes are not all determined, but the planted ones are known to be context-free.

Every segment comes with a ``planted`` flag per row (``False`` at BOS, EOS and padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adversarial_midibert.constants import (
    BAR,
    BOS_ID,
    DURATION,
    EOS_ID,
    NUM_ATTRIBUTES,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    PITCH,
    POSITION,
    PROGRAM,
    TEMPO,
    TIME_SIGNATURE,
    VELOCITY,
)
from adversarial_midibert.tokenization_octuple import OctupleTokenizer

__all__ = [
    "PlantedSegments",
    "CONTEXT_FREE_ATTRIBUTES",
    "determined_segments",
    "plant_notes",
    "synthetic_corpus",
    "planted_real_segments",
]

# What a planted note takes from another segment; the rest of its row comes from a note of its own segment.
CONTEXT_FREE_ATTRIBUTES = (PITCH, DURATION, VELOCITY)
MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
CHORD_ROOTS = np.array([0, 5, 7, 9])  # I, IV, V, vi: each segment alternates two of them bar by bar
MOTIF_DURATIONS = ("Duration_0.2.8", "Duration_0.4.8", "Duration_1.0.8", "Duration_2.0.8")
POSITIONS_PER_BAR = 32  # 4/4 at the tokenizer's 8 positions per beat


@dataclass
class PlantedSegments:
    """Padded segments and their ground truth.

    Attributes:
        input_ids (`np.ndarray` of shape `(S, L, 8)`, int64): ``[BOS] + notes + [EOS]`` then padding.
        attention_mask (`np.ndarray` of shape `(S, L)`, int64).
        planted (`np.ndarray` of shape `(S, L)`, bool): the planted (context-free) notes.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    planted: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def planted_share(self) -> float:
        """Planted notes over real notes."""
        notes = self.attention_mask.sum() - 2 * len(self)
        return float(self.planted.sum() / max(notes, 1))

    def subset(self, index) -> PlantedSegments:
        return PlantedSegments(self.input_ids[index], self.attention_mask[index], self.planted[index])


def determined_segments(
    tokenizer: OctupleTokenizer, num_segments: int, rng: np.random.Generator, num_bars: int = 8, motif_notes: int = 4
) -> list[np.ndarray]:
    """Note rows `(N, 8)` of segments in which every note follows from its context (no BOS/EOS).

    Per segment: a key, a motif of ``motif_notes`` (distinct eighth-note positions, a duration and a scale degree
    each), two chord roots alternating bar by bar, one velocity, one tempo; every bar plays the motif on its root
    and each motif note doubled an octave below (velocity two steps softer). Rows are in Octuple order (bar,
    position, then pitch).
    """
    lowest_pitch_id = tokenizer.pitch_token_id(tokenizer.pitch_range[0])
    duration_ids = np.array([tokenizer.token_to_id("duration", name) for name in MOTIF_DURATIONS])
    velocity_count = len(tokenizer.velocity_values)
    tempo_count = tokenizer.vocab_sizes[TEMPO] - NUM_SPECIAL_TOKENS
    program = tokenizer.token_to_id("program", "Program_0")
    metre = tokenizer.token_to_id("time_signature", "TimeSig_4/4")
    segments = []
    for _ in range(num_segments):
        key = 55 + int(rng.integers(12))  # tonic from G3 to F#4
        positions = np.sort(rng.choice(POSITIONS_PER_BAR // 4, motif_notes, replace=False)) * 4
        durations = rng.choice(duration_ids, motif_notes)
        degrees = rng.choice(MAJOR_SCALE, motif_notes)
        roots = rng.choice(CHORD_ROOTS, 2, replace=False)
        velocity = NUM_SPECIAL_TOKENS + 2 + int(rng.integers(velocity_count - 2))
        tempo = NUM_SPECIAL_TOKENS + int(rng.integers(tempo_count))
        bars = np.repeat(np.arange(num_bars), 2 * motif_notes)
        slot = np.tile(np.repeat(np.arange(motif_notes), 2), num_bars)
        doubled = np.tile([1, 0], num_bars * motif_notes).astype(bool)  # the lower note first: Octuple's pitch order
        pitch = key + roots[bars % 2] + degrees[slot] - 12 * doubled
        rows = np.empty((len(bars), NUM_ATTRIBUTES), dtype=np.int64)
        rows[:, BAR] = NUM_SPECIAL_TOKENS + bars
        rows[:, POSITION] = NUM_SPECIAL_TOKENS + positions[slot]
        rows[:, PROGRAM] = program
        rows[:, PITCH] = lowest_pitch_id + pitch - tokenizer.pitch_range[0]  # pitch ids are contiguous
        rows[:, DURATION] = durations[slot]
        rows[:, VELOCITY] = velocity - 2 * doubled
        rows[:, TIME_SIGNATURE] = metre
        rows[:, TEMPO] = tempo
        segments.append(rows)
    return segments


def plant_notes(
    segments: list[np.ndarray], share: float, rng: np.random.Generator, max_notes: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Add context-free notes to every segment, a ``share`` of its notes afterwards.

    A planted note copies its row from a random note of its own segment (the *host*: bar, position, program, metre,
    tempo), then takes :data:`CONTEXT_FREE_ATTRIBUTES` from a random note of a random other segment (the *donor*).
    It is inserted at a random rank among the notes of its onset, so its place in the row order tells nothing
    either.

    Args:
        segments: note rows `(N_s, 8)` per segment (no BOS/EOS), at least two segments.
        share (`float`): planted notes over all notes of a segment after planting, in ``[0, 0.5]``.
        rng (`np.random.Generator`): all the randomness.
        max_notes (`int`, *optional*): cap on a segment's notes after planting (fewer planted notes then).

    Returns:
        Per segment, its rows `(N_s + P_s, 8)` and a bool array `(N_s + P_s,)` marking the planted ones.
    """
    if not 0 <= share <= 0.5:
        raise ValueError(f"share must be in [0, 0.5], got {share}")
    if len(segments) < 2:
        raise ValueError("planting needs at least two segments (donors come from other segments)")
    sizes = np.array([len(rows) for rows in segments])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    pool = np.concatenate(segments)
    planted_segments = []
    for s, rows in enumerate(segments):
        count = int(round(share / (1 - share) * len(rows)))
        if max_notes is not None:
            count = max(0, min(count, max_notes - len(rows)))
        hosts = rng.integers(len(rows), size=count)
        donor_segments = (s + 1 + rng.integers(len(segments) - 1, size=count)) % len(segments)
        donors = offsets[donor_segments] + (rng.random(count) * sizes[donor_segments]).astype(np.int64)
        new = rows[hosts].copy()
        new[:, CONTEXT_FREE_ATTRIBUTES] = pool[donors][:, CONTEXT_FREE_ATTRIBUTES]
        # Sort keys: a note keeps its index; a planted note gets a random key inside its host's onset group.
        onset = rows[:, BAR] * (1 << 20) + rows[:, POSITION]
        if np.any(np.diff(onset) < 0):
            raise ValueError(f"segment {s}: rows are not in onset order (bar, then position)")
        first = np.searchsorted(onset, onset[hosts], side="left")
        last = np.searchsorted(onset, onset[hosts], side="right")
        keys = np.concatenate([np.arange(len(rows), dtype=np.float64),
                               first - 0.5 + rng.random(count) * (last - first)])
        order = np.argsort(keys, kind="stable")
        planted = np.concatenate([np.zeros(len(rows), bool), np.ones(count, bool)])
        planted_segments.append((np.concatenate([rows, new])[order], planted[order]))
    return planted_segments


def _pad(planted_segments: list[tuple[np.ndarray, np.ndarray]]) -> PlantedSegments:
    length = max(len(rows) for rows, _ in planted_segments) + 2
    count = len(planted_segments)
    ids = np.full((count, length, NUM_ATTRIBUTES), PAD_ID, dtype=np.int64)
    mask = np.zeros((count, length), dtype=np.int64)
    planted = np.zeros((count, length), dtype=bool)
    for s, (rows, flags) in enumerate(planted_segments):
        n = len(rows)
        ids[s, 0], ids[s, n + 1] = BOS_ID, EOS_ID
        ids[s, 1 : n + 1] = rows
        mask[s, : n + 2] = 1
        planted[s, 1 : n + 1] = flags
    return PlantedSegments(ids, mask, planted)


def synthetic_corpus(
    tokenizer: OctupleTokenizer, num_segments: int, planted_share: float = 0.15, seed: int = 0, num_bars: int = 8,
    motif_notes: int = 4,
) -> PlantedSegments:
    """:func:`determined_segments` with :func:`plant_notes`, padded: the gate's corpus.

    Args:
        tokenizer (`OctupleTokenizer`): the vocabulary the ids come from.
        num_segments (`int`): segments to make.
        planted_share (`float`): share of each segment's notes that are planted (0.1 to 0.2 in the gate).
        seed (`int`): the corpus's seed (the same seed gives the same corpus).
        num_bars (`int`), motif_notes (`int`): a segment has ``2 * motif_notes`` determined notes per bar.
    """
    rng = np.random.default_rng(seed)
    segments = determined_segments(tokenizer, num_segments, rng, num_bars=num_bars, motif_notes=motif_notes)
    return _pad(plant_notes(segments, planted_share, rng))


def planted_real_segments(
    input_ids: list[np.ndarray], planted_share: float = 0.15, seed: int = 0, max_notes: int | None = None
) -> PlantedSegments:
    """Plant context-free notes into real segments.

    Args:
        input_ids: one `(L_s, 8)` id array per segment, in onset order; BOS, EOS and padding rows are left out.
        planted_share (`float`): see :func:`plant_notes`.
        seed (`int`): the planting's seed.
        max_notes (`int`, *optional*): cap on notes per segment after planting (the model's positions minus 2).
    """
    rows = []
    for ids in input_ids:
        ids = np.asarray(ids, dtype=np.int64)
        real = (ids[:, BAR] != PAD_ID) & (ids[:, BAR] != BOS_ID) & (ids[:, BAR] != EOS_ID)
        rows.append(ids[real])
    return _pad(plant_notes(rows, planted_share, np.random.default_rng(seed), max_notes=max_notes))
