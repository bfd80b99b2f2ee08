"""Publishing a trained model folder to the Hugging Face Hub, with its model card.

A *model folder* is what ``save_pretrained`` leaves behind at the end of ``examples/pretrain.py`` or
``examples/finetune.py`` (or ``hub/convert_original_checkpoint.py``): ``config.json``, the
``model.safetensors`` weights, the two model code files that make it loadable with
``trust_remote_code=True`` (``configuration_adv_midibert.py``, ``modeling_adv_midibert.py``), the
tokenizer file ``octuple_tokenizer.json`` and, for fine-tuned models, ``all_results.json``.

Three public functions:

- :func:`prepare_remote_code` copies the model code files into a folder and writes a complete
  ``auto_map`` into its ``config.json`` (every Auto class points at our classes).
- :func:`write_model_card` renders ``README.md`` (YAML metadata + text) from the run's facts and
  ``all_results.json``.
- :func:`push_folder_to_hub` checks the folder, then uploads exactly the files a user needs in ONE
  commit (or, with ``dry_run_dir``, writes that set of files to a folder and makes no network call).
  Optimizer states, ``checkpoint-*`` folders, logs and anything else are never uploaded.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from .constants import TOKENIZER_FILE_NAME
# Every Auto class a user may call on a published folder (transformers reads it from config.json).
from .modeling_adv_midibert import AUTO_MAP

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
MODEL_CARD_NAME = "README.md"
RESULTS_NAME = "all_results.json"
CODE_FILES: tuple[str, ...] = ("configuration_adv_midibert.py", "modeling_adv_midibert.py")

# Which Auto class loads each architecture name written by save_pretrained in config.json.
ARCHITECTURE_TO_AUTO: dict[str, str] = {
    "AdvMidiBertModel": "AutoModel",
    "AdvMidiBertForMaskedLM": "AutoModelForMaskedLM",
    "AdvMidiBertForSequenceClassification": "AutoModelForSequenceClassification",
    "AdvMidiBertForTokenClassification": "AutoModelForTokenClassification",
}

PAPER_TITLE = (
    "Let Network Decide What to Learn: Symbolic Music Understanding Model Based on Large-scale "
    "Adversarial Pre-training"
)
PAPER_ARXIV = "2407.08306"
PAPER_URL = f"https://arxiv.org/abs/{PAPER_ARXIV}"
PAPER_BIBTEX = """@article{zhao2024adversarialmidibert,
  title   = {Let Network Decide What to Learn: Symbolic Music Understanding Model Based on
             Large-scale Adversarial Pre-training},
  author  = {Zhao, Zijian},
  journal = {arXiv preprint arXiv:2407.08306},
  year    = {2024},
  url     = {https://arxiv.org/abs/2407.08306}
}"""

DEFAULT_TAGS: tuple[str, ...] = (
    "symbolic-music",
    "midi",
    "music",
    "octuple",
    "music-understanding",
    "adversarial-midibert",
    "bert",
)

# The paper's downstream tasks: the data set each one uses and the accuracy the paper reports.
KNOWN_TASKS: dict[str, dict[str, Any]] = {
    "composer": {
        "name": "Composer classification",
        "dataset_name": "Pianist8",
        "dataset_type": "pianist8",
        "task_type": "sequence",
        "paper_accuracy": 97.92,
    },
    "emotion": {
        "name": "Emotion recognition",
        "dataset_name": "EMOPIA",
        "dataset_type": "emopia",
        "task_type": "sequence",
        "paper_accuracy": 79.46,
    },
    "melody": {
        "name": "Melody extraction",
        "dataset_name": "POP909",
        "dataset_type": "pop909",
        "task_type": "token",
        "paper_accuracy": 92.68,
    },
    "velocity": {
        "name": "Velocity prediction",
        "dataset_name": "POP909",
        "dataset_type": "pop909",
        "task_type": "token",
        "paper_accuracy": 45.58,
    },
}

# Hub task ids used in the model-index for each of our task types.
_HUB_TASK_TYPE = {"sequence": "text-classification", "token": "token-classification", "pretrain": "fill-mask"}
_SPLIT_PREFIXES = {"test_": "test", "eval_": "validation", "validation_": "validation"}
_METRIC_NAMES = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1_macro": ("f1", "F1 (macro)"),
    "f1": ("f1", "F1"),
    "f1_weighted": ("f1", "F1 (weighted)"),
    "precision_macro": ("precision", "Precision (macro)"),
    "recall_macro": ("recall", "Recall (macro)"),
    "loss": ("loss", "Loss"),
}


class HubPublishError(ValueError):
    """A model folder or a publishing argument is not fit for upload; the message says what and where."""


# --------------------------------------------------------------------------------------------
# Remote code
# --------------------------------------------------------------------------------------------
def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def prepare_remote_code(folder: str | Path) -> list[Path]:
    """Make a saved model folder loadable with ``trust_remote_code=True`` and nothing but torch/transformers.

    Copies ``configuration_adv_midibert.py`` and ``modeling_adv_midibert.py`` from the installed package
    into ``folder`` and merges :data:`AUTO_MAP` into ``folder/config.json`` (so ``AutoModel``,
    ``AutoModelForMaskedLM``, ``AutoModelForSequenceClassification`` and
    ``AutoModelForTokenClassification`` all resolve to our classes).

    Args:
        folder: a folder written by ``save_pretrained`` (it must hold ``config.json``).

    Returns:
        The paths of the code files now in ``folder``.

    Raises:
        HubPublishError: ``folder/config.json`` is missing or not a JSON object, or the package's model
            code files cannot be found.
    """
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    config = _read_json(config_path, what="model config")
    written = []
    for name in CODE_FILES:
        source = _package_dir() / name
        if not source.is_file():
            raise HubPublishError(f"model code file {source} not found in the adversarial_midibert package")
        target = folder / name
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        written.append(target)
    auto_map = dict(config.get("auto_map") or {})
    auto_map.update(AUTO_MAP)
    config["auto_map"] = auto_map
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written


# --------------------------------------------------------------------------------------------
# Folder checks
# --------------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise HubPublishError(f"{what} file missing: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubPublishError(f"{what} file {path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise HubPublishError(f"{what} file {path} must hold a JSON object, found {type(data).__name__}")
    return data


def collect_upload_files(folder: str | Path, require_card: bool = True) -> dict[str, Path]:
    """Check a model folder and list exactly the files a Hub upload of it contains.

    The upload is an allow-list: ``config.json``, the weights (``model.safetensors``, or the shards named
    by ``model.safetensors.index.json`` with the index), the model code files named in the config's
    ``auto_map``, ``octuple_tokenizer.json`` and ``README.md``. Everything else in the folder (optimizer
    and scheduler states, ``checkpoint-*``/``step_*`` folders, logs, TensorBoard runs, results files) is
    left out.

    Args:
        folder: the model folder.
        require_card: whether a missing ``README.md`` is an error (``push_folder_to_hub`` writes the card
            first, so it always passes ``True``).

    Returns:
        A mapping from path in the repository to local file, sorted by path.

    Raises:
        HubPublishError: the folder does not exist, or a required file is missing (the message names it),
            or ``config.json`` has no ``auto_map`` for remote code.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HubPublishError(f"model folder {folder} does not exist or is not a directory")
    files: dict[str, Path] = {}

    config = _read_json(folder / CONFIG_NAME, what="model config (config.json)")
    files[CONFIG_NAME] = folder / CONFIG_NAME

    if (folder / WEIGHTS_NAME).is_file():
        files[WEIGHTS_NAME] = folder / WEIGHTS_NAME
    elif (folder / WEIGHTS_INDEX_NAME).is_file():
        index = _read_json(folder / WEIGHTS_INDEX_NAME, what="weights index")
        files[WEIGHTS_INDEX_NAME] = folder / WEIGHTS_INDEX_NAME
        for shard in sorted(set((index.get("weight_map") or {}).values())):
            if not (folder / shard).is_file():
                raise HubPublishError(f"weights shard {folder / shard} named in {WEIGHTS_INDEX_NAME} is missing")
            files[shard] = folder / shard
    else:
        raise HubPublishError(
            f"model weights missing: neither {folder / WEIGHTS_NAME} nor {folder / WEIGHTS_INDEX_NAME} exists "
            "(save the model with save_pretrained(..., safe_serialization=True))"
        )

    auto_map = config.get("auto_map")
    if not auto_map:
        raise HubPublishError(
            f"{folder / CONFIG_NAME} has no 'auto_map', so the model cannot be loaded with trust_remote_code=True; "
            "call adversarial_midibert.hub_utils.prepare_remote_code(folder) after save_pretrained"
        )
    code_files = set(CODE_FILES)
    for reference in auto_map.values():
        for item in reference if isinstance(reference, (list, tuple)) else [reference]:
            if item:
                code_files.add(item.split("--")[-1].rsplit(".", 1)[0] + ".py")
    for name in sorted(code_files):
        if not (folder / name).is_file():
            raise HubPublishError(
                f"model code file missing: {folder / name} (needed for trust_remote_code=True); "
                "call adversarial_midibert.hub_utils.prepare_remote_code(folder)"
            )
        files[name] = folder / name

    if not (folder / TOKENIZER_FILE_NAME).is_file():
        raise HubPublishError(
            f"tokenizer file missing: {folder / TOKENIZER_FILE_NAME} (save it with OctupleTokenizer.save_pretrained)"
        )
    files[TOKENIZER_FILE_NAME] = folder / TOKENIZER_FILE_NAME

    if (folder / MODEL_CARD_NAME).is_file():
        files[MODEL_CARD_NAME] = folder / MODEL_CARD_NAME
    elif require_card:
        raise HubPublishError(f"model card missing: {folder / MODEL_CARD_NAME} (write it with write_model_card)")
    return dict(sorted(files.items()))


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------
def read_results(folder: str | Path) -> dict[str, Any]:
    """Read ``all_results.json`` from ``folder`` (an empty dict when the file is absent).

    Args:
        folder: the model folder.

    Raises:
        HubPublishError: the file exists but is not a JSON object.
    """
    path = Path(folder) / RESULTS_NAME
    return _read_json(path, what="results") if path.is_file() else {}


def results_to_eval_results(
    results: Mapping[str, Any],
    task: str | None = None,
    dataset_name: str | None = None,
    dataset_type: str | None = None,
    task_type: str | None = None,
) -> list:
    """Turn ``all_results.json``-style metrics into ``huggingface_hub.EvalResult`` entries.

    Numeric keys that start with ``test_``, ``eval_`` or ``validation_`` become one result each (the
    prefix names the split; ``loss``, ``runtime`` and ``*_per_second`` keys are left out). Accuracies
    in [0, 1] are kept as fractions, as ``evaluate`` returns them.

    Args:
        results: the metrics, e.g. ``{"test_accuracy": 0.93, "test_f1_macro": 0.91, "task": "melody"}``.
        task: task name (``composer``, ``emotion``, ``melody``, ``velocity`` or any other); defaults to
            ``results["task"]``.
        dataset_name: pretty data set name; defaults to ``results["dataset"]`` or the known task's data set.
        dataset_type: data set id for the model-index; defaults to a lower-case ``dataset_name``.
        task_type: ``sequence``, ``token`` or ``pretrain``; defaults to ``results["task_type"]`` or the
            known task's type.
    """
    from huggingface_hub import EvalResult

    task = task or results.get("task")
    known = KNOWN_TASKS.get(str(task), {})
    dataset_name = dataset_name or results.get("dataset_name") or results.get("dataset") or known.get("dataset_name")
    task_type = task_type or results.get("task_type") or known.get("task_type") or "sequence"
    if not dataset_name:
        return []
    dataset_type = dataset_type or known.get("dataset_type") or str(dataset_name).lower().replace(" ", "-")
    entries = []
    for key, value in results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        split = next((s for p, s in _SPLIT_PREFIXES.items() if key.startswith(p)), None)
        if split is None:
            continue
        metric = key.split("_", 1)[1]
        if metric in ("loss", "runtime", "samples", "steps") or metric.endswith("per_second"):
            continue
        metric_type, metric_name = _METRIC_NAMES.get(metric, (metric, metric.replace("_", " ")))
        entries.append(
            EvalResult(
                task_type=_HUB_TASK_TYPE.get(str(task_type), str(task_type)),
                task_name=known.get("name") or (str(task) if task else None),
                dataset_type=dataset_type,
                dataset_name=str(dataset_name),
                dataset_split=split,
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=float(value),
            )
        )
    return entries


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_format_value(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def write_model_card(
    folder: str | Path,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] | str | None = None,
    task: str | None = None,
    task_type: str | None = None,
    dataset_name: str | None = None,
    training_command: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    license: str = "mit",
    tags: Sequence[str] | None = None,
    notes: str | None = None,
    template_path: str | Path | None = None,
    **extra_info: Any,
) -> Path:
    """Render the model card ``README.md`` of a model folder (metadata + text) and write it there.

    The metadata (YAML front matter) holds the library name, license, tags, base model, data sets and a
    ``model-index`` built from the evaluation results, so the Hub shows them and
    ``huggingface_hub.ModelCard.load`` / ``metadata_load`` read them back. The text says what the model
    is, how to load it (remote code + ``pip install adversarial-midibert`` for the tokenizer), how it
    was trained, its results next to the paper's, its intended use and limitations, and the citation.

    Args:
        folder: the model folder (must hold ``config.json``); ``README.md`` is written there.
        repo_id: the Hub repository id used in the loading example (defaults to the folder name).
        model_name: the title of the card and the model-index name (defaults to the repo name).
        base_model: Hub id of the pre-trained model this one was fine-tuned from, if any.
        datasets: data set ids/names the model was trained on (a string or a list).
        task: downstream task (``composer``, ``emotion``, ``melody``, ``velocity``, ``pretrain`` or any
            other); defaults to ``results["task"]``, else ``"pretrain"`` for a masked-LM folder.
        task_type: ``sequence``, ``token`` or ``pretrain``; inferred from the task or the architecture.
        dataset_name: data set on which the results were measured (defaults to ``results["dataset"]``
            or the known task's data set).
        training_command: the exact command line of the run, shown verbatim.
        hyperparameters: training hyper-parameters (name -> value), shown as a table.
        results: metrics to report; defaults to ``folder/all_results.json``.
        license: SPDX license id of the weights (default ``mit``).
        tags: extra Hub tags, added to :data:`DEFAULT_TAGS`.
        notes: free text added under "Training details".
        template_path: a Jinja2 card template; defaults to ``hub/model_card_template.md`` of the source
            tree when present, else the template built into this module.
        **extra_info: any other facts of the run (name -> value), listed with the hyper-parameters.

    Returns:
        The path of the written ``README.md``.

    Raises:
        HubPublishError: ``config.json`` is missing or unreadable, or ``all_results.json`` is not a JSON
            object.
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    config = _read_json(folder / CONFIG_NAME, what="model config (config.json)")
    results = dict(results) if results is not None else read_results(folder)
    architectures = config.get("architectures") or ["AdvMidiBertModel"]
    architecture = architectures[0]
    auto_class = ARCHITECTURE_TO_AUTO.get(architecture, "AutoModel")

    task = task or results.get("task") or ("pretrain" if architecture.endswith("MaskedLM") else None)
    known = KNOWN_TASKS.get(str(task), {})
    if task_type is None:
        task_type = results.get("task_type") or known.get("task_type")
        if task_type is None:
            task_type = {"AutoModelForMaskedLM": "pretrain", "AutoModelForTokenClassification": "token"}.get(
                auto_class, "sequence"
            )
    dataset_name = dataset_name or results.get("dataset_name") or results.get("dataset") or known.get("dataset_name")
    if isinstance(datasets, str):
        datasets = [datasets]
    datasets = list(datasets or ([dataset_name] if dataset_name else []))
    repo_id = repo_id or folder.resolve().name
    model_name = model_name or repo_id.split("/")[-1]

    eval_results = results_to_eval_results(
        results, task=task, dataset_name=dataset_name, task_type=task_type
    ) if task_type != "pretrain" else []
    all_tags = list(dict.fromkeys([*DEFAULT_TAGS, *(tags or []), *([str(task)] if task else [])]))
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        tags=all_tags,
        base_model=base_model,
        datasets=datasets or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
    )
    card_data.arxiv = PAPER_ARXIV  # shown by the Hub as a link to the paper

    attribute_names = config.get("attribute_names") or [
        "bar", "position", "program", "pitch", "duration", "velocity", "time_signature", "tempo"
    ]
    vocab_sizes = config.get("vocab_sizes") or []
    architecture_rows = [
        ("Architecture", architecture),
        ("Layers", config.get("num_hidden_layers", "?")),
        ("Hidden size", config.get("hidden_size", "?")),
        ("Attention heads", config.get("num_attention_heads", "?")),
        ("Feed-forward size", config.get("intermediate_size", "?")),
        ("Max segment length (notes)", config.get("max_position_embeddings", config.get("max_seq_len", "?"))),
        ("Position embedding", config.get("position_embedding_type", "?")),
    ]
    if vocab_sizes:
        architecture_rows.append(
            ("Vocabulary sizes", ", ".join(f"{n} {v}" for n, v in zip(attribute_names, vocab_sizes)))
        )
    label_names = results.get("label_names") or list((config.get("id2label") or {}).values())
    if label_names and task_type != "pretrain":
        architecture_rows.append(("Labels", ", ".join(str(x) for x in label_names)))

    result_rows = []
    for entry in eval_results:
        paper = ""
        if entry.metric_type == "accuracy" and "paper_accuracy" in known and entry.dataset_split == "test":
            paper = f"{known['paper_accuracy']:.2f}"
        value = entry.metric_value
        if entry.metric_type in ("accuracy", "f1", "precision", "recall") and 0 <= value <= 1:
            value *= 100
        result_rows.append((entry.dataset_name, entry.dataset_split, entry.metric_name, f"{value:.2f}", paper))
    other_results = {k: v for k, v in results.items() if k != "label_names"}
    hyper_rows = [(k, v) for k, v in {**dict(hyperparameters or {}), **extra_info}.items() if v is not None]

    template_kwargs = {
        "model_name": model_name,
        "repo_id": repo_id,
        "task": task,
        "task_title": known.get("name") or (str(task).replace("_", " ").capitalize() if task else None),
        "task_type": task_type,
        "auto_class": auto_class,
        "base_model": base_model,
        "datasets": datasets,
        "dataset_name": dataset_name,
        "architecture_table": _markdown_table(architecture_rows, ("", "")),
        "results_table": _markdown_table(result_rows, ("Data set", "Split", "Metric", "Value (%)", "Paper (%)"))
        if result_rows else "",
        "raw_results": json.dumps(other_results, indent=2, sort_keys=True) if other_results else "",
        "hyperparameters_table": _markdown_table(hyper_rows, ("Hyper-parameter", "Value")) if hyper_rows else "",
        "training_command": training_command,
        "notes": notes,
        "paper_title": PAPER_TITLE,
        "paper_url": PAPER_URL,
        "citation": PAPER_BIBTEX,
        "tokenizer_file": TOKENIZER_FILE_NAME,
    }
    template_path = Path(template_path) if template_path else _default_template_path()
    if template_path is not None:
        card = ModelCard.from_template(card_data, template_path=str(template_path), **template_kwargs)
    else:
        card = ModelCard.from_template(card_data, template_str=_FALLBACK_TEMPLATE, **template_kwargs)
    out = folder / MODEL_CARD_NAME
    out.write_text(str(card), encoding="utf-8")
    return out


def _default_template_path() -> Path | None:
    candidate = _package_dir().parent / "hub" / "model_card_template.md"
    return candidate if candidate.is_file() else None


# Used when the package is installed without the source tree's hub/ folder.
_FALLBACK_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

Adversarial-MidiBERT ({{ paper_url }}), a BERT for symbolic music on Octuple tokens{% if task_title %}, for {{ task_title }}{% endif %}.

```python
from transformers import {{ auto_class }}
from adversarial_midibert import OctupleTokenizer  # pip install adversarial-midibert

model = {{ auto_class }}.from_pretrained("{{ repo_id }}", trust_remote_code=True)
```

{{ architecture_table }}

{% if results_table %}{{ results_table }}{% endif %}

```bibtex
{{ citation }}
```
"""


# --------------------------------------------------------------------------------------------
# Upload
# --------------------------------------------------------------------------------------------
def validate_repo_id(repo_id: str) -> None:
    """Check a Hub repository id with huggingface_hub's validator; raise :class:`HubPublishError` if bad.

    Args:
        repo_id: ``"namespace/name"`` (or ``"name"`` for the token owner's namespace).
    """
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as _validate

    try:
        _validate(repo_id)
    except HFValidationError as error:
        raise HubPublishError(f"invalid --repo_id {repo_id!r}: {error}") from error


def resolve_token(token: str | None = None) -> str:
    """Return the Hub token to use: ``token`` if given, else ``HF_TOKEN`` / the cached ``hf auth login``.

    Args:
        token: an explicit token, or None.

    Raises:
        HubPublishError: no token was given and none is configured.
    """
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubPublishError(
            "no Hugging Face token found: set the HF_TOKEN environment variable or run `hf auth login` "
            "(nothing was uploaded)"
        )
    return token


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload Adversarial-MidiBERT model",
    dry_run_dir: str | Path | None = None,
    **card_info: Any,
):
    """Upload a model folder to the Hub in one commit (or write the would-be upload to ``dry_run_dir``).

    Steps: validate ``repo_id``; write ``README.md`` with :func:`write_model_card` if the folder has none
    (``card_info`` is passed to it); collect the allow-listed files (:func:`collect_upload_files`:
    config, weights, code files, tokenizer file, card — never optimizer states, checkpoints or logs);
    then either copy them to ``dry_run_dir`` (no token needed, no network call) or resolve the token,
    ``create_repo(exist_ok=True, private=private)``, ``create_branch(revision, exist_ok=True)`` when a
    revision is given, and ``create_commit`` with one ``CommitOperationAdd`` per file. Every check
    happens before the first network call.

    Args:
        folder: the model folder written by ``save_pretrained`` (+ tokenizer file, + code files).
        repo_id: target Hub repository, ``"namespace/name"``.
        private: create the repository as private (has no effect on an existing repository).
        revision: branch to commit to (created from the default branch if missing); None for ``main``.
        token: Hub token; defaults to ``HF_TOKEN`` or the cached login.
        commit_message: the commit's message.
        dry_run_dir: if given, write exactly the upload's files to this (new or empty) folder and return
            its path instead of uploading.
        **card_info: keyword arguments for :func:`write_model_card` when the card must be written.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the commit, or the ``dry_run_dir`` path in a dry run.

    Raises:
        HubPublishError: bad repo id, missing token (not in a dry run), a required file missing from the
            folder, or a non-empty ``dry_run_dir``.
    """
    folder = Path(folder)
    validate_repo_id(repo_id)
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise HubPublishError(f"invalid --revision {revision!r}: give a branch name")
    collect_upload_files(folder, require_card=False)  # fail on missing files before writing anything
    if not (folder / MODEL_CARD_NAME).is_file():
        write_model_card(folder, repo_id=repo_id, **card_info)
    files = collect_upload_files(folder, require_card=True)

    if dry_run_dir is not None:
        target = Path(dry_run_dir)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise HubPublishError(f"--dry_run folder {target} exists and is not empty")
        target.mkdir(parents=True, exist_ok=True)
        for path_in_repo, local in files.items():
            destination = target / path_in_repo
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, destination)
        logger.info("dry run: wrote the %d files of the upload to %s", len(files), target)
        return target

    from huggingface_hub import CommitOperationAdd, HfApi

    token = resolve_token(token)
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for p, local in files.items()]
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model", token=token)
    return api.create_commit(
        repo_id,
        operations=operations,
        commit_message=commit_message,
        revision=revision,
        repo_type="model",
        token=token,
    )
