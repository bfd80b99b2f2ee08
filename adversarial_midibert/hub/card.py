"""The model card (``README.md``) of a model folder: Hub metadata and text, rendered from the run's facts.

The metadata (YAML front matter) is what the Hub needs to list and use the model: ``library_name``,
``pipeline_tag``, license, tags, base model, ``datasets`` and a ``model-index`` with the results of any task. The
text is the package's ``model_card_template.md``, filled in by ``huggingface_hub.ModelCard``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_write_text
from ..constants import ATTRIBUTE_NAMES, TOKENIZER_FILE_NAME
from ..pipelines import MIDI_CLASSIFICATION, MIDI_TOKEN_CLASSIFICATION
from ..tasks import TASKS
from ._common import CONFIG_NAME, MODEL_CARD_NAME, RESULTS_NAME, HubPublishError, read_json

__all__ = ["DEFAULT_TAGS", "KNOWN_TASKS", "PIPELINE_TAG", "TEMPLATE_PATH", "read_results", "results_to_eval_results",
           "write_model_card"]

TEMPLATE_PATH = Path(__file__).resolve().parent / "model_card_template.md"
# The Hub's task list has no symbolic-music task: "other" is its category for such models.
PIPELINE_TAG = "other"
# Which pipeline task (and model-index task type) serves each of our task types.
PIPELINE_TASKS = {"sequence": MIDI_CLASSIFICATION, "token": MIDI_TOKEN_CLASSIFICATION}

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

DEFAULT_TAGS: tuple[str, ...] = ("symbolic-music", "midi", "music", "octuple", "music-understanding",
                                 "adversarial-midibert", "bert")

KNOWN_TASKS = TASKS  # the data set each task uses and, for the paper's four, the accuracy it reports

_SPLIT_PREFIXES = {"test_": "test", "eval_": "validation", "validation_": "validation"}
_METRIC_NAMES = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1_macro": ("f1", "F1 (macro)"),
    "piece_accuracy": ("accuracy", "Accuracy (per piece)"),
    "piece_f1_macro": ("f1", "F1 (macro, per piece)"),
    "f1": ("f1", "F1"),
    "f1_weighted": ("f1", "F1 (weighted)"),
    "precision_macro": ("precision", "Precision (macro)"),
    "recall_macro": ("recall", "Recall (macro)"),
}


def read_results(folder: str | Path) -> dict[str, Any]:
    """``all_results.json`` of ``folder`` (an empty dict when absent); :class:`HubPublishError` if not an object."""
    path = Path(folder) / RESULTS_NAME
    return read_json(path, what="results") if path.is_file() else {}


def _dataset_type(dataset_name: str, known: Mapping[str, Any]) -> str:
    return known.get("dataset_type") or str(dataset_name).lower().replace(" ", "-")


def results_to_eval_results(
    results: Mapping[str, Any],
    task: str | None = None,
    dataset_name: str | None = None,
    dataset_type: str | None = None,
    task_type: str | None = None,
) -> list:
    """Turn ``all_results.json``-style metrics into ``huggingface_hub.EvalResult`` entries (the ``model-index``).

    Numeric keys that start with ``test_``, ``eval_`` or ``validation_`` become one result each (the prefix names
    the split; losses, runtimes, counts and ``*_per_second`` are left out); accuracies stay fractions.

    Args:
        results: the metrics, e.g. ``{"test_accuracy": 0.93, "test_f1_macro": 0.91, "task": "melody"}``.
        task: task name; defaults to ``results["task"]``.
        dataset_name: the data set the results were measured on; defaults to ``results["dataset_name"]`` /
            ``results["dataset"]``, the known task's data set, else the task name.
        dataset_type: data set id for the model-index (a Hub data set id when there is one); defaults to a
            lower-case ``dataset_name``.
        task_type: ``sequence``, ``token`` or ``pretrain``; defaults to ``results["task_type"]`` or the known
            task's type. The model-index task type is the pipeline task that serves it.
    """
    from huggingface_hub import EvalResult

    task = task or results.get("task")
    known = KNOWN_TASKS.get(str(task), {})
    dataset_name = (dataset_name or results.get("dataset_name") or results.get("dataset") or known.get("dataset_name")
                    or (str(task) if task else None))
    task_type = task_type or results.get("task_type") or known.get("task_type") or "sequence"
    if not dataset_name:
        return []
    dataset_type = dataset_type or _dataset_type(dataset_name, known)
    entries = []
    for key, value in results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        split = next((s for p, s in _SPLIT_PREFIXES.items() if key.startswith(p)), None)
        if split is None:
            continue
        metric = key.split("_", 1)[1]
        if metric in ("loss", "runtime", "samples", "steps") or metric.endswith(("per_second", "scored")) or \
                metric.startswith("num_"):  # counts (pieces, segments) are not metrics
            continue
        metric_type, metric_name = _METRIC_NAMES.get(metric, (metric, metric.replace("_", " ")))
        entries.append(
            EvalResult(
                task_type=PIPELINE_TASKS.get(str(task_type), str(task_type)),
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
    output: str | Path | None = None,
    **extra_info: Any,
) -> Path:
    """Render the model card ``README.md`` of a model folder (metadata + text) and write it there, after giving the
    folder its pipeline as remote code (:func:`~adversarial_midibert.hub.remote_code.add_pipeline_code`).

    Args:
        folder: the model folder (must hold ``config.json``); ``README.md`` is written there.
        repo_id: the Hub repository id used in the loading examples (defaults to the folder name).
        model_name: the title of the card and the model-index name (defaults to the repo name).
        base_model: Hub id of the pre-trained model this one was fine-tuned from, if any.
        datasets: data sets the model was trained on (Hub data set ids where they exist; a string or a list);
            defaults to ``dataset_name``.
        task: task name (``composer``, ``emotion``, ``melody``, ``velocity``, ``pretrain`` or any other); defaults to
            ``results["task"]``, else ``"pretrain"`` for a masked-LM folder.
        task_type: ``sequence``, ``token`` or ``pretrain``; inferred from the task or the architecture.
        dataset_name: the data set the results were measured on (defaults to ``results["dataset"]``, the known
            task's data set, the first of ``datasets``, else the task name).
        training_command: the exact command line of the run, shown verbatim (default: ``results["command"]``).
        hyperparameters: training hyper-parameters (name -> value), shown as a table; default ``results``' own.
        results: metrics to report; defaults to ``folder/all_results.json``.
        license: SPDX license id of the weights (default ``mit``).
        tags: extra Hub tags, added to :data:`DEFAULT_TAGS`.
        notes: free text added under "Training details".
        template_path: a Jinja2 card template; defaults to the package's ``model_card_template.md``.
        output: where to write the card instead of ``folder/README.md`` (the dry run of an upload).
        **extra_info: other facts of the run (name -> value), listed with the hyper-parameters and the data split.

    Raises:
        HubPublishError: ``config.json`` is missing or unreadable, or ``all_results.json`` is not a JSON object.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from .remote_code import add_pipeline_code

    folder = Path(folder)
    if output is None:  # a dry run writes only into its own folder: the model folder is left as it is
        add_pipeline_code(folder)  # the card's pipeline example then runs from the folder alone (trust_remote_code)
    config = read_json(folder / CONFIG_NAME, what="model config (config.json)")
    results = dict(results) if results is not None else read_results(folder)
    architecture = (config.get("architectures") or ["AdvMidiBertModel"])[0]
    auto_class = ARCHITECTURE_TO_AUTO.get(architecture, "AutoModel")

    task = task or results.get("task") or config.get("finetuning_task") or (
        "pretrain" if architecture.endswith("MaskedLM") else None)
    known = KNOWN_TASKS.get(str(task), {})
    if task_type is None:
        task_type = results.get("task_type") or known.get("task_type") or {
            "AutoModelForMaskedLM": "pretrain", "AutoModelForTokenClassification": "token", "AutoModel": "pretrain",
        }.get(auto_class, "sequence")
    if isinstance(datasets, str):
        datasets = [datasets]
    datasets = [str(d) for d in (datasets or [])]
    dataset_name = (dataset_name or results.get("dataset_name") or results.get("dataset") or known.get("dataset_name")
                    or (datasets[0] if datasets else None) or (str(task) if task and task != "pretrain" else None))
    datasets = datasets or ([dataset_name] if dataset_name else [])
    repo_id = repo_id or folder.resolve().name
    model_name = model_name or repo_id.split("/")[-1]
    pipeline_task = PIPELINE_TASKS.get(str(task_type))

    eval_results = results_to_eval_results(
        results, task=task, dataset_name=dataset_name, task_type=task_type,
        dataset_type=datasets[0] if datasets and "/" in datasets[0] else None,
    ) if task_type != "pretrain" else []
    all_tags = list(dict.fromkeys([*DEFAULT_TAGS, *(tags or []), *([str(task)] if task else []),
                                   *([pipeline_task] if pipeline_task else [])]))
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=all_tags,
        base_model=base_model,
        datasets=datasets or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
    )
    card_data.arxiv = PAPER_ARXIV  # shown by the Hub as a link to the paper

    result_rows = _result_rows(eval_results, known)
    shown_elsewhere_or_long = ("label_names", "history", "train_log", "hyperparameters")
    other_results = {k: v for k, v in results.items() if k not in shown_elsewhere_or_long}
    hyperparameters = hyperparameters or results.get("hyperparameters") or {}
    run_facts = {"data split": results.get("split_source"), **dict(hyperparameters), **extra_info}
    hyper_rows = [(k, v) for k, v in run_facts.items() if v is not None]

    template_kwargs = {
        "model_name": model_name,
        "repo_id": repo_id,
        "task": task,
        "task_title": known.get("name") or (str(task).replace("_", " ").replace("-", " ").capitalize() if task
                                            else None),
        "task_type": task_type,
        "pipeline_task": pipeline_task,
        "auto_class": auto_class,
        "base_model": base_model,
        "datasets": datasets,
        "dataset_name": dataset_name,
        "architecture_table": _markdown_table(_architecture_rows(config, results, task_type), ("", "")),
        "results_table": _markdown_table(result_rows, ("Data set", "Split", "Metric", "Value (%)", "Paper (%)"))
        if result_rows else "",
        "has_paper_column": any(row[-1] for row in result_rows),
        "raw_results": json.dumps(other_results, indent=2, sort_keys=True) if other_results else "",
        "hyperparameters_table": _markdown_table(hyper_rows, ("Hyper-parameter", "Value")) if hyper_rows else "",
        "training_command": training_command or results.get("command"),
        "notes": notes,
        "paper_title": PAPER_TITLE,
        "paper_url": PAPER_URL,
        "citation": PAPER_BIBTEX,
        "tokenizer_file": TOKENIZER_FILE_NAME,
    }
    template = Path(template_path) if template_path else TEMPLATE_PATH
    if not template.is_file():
        raise HubPublishError(f"model card template {template} not found")
    card = ModelCard.from_template(card_data, template_path=str(template), **template_kwargs)
    return atomic_write_text(Path(output) if output is not None else folder / MODEL_CARD_NAME, str(card))


def _architecture_rows(config: Mapping[str, Any], results: Mapping[str, Any], task_type: str) -> list[tuple]:
    """The card's architecture table: sizes, vocabulary, labels and hidden attributes of the saved model."""
    rows = [
        ("Architecture", (config.get("architectures") or ["AdvMidiBertModel"])[0]),
        ("Layers", config.get("num_hidden_layers", "?")),
        ("Hidden size", config.get("hidden_size", "?")),
        ("Attention heads", config.get("num_attention_heads", "?")),
        ("Feed-forward size", config.get("intermediate_size", "?")),
        ("Max segment length (notes)", config.get("max_position_embeddings", config.get("max_seq_len", "?"))),
        ("Position embedding", config.get("position_embedding_type", "?")),
    ]
    attribute_names = config.get("attribute_names") or list(ATTRIBUTE_NAMES)
    if config.get("vocab_sizes"):
        rows.append(("Vocabulary sizes", ", ".join(f"{n} {v}" for n, v in zip(attribute_names, config["vocab_sizes"]))))
    label_names = results.get("label_names") or list((config.get("id2label") or {}).values())
    if label_names and task_type != "pretrain":
        rows.append(("Labels", ", ".join(str(x) for x in label_names)))
    if config.get("hidden_attributes"):
        rows.append(("Attributes hidden from the model", ", ".join(str(h) for h in config["hidden_attributes"])))
    return rows


def _result_rows(eval_results: Sequence[Any], known: Mapping[str, Any]) -> list[tuple]:
    """The card's results table: one row per ``EvalResult`` (fractions as %), the paper's test accuracy beside."""
    rows = []
    for entry in eval_results:
        paper = ""
        if entry.metric_name == "Accuracy" and "paper_accuracy" in known and entry.dataset_split == "test":
            paper = f"{known['paper_accuracy']:.2f}"
        value = entry.metric_value
        if entry.metric_type in ("accuracy", "f1", "precision", "recall") and 0 <= value <= 1:
            value *= 100
        rows.append((entry.dataset_name, entry.dataset_split, entry.metric_name, f"{value:.2f}", paper))
    return rows
