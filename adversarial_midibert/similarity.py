"""MIDI similarity search: embed a folder of pieces into a ``datasets`` folder, then find a query's nearest pieces.

What ``adv-midibert embed`` and ``adv-midibert search`` run::

    adv-midibert embed  FOLDER --model MODEL --output_dir DS     # one row per piece: file, embedding
    adv-midibert search QUERY.mid --index DS --top_k 10          # the 10 nearest pieces, by cosine similarity

- :func:`embed_files` runs the ``midi-feature-extraction`` pipeline over every file with
  :func:`~adversarial_midibert.prediction.predict_files` (progress bar; a file that fails is skipped and listed with
  its reason, never dropped silently) and writes a ``datasets`` folder (``save_to_disk``, written aside and swapped
  in) with the columns ``file``, ``embedding``, ``num_notes``, ``num_segments``, and ``embedding_info.json`` beside
  the data (the model, the pooling, the counts, every skipped file and its reason).
- ``embedding`` is the piece's vector (the mean of its notes' last-layer vectors over all its segments, see
  :mod:`adversarial_midibert.pooling`) scaled to unit length, so that the inner product is the cosine similarity.
- :func:`load_index` gives the data set with a faiss index on ``embedding`` (``Dataset.add_faiss_index``, inner
  product); the index is saved beside the data (``embedding.faiss``) the first time and loaded afterwards, so a second
  query does not rebuild it. Re-embedding the folder replaces the folder, index included.
- :func:`search` embeds the query with the same model and returns ``Dataset.get_nearest_examples``.

Search needs ``faiss`` (``pip install adversarial-midibert[search]``, which installs ``faiss-cpu``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_io import atomic_write_json, write_folder_aside

__all__ = ["EMBEDDING_COLUMN", "INDEX_FILE_NAME", "INFO_FILE_NAME", "embed_files", "load_index", "search",
           "unit_rows"]

EMBEDDING_COLUMN = "embedding"
INDEX_FILE_NAME = "embedding.faiss"
INFO_FILE_NAME = "embedding_info.json"
POOLING = ("mean of the notes' last-layer vectors over all segments of the piece (every note counts once), "
           "scaled to unit length: inner product = cosine similarity")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (N, H) scaled to unit L2 length per row, float32 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _feature_pipeline(model: Any, device: str | None, trust_remote_code: bool):
    from .pipelines import MIDI_FEATURE_EXTRACTION, midi_pipeline

    return midi_pipeline(MIDI_FEATURE_EXTRACTION, model, device=device, trust_remote_code=trust_remote_code)


def embed_files(
    model: Any,
    inputs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    segment_batch_size: int = 8,
    device: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
):
    """Embed every MIDI file of ``inputs`` and write the ``datasets`` folder ``output_dir``.

    Args:
        model: a model folder or Hub id (any Adversarial-MidiBERT: pre-trained or fine-tuned), or a
            ``MidiFeatureExtractionPipeline``.
        inputs: MIDI files and folders (searched recursively).
        output_dir: the data set folder to write (replaced if it exists).
        segment_batch_size: segments per forward pass.
        device: ``cpu``, ``cuda``... (default: transformers' choice).
        trust_remote_code: for a Hub id, run the repository's code.
        progress: show a progress bar.

    Returns:
        ``(dataset, run)``: the written ``datasets.Dataset`` and the
        :class:`~adversarial_midibert.prediction.PredictionRun` (``run.errors``: the skipped files and reasons).

    Raises:
        ValueError: no input could be embedded (the reasons of the first failures are in the message).
    """
    from datasets import Dataset, Features, List, Value

    from .pipelines import MidiFeatureExtractionPipeline
    from .prediction import predict_files

    pipe = model if isinstance(model, MidiFeatureExtractionPipeline) else _feature_pipeline(model, device,
                                                                                            trust_remote_code)
    run = predict_files(pipe, inputs, segment_batch_size=segment_batch_size, progress=progress)
    if not run.results:
        reasons = "; ".join(e["error"] for e in run.errors[:3])
        raise ValueError(f"no MIDI file of {', '.join(map(str, inputs))} could be embedded "
                         f"({len(run.errors)} failed: {reasons})")
    embeddings = unit_rows(np.stack([record.pop(EMBEDDING_COLUMN) for record in run.results]))
    features = Features({"file": Value("string"), EMBEDDING_COLUMN: List(Value("float32")),
                         "num_notes": Value("int64"), "num_segments": Value("int64")})
    dataset = Dataset.from_dict({
        "file": [r["file"] for r in run.results], EMBEDDING_COLUMN: embeddings,
        "num_notes": [r["num_notes"] for r in run.results], "num_segments": [r["num_segments"] for r in run.results],
    }, features=features)
    name = str(getattr(pipe.model, "name_or_path", model))
    info = {"model": str(Path(name).resolve()) if Path(name).exists() else name, "pooling": POOLING,
            "hidden_size": int(embeddings.shape[1]), "num_inputs": run.num_inputs,
            "num_embedded": len(run.results), "num_failed": len(run.errors), "errors": run.errors,
            "notes_left_out": {r["file"]: r["notes_left_out"] for r in run.results if r["notes_left_out"]},
            "warnings": {r["file"]: r["warnings"] for r in run.results if r["warnings"]}}
    with write_folder_aside(output_dir) as tmp:
        dataset.save_to_disk(str(tmp))
        atomic_write_json(tmp / INFO_FILE_NAME, info)
    return dataset, run


def _read_info(folder: Path) -> dict[str, Any]:
    import json

    path = folder / INFO_FILE_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: not an embeddings folder written by `adv-midibert embed` "
                         f"({INFO_FILE_NAME}: {error})") from error


def load_index(folder: str | os.PathLike, string_factory: str | None = None):
    """The embeddings data set of ``folder`` with its faiss index on ``embedding``; ``(dataset, built)``.

    The index is read from ``folder/embedding.faiss`` when it is there and holds every row; otherwise it is built
    (``Dataset.add_faiss_index``, inner product on the unit-length embeddings; exact ``Flat`` search unless
    ``string_factory`` names another faiss index, e.g. ``"HNSW32"`` for millions of pieces) and saved there, aside then
    renamed. ``built`` says which happened.
    """
    import faiss
    from datasets import load_from_disk

    folder = Path(folder)
    _read_info(folder)
    dataset = load_from_disk(str(folder))
    index_path = folder / INDEX_FILE_NAME
    if index_path.is_file():
        try:
            dataset.load_faiss_index(EMBEDDING_COLUMN, str(index_path))
            return dataset, False
        except (ValueError, RuntimeError):  # stale (built for other rows: datasets checks the size) or unreadable
            pass
    dataset.add_faiss_index(EMBEDDING_COLUMN, string_factory=string_factory, metric_type=faiss.METRIC_INNER_PRODUCT)
    tmp = index_path.with_name(f".{index_path.name}.tmp")
    dataset.save_faiss_index(EMBEDDING_COLUMN, str(tmp))
    os.replace(tmp, index_path)
    return dataset, True


def search(query: Any, folder: str | os.PathLike, top_k: int = 10, model: Any = None, device: str | None = None,
           trust_remote_code: bool = False, dataset=None) -> dict[str, Any]:
    """The ``top_k`` pieces of the embeddings folder nearest to ``query`` (a MIDI path or ``symusic.Score``).

    Args:
        query: the query piece.
        folder: a folder written by :func:`embed_files`.
        top_k: how many neighbours.
        model: the model (folder, Hub id or feature-extraction pipeline); default the one that embedded the folder,
            as ``embedding_info.json`` names it. Queries must be embedded by the model of the index.
        dataset: the indexed data set from :func:`load_index`, to run many queries without reloading.

    Returns:
        ``{"query", "num_notes", "neighbours": [{"rank", "file", "score"}...], "index_built"}``; ``score`` is the
        cosine similarity, highest first.
    """
    from .pipelines import MidiFeatureExtractionPipeline

    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    folder = Path(folder)
    built = False
    if dataset is None:
        dataset, built = load_index(folder)
    if model is None:
        model = _read_info(folder)["model"]
    pipe = model if isinstance(model, MidiFeatureExtractionPipeline) else _feature_pipeline(model, device,
                                                                                            trust_remote_code)
    out = pipe(query)
    vector = unit_rows(out[EMBEDDING_COLUMN][None])[0]
    expected = len(dataset[0][EMBEDDING_COLUMN])
    if vector.shape[0] != expected:
        raise ValueError(f"the query's embedding has {vector.shape[0]} dimensions, the index {folder} {expected}: "
                         "embed the query with the model that embedded the folder")
    scores, examples = dataset.get_nearest_examples(EMBEDDING_COLUMN, vector, k=min(int(top_k), len(dataset)))
    neighbours = [{"rank": i + 1, "file": f, "score": float(s)} for i, (f, s) in enumerate(zip(examples["file"],
                                                                                               scores))]
    return {"query": out["file"], "num_notes": out["num_notes"], "neighbours": neighbours, "index_built": built}
