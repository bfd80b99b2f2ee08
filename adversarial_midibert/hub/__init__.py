"""The Hugging Face Hub side of the project, one module per job: the model card (:mod:`.card`), the code files of
``trust_remote_code`` (:mod:`.remote_code`), the one-commit upload (:mod:`.upload`) and the converter of the
authors' checkpoints (:mod:`.convert`)."""

from ._common import HubPublishError
from .card import KNOWN_TASKS, read_results, results_to_eval_results, write_model_card
from .remote_code import remote_code_files
from .upload import collect_upload_files, push_folder_to_hub, resolve_token, validate_repo_id

__all__ = ["HubPublishError", "KNOWN_TASKS", "collect_upload_files", "push_folder_to_hub", "read_results",
           "remote_code_files", "resolve_token", "results_to_eval_results", "validate_repo_id", "write_model_card"]
