"""The Hugging Face Hub side of the project, one module per job.

- :mod:`.card`: the model card (``README.md``): Hub metadata (``library_name``, ``pipeline_tag``, ``datasets``,
  ``model-index`` for every task) and text, from the package's ``model_card_template.md``.
- :mod:`.remote_code`: which code files a folder needs for ``trust_remote_code`` (``save_pretrained`` of the model
  and of the tokenizer writes them).
- :mod:`.upload`: the allow-list of files to publish and the one-commit upload (or a dry run).
- :mod:`.convert`: the converter of the authors' original checkpoints.
"""

from ._common import HubPublishError
from .card import KNOWN_TASKS, read_results, results_to_eval_results, write_model_card
from .remote_code import remote_code_files
from .upload import collect_upload_files, push_folder_to_hub, resolve_token, validate_repo_id

__all__ = [
    "HubPublishError",
    "KNOWN_TASKS",
    "collect_upload_files",
    "push_folder_to_hub",
    "read_results",
    "remote_code_files",
    "resolve_token",
    "results_to_eval_results",
    "validate_repo_id",
    "write_model_card",
]
