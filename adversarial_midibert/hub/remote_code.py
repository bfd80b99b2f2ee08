"""Which code files a model folder needs so that it loads with ``trust_remote_code=True``.

``save_pretrained`` writes them (the model's and the tokenizer's, named by the ``auto_map`` of ``config.json`` and
``tokenizer_config.json``); :func:`remote_code_files` finds them: the modules named by those ``auto_map`` entries and
by ``custom_pipelines``, and every module they import relatively, as transformers'
``get_class_from_dynamic_module`` will; each must be a module of the folder itself. :func:`add_pipeline_code` makes a
folder carry its pipeline too; :func:`~adversarial_midibert.hub.card.write_model_card` calls it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..atomic_io import atomic_copy_file, atomic_write_json
from ..constants import TOKENIZER_CONFIG_FILE_NAME
from ._common import CONFIG_NAME, HubPublishError, inside, read_json

__all__ = ["add_pipeline_code", "auto_map_modules", "remote_code_files"]

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def auto_map_modules(auto_map: dict, source: Path) -> list[str]:
    """Module names of the classes an ``auto_map`` refers to in the same repository (``"module.Class"``).

    Entries pointing to another repository (``"org/name--module.Class"``) are not this folder's code and are skipped.

    Raises:
        HubPublishError: an entry is not of the form ``module.Class`` with a plain module name.
    """
    modules = []
    for auto_class, reference in auto_map.items():
        for item in reference if isinstance(reference, (list, tuple)) else [reference]:
            if item is None:
                continue
            if not isinstance(item, str) or "." not in item:
                raise HubPublishError(f"{source}: auto_map[{auto_class!r}] = {item!r} is not 'module.Class'")
            if "--" in item:  # code that lives in another repository
                continue
            module = item.rsplit(".", 1)[0]
            if not _MODULE.fullmatch(module):
                raise HubPublishError(
                    f"{source}: auto_map[{auto_class!r}] = {item!r} does not name a module of this folder"
                )
            modules.append(module)
    return list(dict.fromkeys(modules))


def _relative_imports(path: Path) -> list[str]:
    """The modules ``path`` imports relatively, found as transformers' loader finds them (``get_relative_imports``).
    The walk over them stays in :func:`remote_code_files`: ``get_relative_import_files`` neither names a missing file
    nor refuses one that lies outside the folder."""
    from transformers.dynamic_module_utils import get_relative_imports

    try:
        return sorted(get_relative_imports(path))
    except (OSError, UnicodeDecodeError) as error:
        raise HubPublishError(f"code file {path} cannot be read as Python: {error}") from error


def remote_code_files(folder: str | Path) -> dict[str, Path]:
    """The code files of ``folder`` that ``trust_remote_code`` loading runs: name -> path, sorted.

    Raises:
        HubPublishError: ``config.json`` has no ``auto_map``; a referenced module is missing, or lies outside the
            folder, or imports beyond it.
    """
    folder = Path(folder)
    config = read_json(folder / CONFIG_NAME, what="model config (config.json)")
    if not config.get("auto_map"):
        raise HubPublishError(
            f"{folder / CONFIG_NAME} has no 'auto_map', so the model cannot be loaded with trust_remote_code=True; "
            "save it with save_pretrained after `import adversarial_midibert` (which registers the Auto classes)"
        )
    pending = auto_map_modules(config["auto_map"], folder / CONFIG_NAME)
    pending += auto_map_modules({task: info.get("impl") if isinstance(info, dict) else info
                                 for task, info in (config.get("custom_pipelines")
                                                    or {}).items()}, folder / CONFIG_NAME)
    tokenizer_config = folder / TOKENIZER_CONFIG_FILE_NAME
    if tokenizer_config.is_file():
        pending += auto_map_modules(read_json(tokenizer_config, "tokenizer config").get("auto_map") or {},
                                    tokenizer_config)
    files: dict[str, Path] = {}
    while pending:
        module = pending.pop(0)
        name = f"{module}.py"
        if name in files:
            continue
        if not _MODULE.fullmatch(module):
            raise HubPublishError(f"code module {module!r} is not a module of the folder {folder}")
        path = inside(folder, name, "code file")
        if not path.is_file():
            raise HubPublishError(
                f"code file missing: {path} (needed for trust_remote_code=True); save_pretrained of the model and of "
                "the tokenizer writes their code files"
            )
        files[name] = path
        pending.extend(_relative_imports(path))
    return dict(sorted(files.items()))


def add_pipeline_code(folder: str | Path, task: str | None = None) -> str:
    """Make a model folder carry its MIDI pipeline as Hub remote code; return the task.

    Writes ``custom_pipelines`` (the folder's one task) into ``folder/config.json`` and copies ``pipelines.py`` and
    the modules it imports relatively beside the model code, each written aside and renamed, so that
    ``pipeline(model=folder_or_hub_id, trust_remote_code=True)`` needs neither this package nor a task name. The task
    follows the head (:func:`~adversarial_midibert.pipelines.pipeline_task_of`).

    Args:
        folder: a model folder written by ``save_pretrained`` (``config.json`` with ``architectures``).
        task: the pipeline task; by default the one of the folder's architecture.

    Raises:
        HubPublishError: ``config.json`` is missing or unreadable, or ``task`` is not a MIDI pipeline task.
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    from ..pipelines import PIPELINES, pipeline_task_of

    folder = Path(folder)
    config = read_json(folder / CONFIG_NAME, what="model config (config.json)")
    task = task or pipeline_task_of((config.get("architectures") or ["AdvMidiBertModel"])[0])
    if task not in PIPELINES:
        raise HubPublishError(f"unknown MIDI pipeline task {task!r}; expected one of {sorted(PIPELINES)}")
    pipeline_class, model_class = PIPELINES[task]
    module = pipeline_class.__module__.rsplit(".", 1)[-1]
    config["custom_pipelines"] = {task: {"impl": f"{module}.{pipeline_class.__name__}", "pt": [model_class.__name__],
                                         "type": "multimodal"}}
    # the files transformers' custom_object_save would copy (the module and what it imports relatively), each written
    # aside and renamed: custom_object_save copies in place
    source = Path(sys.modules[pipeline_class.__module__].__file__)
    for path in (source, *map(Path, get_relative_import_files(source))):
        atomic_copy_file(path, folder / path.name)
    atomic_write_json(folder / CONFIG_NAME, config)
    return task
