"""``transformers`` pipelines for MIDI: a class per piece, a class per note, and embeddings.

Importing :mod:`adversarial_midibert` registers the three tasks with ``PIPELINE_REGISTRY``::

    from transformers import pipeline

    pipeline("midi-classification", model="org/adv-midibert-composer")("song.mid")  # {"label", "score", ...}
    out = pipeline("midi-token-classification", model="org/adv-midibert-melody")("song.mid")
    out["labels"][:5]  # one class name per note
    out["midi"].dump_midi("song.melody.mid")  # the notes, one track per predicted class
    out = pipeline("midi-feature-extraction", model="org/adv-midibert-base")("song.mid")
    out["embedding"], out["note_embeddings"]  # (hidden_size,) and (notes, hidden_size)

A piece is encoded and segmented exactly as the training data was (``config.hidden_attributes`` replaced by MASK)
and its segments run ``segment_batch_size`` at a time. Piece classes combine the segments' probabilities
(:func:`~adversarial_midibert.pooling.aggregate_segment_log_probs`); a note the tokenizer cannot represent gets no
class (``"unclassified"``, kept on its own track) and no embedding (a NaN row). Every result names its file and
counts the notes left out (``notes_left_out``); an unreadable file raises
:class:`~adversarial_midibert.octuple_encoding.MidiReadError` (for many files:
:func:`~adversarial_midibert.prediction.predict_files`).

A model folder carries this module and ``pooling.py`` as remote code
(:func:`~adversarial_midibert.hub.remote_code.add_pipeline_code`), so it imports only transformers, torch, numpy,
miditok, symusic and its sibling ``pooling``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .pooling import aggregate_segment_log_probs, mean_note_embedding

__all__ = ["MIDI_CLASSIFICATION", "MIDI_FEATURE_EXTRACTION", "MIDI_TOKEN_CLASSIFICATION", "UNCLASSIFIED",
           "UNCLASSIFIED_NAME", "MidiClassificationPipeline", "MidiFeatureExtractionPipeline",
           "MidiTokenClassificationPipeline", "class_tracks_score", "midi_pipeline", "pipeline_task_of",
           "register_pipelines"]

MIDI_CLASSIFICATION = "midi-classification"
MIDI_TOKEN_CLASSIFICATION = "midi-token-classification"
MIDI_FEATURE_EXTRACTION = "midi-feature-extraction"
UNCLASSIFIED = -1
UNCLASSIFIED_NAME = "unclassified"


class _MidiPipeline(Pipeline):
    """What both tasks share: reading and segmenting a piece, running its segments, naming the classes."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    # what the task cannot do without a tokenized note ("classify"...); None: a piece of no tokenized note is a result
    _refuses_empty_piece_to: str | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None or not hasattr(self.tokenizer, "encode_score"):
            raise ValueError(
                f"{type(self).__name__} needs the Octuple tokenizer of the model (octuple_tokenizer.json in the model "
                f"folder), got {type(self.tokenizer).__name__}"
            )
        self._check_batch_size(self._batch_size)
        config = self.model.config
        id2label = getattr(config, "id2label", None) or {}
        self.label_names = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(config.num_labels)]

    @staticmethod
    def _check_batch_size(batch_size: int | None) -> None:
        if batch_size not in (None, 1):
            raise ValueError(
                f"batch_size={batch_size}: MIDI pipelines take one piece at a time (a piece is already a batch of "
                "segments); use segment_batch_size to choose how many segments run together"
            )

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any):
        """Predict one piece (a MIDI path or a ``symusic.Score``) or a list of them (a list of results)."""
        self._check_batch_size(kwargs.get("batch_size"))
        return super().__call__(inputs, *args, **kwargs)

    def _sanitize_parameters(self, segment_batch_size: int | None = None, source: str | None = None, **kwargs: Any):
        preprocess, forward = {}, {}
        if source is not None:
            preprocess["source"] = source
        if segment_batch_size is not None:
            if int(segment_batch_size) < 1:
                raise ValueError(f"segment_batch_size must be >= 1, got {segment_batch_size}")
            forward["segment_batch_size"] = int(segment_batch_size)
        return preprocess, forward, self._postprocess_parameters(**kwargs)

    def _postprocess_parameters(self, **kwargs: Any) -> dict[str, Any]:
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected argument(s) {sorted(kwargs)}")
        return {}

    def preprocess(self, inputs: Any, source: str | None = None) -> dict[str, Any]:
        tokenizer = self.tokenizer
        score, name = tokenizer.load_score(inputs, source)
        ids, (track_index, note_index) = tokenizer.encode_score(score, return_note_indices=True, source=name)
        report = tokenizer.last_report
        offsets = np.concatenate([[0], np.cumsum([t.note_num() for t in score.tracks])]).astype(np.int64)
        if offsets[-1] == 0:
            raise ValueError(f"{name}: the file holds no notes, nothing to predict")
        num_segments, length = 0, 0
        input_ids = torch.zeros(0, 0, len(tokenizer.attribute_names), dtype=torch.long)
        attention_mask = torch.zeros(0, 0, dtype=torch.long)
        source_note = torch.zeros(0, 0, dtype=torch.long)
        if len(ids):
            segments, aligned = tokenizer.segment(ids, note_aligned_arrays=[offsets[track_index] + note_index],
                                                  fill_value=-1)
            num_segments, length = len(segments), max(len(s) for s in segments)
            input_ids = torch.full((num_segments, length, ids.shape[1]), int(tokenizer.pad_token_id), dtype=torch.long)
            attention_mask = torch.zeros(num_segments, length, dtype=torch.long)
            source_note = torch.full((num_segments, length), -1, dtype=torch.long)
            for s, (segment, (notes,)) in enumerate(zip(segments, aligned)):  # one copy per segment
                input_ids[s, : len(segment)] = torch.from_numpy(segment)
                attention_mask[s, : len(segment)] = 1
                source_note[s, : len(segment)] = torch.from_numpy(notes.astype(np.int64))
        if num_segments == 0 and self._refuses_empty_piece_to:
            raise ValueError(f"{name}: no note could be tokenized ({report.message()}); "
                             f"nothing to {self._refuses_empty_piece_to}")
        return {"input_ids": input_ids, "attention_mask": attention_mask, "source_note": source_note,
                "piece": {"file": name, "score": score, "report": report, "note_offsets": offsets}}

    @staticmethod
    def _chunks(model_inputs: dict[str, Any], segment_batch_size: int):
        """``(rows, width, inputs)`` per ``segment_batch_size`` segments, trimmed of the padding they do not need."""
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        for start in range(0, len(input_ids), segment_batch_size):
            rows = slice(start, start + segment_batch_size)
            width = int(attention_mask[rows].sum(1).max())
            yield rows, width, {"input_ids": input_ids[rows, :width], "attention_mask": attention_mask[rows, :width]}

    def _forward(self, model_inputs: dict[str, Any], segment_batch_size: int = 8) -> dict[str, Any]:
        input_ids = model_inputs["input_ids"]
        chunks = []
        for _, width, inputs in self._chunks(model_inputs, segment_batch_size):
            logits = self.model(**inputs).logits.float()
            if logits.dim() == 3 and width < input_ids.shape[1]:
                logits = torch.nn.functional.pad(logits, (0, 0, 0, input_ids.shape[1] - width))
            chunks.append(logits)
        num_labels = len(self.label_names)
        empty = torch.zeros((0, num_labels) if self._per_segment else (0, input_ids.shape[1], num_labels))
        return {"logits": torch.cat(chunks) if chunks else empty, "source_note": model_inputs["source_note"],
                "piece": model_inputs["piece"]}

    @staticmethod
    def _piece_summary(piece: dict[str, Any], num_segments: int) -> dict[str, Any]:
        report = piece["report"]
        return {"file": piece["file"], "num_segments": num_segments, "num_notes": int(report.num_notes_in),
                "notes_left_out": dict(report.dropped)}


class MidiClassificationPipeline(_MidiPipeline):
    """One class for a whole piece (composer, emotion...), from a fine-tuned ``AdvMidiBertForSequenceClassification``.

    Call it on a MIDI path or a ``symusic.Score`` (or a list of them), with (or give ``pipeline()``) ``top_k`` (how
    many classes ``scores`` lists, most probable first; ``-1`` or None: all), ``segment_batch_size`` (segments per
    forward pass, default 8) and ``source`` (the name reported for an in-memory score).

    Returns a dict: ``file``, ``label`` and ``score`` (the most probable class and its probability), ``scores``
    (``[{"label", "score"}, ...]``, sorted), ``num_segments``, ``num_notes`` (notes in the file),
    ``notes_left_out`` (reason -> count, for notes the tokenizer could not represent) and
    ``segment_probabilities`` (``(num_segments, num_labels)`` numpy array).
    """

    _per_segment = True
    _refuses_empty_piece_to = "classify"

    def _postprocess_parameters(self, top_k: int | None = None, **kwargs: Any) -> dict[str, Any]:
        super()._postprocess_parameters(**kwargs)
        if top_k is None:
            return {}
        top_k = int(top_k)
        if top_k == 0 or top_k < -1:
            raise ValueError(f"top_k must be a positive number of classes, or -1 for all of them; got {top_k}")
        return {"top_k": top_k}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int = -1) -> dict[str, Any]:
        log_probs = torch.log_softmax(model_outputs["logits"], dim=-1)
        num_notes = (model_outputs["source_note"] >= 0).sum(1)
        probabilities = aggregate_segment_log_probs(log_probs, num_notes)
        order = torch.argsort(probabilities, descending=True).tolist()
        if top_k != -1:
            order = order[:top_k]
        best = int(probabilities.argmax())
        return {
            "label": self.label_names[best],
            "score": float(probabilities[best]),
            "scores": [{"label": self.label_names[i], "score": float(probabilities[i])} for i in order],
            **self._piece_summary(model_outputs["piece"], len(log_probs)),
            "segment_probabilities": log_probs.exp().numpy(),
        }


class MidiTokenClassificationPipeline(_MidiPipeline):
    """One class per note (melody extraction, velocity bins...), from ``AdvMidiBertForTokenClassification``.

    Call it on a MIDI path or a ``symusic.Score`` (or a list of them); ``segment_batch_size`` and ``source`` as for
    :class:`MidiClassificationPipeline`. Returns a dict:

    - ``file``, ``num_segments``, ``num_notes``, ``notes_left_out`` (reason -> count);
    - ``labels``: the class name of every note of the file (tracks in order, notes in order within a track),
      ``"unclassified"`` for a note the tokenizer could not represent; ``classes``: the same as ids (``-1``);
      ``probabilities``: ``(num_notes, num_labels)`` (NaN rows for unclassified notes); ``note_track`` and
      ``note_index``: where each note sits in ``score``;
    - ``counts``: class name -> notes; ``label_names``;
    - ``score``: the ``symusic.Score`` as read; ``midi``: the same notes on one track per predicted class
      (:func:`class_tracks_score`).
    """

    _per_segment = False

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        piece = model_outputs["piece"]
        offsets = piece["note_offsets"]
        total, num_labels = int(offsets[-1]), len(self.label_names)
        probabilities = np.full((total, num_labels), np.nan, dtype=np.float32)
        source = model_outputs["source_note"]
        real = source >= 0
        if real.any():
            probabilities[source[real].numpy()] = torch.softmax(model_outputs["logits"][real], dim=-1).numpy()
        classified = ~np.isnan(probabilities).any(axis=1)
        classes = np.where(classified, np.nan_to_num(probabilities).argmax(axis=1), UNCLASSIFIED).astype(np.int64)
        names = np.array([*self.label_names, UNCLASSIFIED_NAME], dtype=object)
        note_track = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        counts = {n: int((classes == i).sum()) for i, n in enumerate(self.label_names)}
        if not classified.all():
            counts[UNCLASSIFIED_NAME] = int((~classified).sum())
        return {
            **self._piece_summary(piece, int(source.shape[0])),
            "labels": names[classes].tolist(),
            "classes": classes,
            "probabilities": probabilities,
            "note_track": note_track,
            "note_index": np.arange(total) - offsets[note_track],
            "counts": counts,
            "label_names": list(self.label_names),
            "score": piece["score"],
            "midi": class_tracks_score(piece["score"], classes, self.label_names),
        }


class MidiFeatureExtractionPipeline(_MidiPipeline):
    """Embeddings of a piece and of its notes: the last hidden layer of the encoder (``AutoModel``).

    Any Adversarial-MidiBERT folder works (a head is not used). Call it as :class:`MidiClassificationPipeline`;
    returns a dict:

    - ``file``, ``num_segments``, ``num_notes``, ``notes_left_out`` (reason -> count);
    - ``embedding``: ``(hidden_size,)`` float32, the mean of the vectors of the piece's tokenized notes, each note
      seen in the context of its own segment (:func:`~adversarial_midibert.pooling.mean_note_embedding`);
    - ``note_embeddings``: ``(num_notes, hidden_size)`` float32, one row per note of the file in the order of
      ``midi-token-classification``; NaN rows for notes the tokenizer could not represent;
    - ``segment_embeddings``: ``(num_segments, hidden_size)``, each segment's mean note vector.
    """

    _per_segment = False
    _refuses_empty_piece_to = "embed"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.label_names = []  # no classes: a head, if the folder has one, is not used

    def _forward(self, model_inputs: dict[str, Any], segment_batch_size: int = 8) -> dict[str, Any]:
        encoder = self.model.base_model  # the bare encoder of any head (PreTrainedModel.base_model)
        vectors, notes, segment_means = [], [], []
        for rows, width, inputs in self._chunks(model_inputs, segment_batch_size):
            hidden = encoder(**inputs).last_hidden_state.float()
            chunk_source = model_inputs["source_note"][rows, :width]
            real = chunk_source >= 0  # notes only: not BOS, EOS or padding
            vectors.append(hidden[real])
            notes.append(chunk_source[real])
            weights = real.to(hidden.dtype)
            segment_means.append((hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1))
        return {"note_vectors": torch.cat(vectors), "note_ids": torch.cat(notes),
                "segment_embeddings": torch.cat(segment_means), "piece": model_inputs["piece"]}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        piece = model_outputs["piece"]
        vectors = model_outputs["note_vectors"]
        note_embeddings = np.full((int(piece["note_offsets"][-1]), vectors.shape[1]), np.nan, dtype=np.float32)
        note_embeddings[model_outputs["note_ids"].numpy()] = vectors.numpy()
        segments = model_outputs["segment_embeddings"]
        return {
            **self._piece_summary(piece, int(segments.shape[0])),
            "embedding": mean_note_embedding(vectors).numpy(),
            "note_embeddings": note_embeddings,
            "segment_embeddings": segments.numpy(),
        }


def class_tracks_score(score, classes: np.ndarray, label_names: list[str]):
    """A ``symusic.Score`` with the notes of ``score`` on one track per class (e.g. melody, bridge, accompaniment).

    Notes keep their time, duration, pitch and velocity; drum notes go to ``"<class> (drums)"`` drum tracks and
    class ``-1`` to ``"unclassified"``, so the result holds exactly the notes of ``score``; tempos and signatures
    are copied. Every class gets a pitched track, empty when no note was given it.

    Args:
        score: a tick-time ``symusic.Score``.
        classes: ``(N,)`` class id per note of ``score`` (tracks in order, notes in order), ``-1`` for none.
        label_names: the class names, by id.
    """
    import symusic

    parts = [track.notes.numpy() for track in score.tracks]
    fields = ("time", "duration", "pitch", "velocity")
    notes = {k: np.concatenate([np.asarray(p[k], dtype=np.int64) for p in parts]) if parts else np.zeros(0, np.int64)
             for k in fields}
    is_drum = np.repeat(np.array([t.is_drum for t in score.tracks], dtype=bool), [len(p["time"]) for p in parts])
    classes = np.asarray(classes, dtype=np.int64)
    if classes.shape != notes["time"].shape:
        raise ValueError(f"{len(classes)} classes for a score of {len(notes['time'])} notes")
    out = symusic.Score(score.ticks_per_quarter)
    out.tempos = score.tempos.copy()
    out.time_signatures = score.time_signatures.copy()
    out.key_signatures = score.key_signatures.copy()
    for class_id, name in [*enumerate(label_names), (UNCLASSIFIED, UNCLASSIFIED_NAME)]:
        for drum in (False, True):
            chosen = (classes == class_id) & (is_drum == drum)
            if not chosen.any() and (drum or class_id == UNCLASSIFIED):
                continue
            track = symusic.Track(name=f"{name} (drums)" if drum else str(name), program=0, is_drum=drum, ttype="tick")
            if chosen.any():
                order = np.lexsort((notes["pitch"][chosen], notes["time"][chosen]))
                track.notes = symusic.Note.from_numpy(
                    *(notes[k][chosen][order].astype(np.int32) for k in ("time", "duration", "pitch")),
                    notes["velocity"][chosen][order].astype(np.int8),
                    "tick",
                )
            out.tracks.append(track)
    return out


# task -> (pipeline class, Auto class of its model); the Auto class is named by a string in config.json.
PIPELINES = {
    MIDI_CLASSIFICATION: (MidiClassificationPipeline, AutoModelForSequenceClassification),
    MIDI_TOKEN_CLASSIFICATION: (MidiTokenClassificationPipeline, AutoModelForTokenClassification),
    MIDI_FEATURE_EXTRACTION: (MidiFeatureExtractionPipeline, AutoModel),
}


def register_pipelines() -> None:
    """Register ``midi-classification``, ``midi-token-classification`` and ``midi-feature-extraction`` with
    transformers' ``PIPELINE_REGISTRY`` (importing :mod:`adversarial_midibert` does it)."""
    for task, (pipeline_class, model_class) in PIPELINES.items():
        if PIPELINE_REGISTRY.supported_tasks.get(task, {}).get("impl") is not pipeline_class:
            PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=model_class,
                                                type="multimodal")


def pipeline_task_of(architecture: str) -> str:
    """The pipeline task a model class serves: a sequence head classifies pieces, a token head notes, and a bare or
    masked-LM model gives embeddings."""
    if architecture.endswith("ForSequenceClassification"):
        return MIDI_CLASSIFICATION
    if architecture.endswith("ForTokenClassification"):
        return MIDI_TOKEN_CLASSIFICATION
    return MIDI_FEATURE_EXTRACTION


def midi_pipeline(task: str, model: Any, **kwargs: Any) -> Pipeline:
    """``transformers.pipeline(task, model=model, **kwargs)`` with this package's pipeline class for ``task``, passed
    as ``pipeline_class=`` so that no folder code runs for it, whatever the folder's ``custom_pipelines`` names."""
    from transformers import pipeline

    if task not in PIPELINES:
        raise ValueError(f"unknown MIDI pipeline task {task!r}; expected one of {sorted(PIPELINES)}")
    return pipeline(task, model=model, pipeline_class=PIPELINES[task][0], **kwargs)
