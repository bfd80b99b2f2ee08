"""Predict with a fine-tuned model: one label per piece (composer, emotion) or one class per note (melody).

:class:`AdvMidiBertPredictor` loads a fine-tuned model folder (``config.json``, weights, tokenizer file) and runs
it on MIDI files, cutting long pieces into segments exactly as the training data was cut.

Sequence tasks: aggregation over segments. A long piece gives several segments, each with class
probabilities ``p_s``. The piece's probabilities are the note-weighted geometric mean of the segments'::

    log p(piece) = sum_s n_s * log p_s / sum_s n_s, then renormalised (softmax)

where ``n_s`` is the number of notes of segment ``s``. A segment is one piece of evidence per note it holds,
so a short trailing segment counts little; a geometric (log) mean lets one confident segment move the result
more than an arithmetic mean of probabilities would.

Token tasks: every note of the input gets a class. Notes that the tokenizer could not represent (reported in
``OctupleTokenizer.last_report``) get no prediction: they are counted, reported, and written to an extra
``unclassified`` track, so that the MIDI written by :func:`write_class_tracks_midi` holds exactly as many notes
as the input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .constants import MASK_ID
from .evaluation import aggregate_segment_log_probs

logger = logging.getLogger(__name__)

UNCLASSIFIED = -1
UNCLASSIFIED_NAME = "unclassified"

# Colours of the piano roll (melody, bridge, accompaniment first), then matplotlib's cycle.
_CLASS_COLOURS = ["tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]


@dataclass
class SequencePrediction:
    """The prediction for one piece (sequence task).

    Attributes:
        file: the input file.
        label: the predicted class name.
        label_id: its id.
        probabilities: class name -> probability (sums to 1).
        num_segments: how many segments the piece was cut into.
        num_notes: notes seen by the model.
        segment_probabilities: ``(num_segments, num_labels)`` per-segment probabilities.
    """

    file: str
    label: str
    label_id: int
    probabilities: dict[str, float]
    num_segments: int
    num_notes: int
    segment_probabilities: np.ndarray = field(repr=False)


@dataclass
class TokenPrediction:
    """The per-note prediction for one piece (token task).

    Attributes:
        file: the input file.
        score: the ``symusic.Score`` that was read (tick time).
        note_track: ``(N,)`` track index of every note of ``score`` (tracks in order, notes in order).
        note_index: ``(N,)`` index of the note within its track.
        classes: ``(N,)`` predicted class id per note, ``-1`` for notes the tokenizer could not represent.
        probabilities: ``(N, C)`` class probabilities per note (NaN rows for unclassified notes).
        label_names: the class names (``config.id2label``).
        counts: class name -> number of notes (``"unclassified"`` included when non-zero).
    """

    file: str
    score: Any = field(repr=False)
    note_track: np.ndarray = field(repr=False)
    note_index: np.ndarray = field(repr=False)
    classes: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)
    label_names: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def num_unclassified(self) -> int:
        return int((self.classes == UNCLASSIFIED).sum())


def _hidden_attribute_indices(config) -> list[int]:
    names = list(getattr(config, "hidden_attributes", None) or [])
    attribute_names = list(getattr(config, "attribute_names", []))
    indices = []
    for name in names:
        if isinstance(name, int):
            indices.append(name)
        elif name in attribute_names:
            indices.append(attribute_names.index(name))
        else:
            raise ValueError(f"config.hidden_attributes names {name!r}, not one of {attribute_names}")
    return indices


class AdvMidiBertPredictor:
    """Run a fine-tuned Adversarial-MidiBERT on MIDI files.

    Args:
        model: an ``AdvMidiBertForSequenceClassification`` or ``AdvMidiBertForTokenClassification``.
        tokenizer: the ``OctupleTokenizer`` the model was fine-tuned with.
        device: where to run the model (default: CUDA when available, else CPU).
        batch_size: segments per forward pass.

    Use :meth:`from_pretrained` to load both from a fine-tuned folder. Attributes listed in
    ``config.hidden_attributes`` (e.g. velocity for velocity prediction) are replaced by MASK in the input, as in
    fine-tuning.
    """

    def __init__(self, model, tokenizer, device: str | torch.device | None = None, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.config = model.config
        self.is_token_task = type(model).__name__.endswith("TokenClassification")
        id2label = getattr(self.config, "id2label", None) or {}
        self.label_names = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(self.config.num_labels)]
        self.hidden_attributes = _hidden_attribute_indices(self.config)
        self.mask_token_id = int(getattr(tokenizer, "mask_token_id", MASK_ID))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device | None = None, batch_size: int = 8):
        """Load the model (class chosen from ``config.architectures``) and the tokenizer from a folder.

        Args:
            model_dir: a folder written by ``examples/finetune.py`` (``config.json``, weights,
                ``octuple_tokenizer.json``).
            device: see the class docstring.
            batch_size: see the class docstring.
        """
        from .configuration_adv_midibert import AdvMidiBertConfig
        from .modeling_adv_midibert import AdvMidiBertForSequenceClassification, AdvMidiBertForTokenClassification
        from .tokenization_octuple import OctupleTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a model folder: config.json is missing")
        config = AdvMidiBertConfig.from_pretrained(model_dir)
        architectures = list(getattr(config, "architectures", None) or [])
        if any(a.endswith("TokenClassification") for a in architectures):
            model_class = AdvMidiBertForTokenClassification
        elif any(a.endswith("SequenceClassification") for a in architectures):
            model_class = AdvMidiBertForSequenceClassification
        else:
            raise ValueError(
                f"{model_dir}/config.json: architectures {architectures} is not a fine-tuned classifier "
                "(expected AdvMidiBertForSequenceClassification or AdvMidiBertForTokenClassification)"
            )
        model = model_class.from_pretrained(model_dir)
        tokenizer = OctupleTokenizer.from_pretrained(model_dir)
        return cls(model, tokenizer, device=device, batch_size=batch_size)

    # ------------------------------------------------------------------ encoding
    def _segments(self, score) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
        """Encode a score and cut it: segments (with BOS/EOS) and, per segment row, the source note (or -1)."""
        ids, (track_index, note_index) = self.tokenizer.encode_score(score, return_note_indices=True)
        ids = np.asarray(ids, dtype=np.int64)
        track_index = np.asarray(track_index, dtype=np.int64)
        note_index = np.asarray(note_index, dtype=np.int64)
        # Global note number: tracks in order, notes in order within a track.
        offsets = np.concatenate([[0], np.cumsum([len(t.notes) for t in score.tracks])]).astype(np.int64)
        global_index = offsets[track_index] + note_index if len(ids) else np.zeros(0, dtype=np.int64)
        if len(ids) == 0:
            return [], [], offsets, global_index
        segments, aligned = self.tokenizer.segment(ids, note_aligned_arrays=[global_index])
        rows = []
        for segment, (source,) in zip(segments, aligned):
            source = np.asarray(source, dtype=np.int64)
            if len(source) != len(segment):  # note-aligned arrays without the BOS/EOS rows
                source = np.concatenate([[-1], source, [-1]])
            rows.append(source)
        return [np.asarray(s, dtype=np.int64) for s in segments], rows, offsets, global_index

    def _run(self, segments: list[np.ndarray]) -> list[torch.Tensor]:
        """Logits of every segment (a list of ``(C,)`` or ``(L_s, C)`` float tensors on the CPU)."""
        out = []
        for start in range(0, len(segments), self.batch_size):
            chunk = segments[start : start + self.batch_size]
            length = max(len(s) for s in chunk)
            input_ids = torch.full((len(chunk), length, 8), int(getattr(self.tokenizer, "pad_token_id", 0)))
            attention_mask = torch.zeros(len(chunk), length, dtype=torch.long)
            for i, segment in enumerate(chunk):
                input_ids[i, : len(segment)] = torch.from_numpy(segment)
                attention_mask[i, : len(segment)] = 1
            if self.hidden_attributes:
                real = attention_mask.bool()
                for attribute in self.hidden_attributes:
                    input_ids[..., attribute] = torch.where(
                        real, torch.full_like(input_ids[..., attribute], self.mask_token_id), input_ids[..., attribute]
                    )
            with torch.no_grad():
                logits = self.model(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
                ).logits.float().cpu()
            for i, segment in enumerate(chunk):
                out.append(logits[i] if not self.is_token_task else logits[i, : len(segment)])
        return out

    def _load(self, path_or_score):
        """``(name, score)``; a missing or corrupt file raises ``MidiReadError`` (a ValueError) naming it."""
        score, name = self.tokenizer.load_score(path_or_score)
        return name, score

    # ------------------------------------------------------------------ predictions
    def predict_sequence(self, path_or_score) -> SequencePrediction:
        """Predict the class of one piece (composer, emotion...).

        Args:
            path_or_score: a MIDI file path or a ``symusic.Score``.
        """
        if self.is_token_task:
            raise ValueError("this model is a token classifier: use predict_tokens")
        name, score = self._load(path_or_score)
        segments, sources, _, _ = self._segments(score)
        if not segments:
            raise ValueError(f"{name}: no note could be tokenized, nothing to predict")
        logits = torch.stack(self._run(segments))
        log_probs = torch.log_softmax(logits, dim=-1)
        num_notes = torch.tensor([int((s >= 0).sum()) for s in sources])
        probs = aggregate_segment_log_probs(log_probs, num_notes)
        label_id = int(probs.argmax())
        return SequencePrediction(
            file=name,
            label=self.label_names[label_id],
            label_id=label_id,
            probabilities={n: float(p) for n, p in zip(self.label_names, probs.tolist())},
            num_segments=len(segments),
            num_notes=int(num_notes.sum()),
            segment_probabilities=log_probs.exp().numpy(),
        )

    def predict_tokens(self, path_or_score) -> TokenPrediction:
        """Predict a class for every note of one piece (melody extraction, velocity bins...).

        Args:
            path_or_score: a MIDI file path or a ``symusic.Score``.
        """
        if not self.is_token_task:
            raise ValueError("this model is a sequence classifier: use predict_sequence")
        name, score = self._load(path_or_score)
        segments, sources, offsets, _ = self._segments(score)
        total = int(offsets[-1])
        num_labels = len(self.label_names)
        probabilities = np.full((total, num_labels), np.nan, dtype=np.float32)
        if segments:
            for logits, source in zip(self._run(segments), sources):
                real = source >= 0
                probabilities[source[real]] = torch.softmax(logits[torch.from_numpy(real)], dim=-1).numpy()
        classified = ~np.isnan(probabilities).any(axis=1)
        classes = np.where(classified, np.nan_to_num(probabilities).argmax(axis=1), UNCLASSIFIED).astype(np.int64)
        note_track = np.repeat(np.arange(len(score.tracks)), np.diff(offsets))
        note_index = np.arange(total) - offsets[note_track] if total else np.zeros(0, dtype=np.int64)
        counts = {n: int((classes == i).sum()) for i, n in enumerate(self.label_names)}
        unclassified = int((~classified).sum())
        if unclassified:
            counts[UNCLASSIFIED_NAME] = unclassified
            logger.warning("%s: %d of %d notes could not be tokenized and have no prediction", name, unclassified, total)
        return TokenPrediction(
            file=name,
            score=score,
            note_track=note_track,
            note_index=note_index.astype(np.int64),
            classes=classes,
            probabilities=probabilities,
            label_names=list(self.label_names),
            counts=counts,
        )

    def predict(self, path_or_score) -> SequencePrediction | TokenPrediction:
        """:meth:`predict_sequence` or :meth:`predict_tokens`, whichever fits the model."""
        return self.predict_tokens(path_or_score) if self.is_token_task else self.predict_sequence(path_or_score)


# ---------------------------------------------------------------------- writers
def _note_table(score) -> dict[str, np.ndarray]:
    """All notes of a score as arrays (tracks in order, notes in order), tick time."""
    parts = [track.notes.numpy() for track in score.tracks]
    keys = ("time", "duration", "pitch", "velocity")
    if not parts:
        return {k: np.zeros(0, dtype=np.int64) for k in keys}
    return {k: np.concatenate([np.asarray(p[k], dtype=np.int64) for p in parts]) for k in keys}


def write_class_tracks_midi(prediction: TokenPrediction, path: str | Path) -> Path:
    """Write a MIDI with one track per predicted class (e.g. melody, bridge, accompaniment).

    Notes keep their time, duration, pitch and velocity; drum notes stay on drum tracks. Notes without a
    prediction go to an ``unclassified`` track, so the file holds exactly as many notes as the input.

    Args:
        prediction: the result of :meth:`AdvMidiBertPredictor.predict_tokens`.
        path: the MIDI file to write (parent folders are created).

    Returns:
        The path written.
    """
    import symusic

    source = prediction.score
    notes = _note_table(source)
    is_drum = np.repeat(
        np.array([t.is_drum for t in source.tracks], dtype=bool), [len(t.notes) for t in source.tracks]
    ) if source.tracks else np.zeros(0, dtype=bool)
    out = symusic.Score(source.ticks_per_quarter)
    out.tempos = source.tempos.copy()
    out.time_signatures = source.time_signatures.copy()
    out.key_signatures = source.key_signatures.copy()
    names = list(prediction.label_names) + [UNCLASSIFIED_NAME]
    class_ids = list(range(len(prediction.label_names))) + [UNCLASSIFIED]
    for name, class_id in zip(names, class_ids):
        for drum in (False, True):
            chosen = (prediction.classes == class_id) & (is_drum == drum)
            if not chosen.any() and (drum or class_id == UNCLASSIFIED):
                continue  # always write one (possibly empty) pitched track per class
            track = symusic.Track(name=name if not drum else f"{name} (drums)", program=0, is_drum=drum, ttype="tick")
            if chosen.any():
                order = np.lexsort((notes["pitch"][chosen], notes["time"][chosen]))
                track.notes = symusic.Note.from_numpy(
                    *(notes[k][chosen][order].astype(np.int32) for k in ("time", "duration", "pitch")),
                    notes["velocity"][chosen][order].astype(np.int8),
                    "tick",
                )
            out.tracks.append(track)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.dump_midi(str(path))
    return path


def plot_piano_roll(prediction: TokenPrediction, path: str | Path, title: str | None = None) -> Path:
    """Write a piano-roll PNG: one bar per note (x: beats, y: pitch), coloured by predicted class.

    Args:
        prediction: the result of :meth:`AdvMidiBertPredictor.predict_tokens`.
        path: the PNG file to write (parent folders are created).
        title: figure title (default: the file name).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes = _note_table(prediction.score)
    tpq = max(int(prediction.score.ticks_per_quarter), 1)
    start, width = notes["time"] / tpq, np.maximum(notes["duration"], 1) / tpq
    span = float((start + width).max()) if len(start) else 1.0
    fig, ax = plt.subplots(figsize=(min(max(8.0, span / 8), 40.0), 5))
    names = list(prediction.label_names) + [UNCLASSIFIED_NAME]
    class_ids = list(range(len(prediction.label_names))) + [UNCLASSIFIED]
    for k, (name, class_id) in enumerate(zip(names, class_ids)):
        chosen = prediction.classes == class_id
        if not chosen.any():
            continue
        colour = "lightgrey" if class_id == UNCLASSIFIED else _CLASS_COLOURS[k % len(_CLASS_COLOURS)]
        ax.barh(notes["pitch"][chosen], width[chosen], left=start[chosen], height=0.8, color=colour,
                label=f"{name} ({int(chosen.sum())})", linewidth=0)
    ax.set_xlabel("time (beats)")
    ax.set_ylabel("MIDI pitch")
    ax.set_xlim(0, span)
    ax.set_title(title if title is not None else Path(prediction.file).name)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
