"""Publishing a trained model folder to the Hugging Face Hub in one commit.

:func:`collect_upload_files` lists exactly the files a user needs from a ``save_pretrained`` folder (an allow-list:
config, weights, model and tokenizer code, tokenizer files, card; optimizer states, checkpoints and logs stay home),
every one resolving inside the folder. :func:`push_folder_to_hub` writes the model card if the folder has none and
uploads that list in one ``HfApi.create_commit``, or with ``dry_run_dir`` copies it to a folder and makes no network
call. Not ``upload_folder``: with ``hf_xet`` installed it may split the upload into several commits, and a
published model should appear whole or not at all.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from ..constants import TOKENIZER_CONFIG_FILE_NAME, TOKENIZER_FILE_NAME
from ._common import CONFIG_NAME, MODEL_CARD_NAME, HubPublishError, dry_run_folder, inside, read_json
from .card import write_model_card
from .remote_code import add_pipeline_code, remote_code_files

logger = logging.getLogger(__name__)

__all__ = ["collect_upload_files", "push_folder_to_hub", "resolve_token", "validate_repo_id"]

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def collect_upload_files(folder: str | Path, require_card: bool = True) -> dict[str, Path]:
    """Check a model folder and list exactly the files a Hub upload of it contains.

    The allow-list: ``config.json``; the weights (``model.safetensors``, or the index and the shards it names); the
    code files (:func:`~adversarial_midibert.hub.remote_code.remote_code_files`); the tokenizer files; ``README.md``.

    Args:
        folder: the model folder.
        require_card: whether a missing ``README.md`` is an error.

    Returns:
        path in the repository -> local file, sorted by path.

    Raises:
        HubPublishError: the folder does not exist, a required file is missing (the message names it and how to
            make it), or a file named by the folder's JSON files lies outside it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HubPublishError(f"model folder {folder} does not exist or is not a directory")
    files: dict[str, Path] = {CONFIG_NAME: folder / CONFIG_NAME}
    read_json(folder / CONFIG_NAME, what="model config (config.json)")

    if (folder / WEIGHTS_NAME).is_file():
        files[WEIGHTS_NAME] = folder / WEIGHTS_NAME
    elif (folder / WEIGHTS_INDEX_NAME).is_file():
        index = read_json(folder / WEIGHTS_INDEX_NAME, what="weights index")
        files[WEIGHTS_INDEX_NAME] = folder / WEIGHTS_INDEX_NAME
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise HubPublishError(f"weights index {folder / WEIGHTS_INDEX_NAME}: \"weight_map\" must be a non-empty "
                                  f"object {{parameter: shard file}}, found {type(weight_map).__name__}")
        for shard in sorted({str(name) for name in weight_map.values()}):
            name = repo_path(shard, f"weights shard named in {WEIGHTS_INDEX_NAME}")
            path = inside(folder, name, f"weights shard named in {WEIGHTS_INDEX_NAME}")
            if not path.is_file():
                raise HubPublishError(f"weights shard {path} named in {WEIGHTS_INDEX_NAME} is missing")
            files[name] = path
    else:
        raise HubPublishError(
            f"model weights missing: neither {folder / WEIGHTS_NAME} nor {folder / WEIGHTS_INDEX_NAME} exists "
            "(save the model with save_pretrained(..., safe_serialization=True))"
        )

    for name in (TOKENIZER_FILE_NAME, TOKENIZER_CONFIG_FILE_NAME):
        if not (folder / name).is_file():
            raise HubPublishError(
                f"tokenizer file missing: {folder / name} (write it with OctupleTokenizer.save_pretrained(folder))"
            )
        files[name] = folder / name
    files.update(remote_code_files(folder))

    card = folder / MODEL_CARD_NAME
    if card.is_file():
        files[MODEL_CARD_NAME] = card
    elif card.exists() or card.is_symlink():
        raise HubPublishError(f"model card {card} is not a file (remove it, or put the card there)")
    elif require_card:
        raise HubPublishError(f"model card missing: {folder / MODEL_CARD_NAME} (write it with write_model_card)")
    for name in files:  # the fixed names too: a symlink may point out of the folder
        inside(folder, name, "file")
    return dict(sorted(files.items()))


def repo_path(name: str, what: str) -> str:
    """``name`` if it is a clean relative path in a repository (``a/b.safetensors``); :class:`HubPublishError`
    otherwise. A name with ``..``, ``.``, empty parts, a backslash or a leading ``/`` is refused even when it
    resolves inside the folder: it would be written elsewhere by a dry run, and the Hub refuses it."""
    parts = name.split("/")
    if not name or "\\" in name or PurePosixPath(name).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise HubPublishError(f"{what} {name!r} is not a clean relative path (no '..', '.', empty parts, backslashes "
                              "or leading '/'); refusing to publish it")
    return name


def validate_repo_id(repo_id: str) -> None:
    """Check a Hub repository id (``"namespace/name"``, or ``"name"``) with huggingface_hub's validator; raise
    :class:`HubPublishError` if bad."""
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as _validate

    try:
        _validate(repo_id)
    except HFValidationError as error:
        raise HubPublishError(f"invalid --repo_id {repo_id!r}: {error}") from error


def resolve_token(token: str | None = None) -> str:
    """The Hub token to use: ``token`` if given, else ``HF_TOKEN`` / the cached ``hf auth login``; a
    :class:`HubPublishError` when there is none."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubPublishError(
            "no Hugging Face token found: set the HF_TOKEN environment variable or run `hf auth login` "
            "(nothing was uploaded)"
        )
    return token


def _copy_aside(files: dict[str, Path], target: Path, folder: Path, card_info: dict[str, Any] | None = None) -> Path:
    """Copy the upload's files into ``target`` (new or empty), through a folder swapped in when complete.

    With ``card_info`` (the model ``folder`` has no card), the copy alone gets what a real push adds to the folder:
    the pipeline code and the card. ``target`` holds exactly what a push would upload."""
    with dry_run_folder(target) as staging:
        for path_in_repo, local in files.items():
            destination = staging / path_in_repo
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, destination)
        if card_info is not None:
            add_pipeline_code(staging)  # the copy's config.json gets custom_pipelines, as the folder's would
            write_model_card(folder, output=staging / MODEL_CARD_NAME, **card_info)
    return target


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

    The allow-listed files (:func:`collect_upload_files`) and, if the folder has none, a ``README.md`` from
    :func:`~adversarial_midibert.hub.card.write_model_card` (in a dry run into ``dry_run_dir`` only) are either
    copied to ``dry_run_dir`` (no token, no network) or committed with ``create_repo(exist_ok=True)``,
    ``create_branch`` for a revision and one ``create_commit``. Every check happens before the first network call.

    Args:
        folder: the model folder.
        repo_id: target Hub repository, ``"namespace/name"``.
        private: create the repository as private (has no effect on an existing repository).
        revision: branch to commit to (created from the default branch if missing); None for ``main``.
        token: Hub token; defaults to ``HF_TOKEN`` or the cached login.
        commit_message: the commit's message.
        dry_run_dir: write the upload's files to this new or empty folder instead, and return its path.
        **card_info: keyword arguments for ``write_model_card`` when the card must be written.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the commit, or the ``dry_run_dir`` path.

    Raises:
        HubPublishError: bad repo id, missing token (not in a dry run), a required file missing from the folder, a
            card whose examples load another repository, or a non-empty ``dry_run_dir``.
    """
    folder = Path(folder)
    validate_repo_id(repo_id)
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise HubPublishError(f"invalid --revision {revision!r}: give a branch name")
    files = collect_upload_files(folder, require_card=False)  # fail on missing files before writing anything
    card_text = files[MODEL_CARD_NAME].read_text(encoding="utf-8") if MODEL_CARD_NAME in files else ""
    if "from_pretrained(" in card_text and f'from_pretrained("{repo_id}"' not in card_text:  # written for another id
        raise HubPublishError(f"{files[MODEL_CARD_NAME]} loads another repository than {repo_id}: rewrite it with "
                              f"`adv-midibert card {folder} --repo_id {repo_id}` (or edit it)")
    if dry_run_dir is not None:  # writes only into dry_run_dir, the card too
        card = None if MODEL_CARD_NAME in files else {"repo_id": repo_id, **card_info}
        target = _copy_aside(files, Path(dry_run_dir), folder, card)
        logger.info("dry run: wrote the %d files of the upload to %s", len(files) + (card is not None), target)
        return target
    if MODEL_CARD_NAME not in files:
        write_model_card(folder, repo_id=repo_id, **card_info)
    files = collect_upload_files(folder, require_card=True)

    from huggingface_hub import CommitOperationAdd, HfApi

    token = resolve_token(token)
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for p, local in files.items()]
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model", token=token)
    return api.create_commit(repo_id, operations=operations, commit_message=commit_message, revision=revision,
                             repo_type="model", token=token)
