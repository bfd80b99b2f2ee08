"""MIDI similarity search: embed a folder of pieces into a ``datasets`` folder, then find a query's nearest pieces.

What ``adv-midibert embed`` and ``adv-midibert search`` run (docs/embeddings.md)::

    adv-midibert embed  FOLDER --model MODEL --output_dir DS     # one row per piece: file, embedding
    adv-midibert search QUERY.mid --index DS --top_k 10          # the 10 nearest pieces, by cosine similarity

:func:`embed_files` runs the ``midi-feature-extraction`` pipeline over every file (a file that fails is skipped and
listed with its reason) and writes a ``save_to_disk`` folder of unit-length piece vectors (inner product = cosine
similarity) with ``embedding_info.json``: the model and the SHA-256 of its encoder's weights, the counts, the
skipped files, an id of this embedding. :func:`load_index` adds a faiss index on ``embedding``, saved beside the
data and read back only while its record (embedding id, size, SHA-256) matches; :func:`search` embeds the query with
the same model (checked by its hash) and returns the nearest pieces. Search needs ``faiss``
(``pip install adversarial-midibert[search]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_io import FolderLock, atomic_write_json, file_sha256, write_folder_aside
from .output_folders import check_output_folder

__all__ = ["EMBEDDING_COLUMN", "INDEX_FILE_NAME", "INDEX_INFO_FILE_NAME", "INFO_FILE_NAME", "embed_files", "load_index",
           "model_sha256", "printable_name", "search", "unit_rows"]

EMBEDDING_COLUMN = "embedding"
INDEX_FILE_NAME = "embedding.faiss"
INFO_FILE_NAME = "embedding_info.json"
INDEX_INFO_FILE_NAME = "embedding_index.json"
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


def model_sha256(model) -> str:
    """SHA-256 of the encoder's weights (names, dtypes, shapes and bytes; a head is left out): what says that a
    query is embedded by the model that embedded a folder. Written here: no library hashes a module's weights."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.base_model.state_dict().items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _is_embeddings(folder: Path, names: set[str]) -> bool:
    return INFO_FILE_NAME in names and "state.json" in names


def printable_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as surrogates) written as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


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
        model: a model folder or Hub id (pre-trained or fine-tuned), or a ``MidiFeatureExtractionPipeline``.
        inputs: MIDI files and folders (searched recursively).
        output_dir: the data set folder to write: missing, empty, or written by this function before (then
            replaced); never an input, a folder holding one, or the model.
        segment_batch_size: segments per forward pass.
        device: ``cpu``, ``cuda``... (default: transformers' choice).
        trust_remote_code: for a Hub id, run the repository's code.
        progress: show a progress bar.

    Returns:
        ``(dataset, run)``: the written ``datasets.Dataset`` and the
        :class:`~adversarial_midibert.prediction.PredictionRun` (``run.errors``: the skipped files and reasons).

    Raises:
        ValueError: no input could be embedded, or ``output_dir`` is or holds an input or the model.
        FileExistsError: ``output_dir`` holds something this function did not write.
        FolderBusyError: another process is writing ``output_dir``.
    """
    import uuid

    from .pipelines import MidiFeatureExtractionPipeline

    with FolderLock(output_dir):  # held until the folder is swapped in: one writer at a time
        model_name = model.model.name_or_path if isinstance(model, MidiFeatureExtractionPipeline) else model
        local_model = str(model_name) if isinstance(model_name, (str, os.PathLike)) and Path(model_name).exists() \
            else None
        check_output_folder(output_dir, "embeddings", _is_embeddings, inputs=[*inputs, local_model],
                            overwrite_hint=None)
        pipe = model if isinstance(model, MidiFeatureExtractionPipeline) else _feature_pipeline(model, device,
                                                                                                trust_remote_code)
        dataset, run, info = _embed(pipe, model, inputs, segment_batch_size, progress)
        info["embedding_id"] = uuid.uuid4().hex
        with write_folder_aside(output_dir) as tmp:
            dataset.save_to_disk(str(tmp))
            atomic_write_json(tmp / INFO_FILE_NAME, info)
    return dataset, run


def _embed(pipe, model: Any, inputs: Sequence[str | os.PathLike], segment_batch_size: int, progress: bool):
    """The rows and the info of an embeddings folder: ``(dataset, run, info)``."""
    from datasets import Dataset, Features, List, Value

    from .prediction import predict_files

    run = predict_files(pipe, inputs, segment_batch_size=segment_batch_size, progress=progress)
    if not run.results:
        reasons = "; ".join(e["error"] for e in run.errors[:3])
        raise ValueError(f"no MIDI file of {', '.join(map(str, inputs))} could be embedded "
                         f"({len(run.errors)} failed: {reasons})")
    for record in run.results:  # Arrow stores UTF-8 text: a name that is not is kept, escaped, and said so
        name = printable_name(record["file"])
        if name != record["file"]:
            record["warnings"].append(f"{name}: the file name is not UTF-8; stored with its bytes escaped")
            record["file"] = name
    embeddings = unit_rows(np.stack([record.pop(EMBEDDING_COLUMN) for record in run.results]))
    features = Features({"file": Value("string"), EMBEDDING_COLUMN: List(Value("float32")),
                         "num_notes": Value("int64"), "num_segments": Value("int64")})
    dataset = Dataset.from_dict({
        "file": [r["file"] for r in run.results], EMBEDDING_COLUMN: embeddings,
        "num_notes": [r["num_notes"] for r in run.results], "num_segments": [r["num_segments"] for r in run.results],
    }, features=features)
    name = str(getattr(pipe.model, "name_or_path", model))
    info = {"model": str(Path(name).resolve()) if Path(name).exists() else name,
            "model_sha256": model_sha256(pipe.model), "pooling": POOLING,
            "hidden_size": int(embeddings.shape[1]), "num_inputs": run.num_inputs,
            "num_embedded": len(run.results), "num_failed": len(run.errors), "errors": run.errors,
            "notes_left_out": {r["file"]: r["notes_left_out"] for r in run.results if r["notes_left_out"]},
            "warnings": {r["file"]: r["warnings"] for r in run.results if r["warnings"]}}
    return dataset, run, info


_INFO_KEYS = {"model": str, "model_sha256": str, "hidden_size": int, "embedding_id": str}


def _read_info(folder: Path) -> dict[str, Any]:
    """``embedding_info.json`` of ``folder``, checked: a dict with the keys search needs, of their types."""
    import json

    path = folder / INFO_FILE_NAME
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: not an embeddings folder written by `adv-midibert embed` "
                         f"({INFO_FILE_NAME}: {error})") from error
    bad = [key for key, kind in _INFO_KEYS.items() if not isinstance(info.get(key), kind)] if isinstance(
        info, dict) else None
    if bad is None:
        raise ValueError(f"{path} holds a {type(info).__name__}, not the dict `adv-midibert embed` writes; "
                         "embed the folder again")
    if bad:
        raise ValueError(f"{path} lacks {', '.join(bad)} (written by an older version, or edited); embed the "
                         "folder again")
    return info


def _index_matches(folder: Path, embedding_id: str) -> bool:
    """Whether ``embedding.faiss`` is the index saved for this embedding (``embedding_index.json``: its id, the
    file's size and SHA-256): only such a file is read by faiss."""
    import json

    index_path = folder / INDEX_FILE_NAME
    try:
        saved = json.loads((folder / INDEX_INFO_FILE_NAME).read_text(encoding="utf-8"))
        return (isinstance(saved, dict) and saved.get("embedding_id") == embedding_id
                and saved.get("size") == index_path.stat().st_size and saved.get("sha256") == file_sha256(index_path))
    except (OSError, ValueError):
        return False


def load_index(folder: str | os.PathLike, string_factory: str | None = None):
    """The embeddings data set of ``folder`` with its faiss index on ``embedding``; ``(dataset, built)``.

    The index is read from ``folder/embedding.faiss`` when ``embedding_index.json`` says it was saved for this
    embedding and the file still has the size and SHA-256 recorded; otherwise it is built (inner product; exact
    ``Flat`` search unless ``string_factory`` names another faiss index, e.g. ``"HNSW32"``) and saved there, aside
    then renamed, its record last. ``built`` says which happened.

    Raises:
        ValueError: ``folder`` is not an embeddings folder, or holds no rows.
    """
    return _load_index(Path(folder), string_factory)[:2]


def _load_index(folder: Path, string_factory: str | None = None):
    """:func:`load_index`, and the ``embedding_info.json`` that describes the rows loaded."""
    import faiss
    from datasets import load_from_disk

    info = _read_info(folder)
    try:
        dataset = load_from_disk(str(folder))
    except (OSError, ValueError, IndexError, KeyError) as error:  # datasets cannot read a folder of no shard
        raise ValueError(f"{folder}: its rows cannot be read ({type(error).__name__}: {error}); it holds no "
                         "embeddings: embed some MIDI files into it") from None
    if len(dataset) == 0:
        raise ValueError(f"{folder} holds no embeddings (0 rows); embed some MIDI files into it")
    width = len(dataset[0][EMBEDDING_COLUMN])
    if width != info["hidden_size"]:
        raise ValueError(f"{folder}: its embeddings have {width} dimensions, {INFO_FILE_NAME} says "
                         f"{info['hidden_size']}; embed the folder again")
    index_path = folder / INDEX_FILE_NAME
    if _index_matches(folder, info["embedding_id"]):
        try:
            dataset.load_faiss_index(EMBEDDING_COLUMN, str(index_path))
            return dataset, False, info
        except (ValueError, RuntimeError, MemoryError):  # unreadable: rebuilt below
            pass
    dataset.add_faiss_index(EMBEDDING_COLUMN, string_factory=string_factory, metric_type=faiss.METRIC_INNER_PRODUCT)
    tmp = index_path.with_name(f".{index_path.name}.{os.getpid()}.tmp")
    dataset.save_faiss_index(EMBEDDING_COLUMN, str(tmp))
    record = {"embedding_id": info["embedding_id"], "size": tmp.stat().st_size, "sha256": file_sha256(tmp)}
    os.replace(tmp, index_path)
    atomic_write_json(folder / INDEX_INFO_FILE_NAME, record)
    return dataset, True, info


def search_inputs(query: str | os.PathLike, folder: str | os.PathLike, model: Any = None) -> list[str]:
    """The paths a search reads: the query, the embeddings folder and the model's folder (the one given, else the
    one ``embedding_info.json`` names), for the checks of an output path (``search --json``)."""
    if model is None:
        try:
            model = _read_info(Path(folder))["model"]
        except ValueError:  # the search itself will say what is wrong with the folder
            model = None
    local_model = [str(model)] if isinstance(model, (str, os.PathLike)) and Path(model).exists() else []
    return [str(query), str(folder), *local_model]


def search(query: Any, folder: str | os.PathLike, top_k: int = 10, model: Any = None, device: str | None = None,
           trust_remote_code: bool = False, dataset=None) -> dict[str, Any]:
    """The ``top_k`` pieces of the embeddings folder nearest to ``query`` (a MIDI path or ``symusic.Score``).

    Args:
        query: the query piece.
        folder: a folder written by :func:`embed_files`.
        top_k: how many neighbours.
        model: the model (folder, Hub id or feature-extraction pipeline); default the one that embedded the folder,
            as ``embedding_info.json`` names it. Its encoder's weights must be the ones that embedded the folder.
        dataset: the indexed data set from :func:`load_index`, to run many queries without reloading.

    Returns:
        ``{"query", "num_notes", "neighbours": [{"rank", "file", "score"}...], "index_built"}``, highest cosine
        similarity first; ``ValueError`` for a damaged folder or a model other than the one that embedded it.
    """
    from .pipelines import MidiFeatureExtractionPipeline

    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    folder = Path(folder)
    if dataset is None:
        dataset, built, info = _load_index(folder)
    else:
        built, info = False, _read_info(folder)
    pipe = model if isinstance(model, MidiFeatureExtractionPipeline) else _feature_pipeline(
        info["model"] if model is None else model, device, trust_remote_code)
    if model_sha256(pipe.model) != info["model_sha256"]:
        raise ValueError(f"{getattr(pipe.model, 'name_or_path', model)} is not the model that embedded {folder} "
                         f"(its weights differ from those {INFO_FILE_NAME} recorded): search with that model, or "
                         "embed the folder again with this one")
    out = pipe(query)
    vector = unit_rows(out[EMBEDDING_COLUMN][None])[0]
    scores, examples = dataset.get_nearest_examples(EMBEDDING_COLUMN, vector, k=min(int(top_k), len(dataset)))
    neighbours = [{"rank": i + 1, "file": f, "score": float(s)} for i, (f, s) in enumerate(zip(examples["file"],
                                                                                               scores))]
    return {"query": out["file"], "num_notes": out["num_notes"], "neighbours": neighbours, "index_built": built}
