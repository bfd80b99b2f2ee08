"""``adv-midibert``: the project's command line, installed by ``pip install adversarial-midibert``.

::

    adv-midibert prepare  --task composer --data_root DATA --output_dir data/composer   # or --midi_dir + --labels
    adv-midibert pretrain --dataset data/pretrain --output_dir outputs/pretrain
    adv-midibert finetune --dataset data/composer --model_name_or_path outputs/pretrain --output_dir outputs/composer
    adv-midibert predict  outputs/composer song.mid
    adv-midibert card     outputs/composer --repo_id org/name
    adv-midibert push     outputs/composer --repo_id org/name [--dry_run DIR]
    adv-midibert convert  --checkpoint ckpt.pt --dictionary Octuple.pkl --task mlm --output_dir converted
    adv-midibert embed    FOLDER --model outputs/pretrain --output_dir embeddings/mine   # a datasets folder
    adv-midibert search   query.mid --index embeddings/mine --top_k 10                   # needs the [search] extra

``prepare``, ``pretrain``, ``finetune`` and ``predict`` run the package's modules (``data.prepare``,
``training.pretrain``, ``training.finetune``, ``predict``), which ``examples/`` launches too, so ``adv-midibert finetune
ARGS`` and ``python examples/finetune.py ARGS`` are the same run; ``adv-midibert COMMAND --help`` shows a command's
flags. Several processes or GPUs: ``accelerate launch -m adversarial_midibert.cli pretrain ARGS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "main"]


# The training and data commands import their modules when run: `adv-midibert --help` needs none of the [train] extra.
def prepare(argv: list[str]) -> object:
    from .data.prepare import main as prepare_main

    return prepare_main(argv, prog="adv-midibert prepare")


def _training_command(name: str, run: Callable, argv: list[str]) -> object:
    """A training loop as a command: what it refuses (a data set, a folder, a flag's value) said in one line."""
    try:
        return run(argv, prog=f"adv-midibert {name}")
    except (ValueError, OSError) as error:
        print(f"adv-midibert {name}: error: {error}", file=sys.stderr)
        return 2


def pretrain(argv: list[str]) -> object:
    from .training.pretrain import main as pretrain_main

    return _training_command("pretrain", pretrain_main, argv)


def finetune(argv: list[str]) -> object:
    from .training.finetune import main as finetune_main

    return _training_command("finetune", finetune_main, argv)


def predict(argv: list[str]) -> object:
    from .predict import main as predict_main

    return predict_main(argv, prog="adv-midibert predict")


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expects NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip(), value.strip()


def push(argv: list[str], prog: str = "adv-midibert push") -> int:
    """Publish a trained folder to the Hub in one commit (or ``--dry_run DIR``)."""
    from pathlib import Path

    from .hub import HubPublishError, push_folder_to_hub

    parser = argparse.ArgumentParser(prog=prog, description=push.__doc__ + (
        " Uploads config.json, the weights, the model and tokenizer code files, octuple_tokenizer.json, "
        "tokenizer_config.json and README.md (the model card, written from all_results.json when the folder has "
        "none); never optimizer states, checkpoints or logs. The token comes from HF_TOKEN or `hf auth login`."))
    parser.add_argument("output_dir", type=Path, help="model folder written by save_pretrained")
    parser.add_argument("--repo_id", required=True, help="target repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing); default main")
    parser.add_argument("--commit_message", default="Upload Adversarial-MidiBERT model", help="commit message")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the cached login)")
    parser.add_argument("--dry_run", type=Path, default=None, metavar="DIR",
                        help="write the files that would be uploaded (the model card included) to DIR instead of "
                        "uploading; nothing is written anywhere else")
    parser.add_argument("--base_model", default=None, help="pre-trained model id, for the card when it is written")
    parser.add_argument("--training_command", default=None, help="the run's command line, for the card")
    args = parser.parse_args(argv)
    try:
        result = push_folder_to_hub(args.output_dir, args.repo_id, private=args.private, revision=args.revision,
                                    token=args.token, commit_message=args.commit_message, dry_run_dir=args.dry_run,
                                    base_model=args.base_model, training_command=args.training_command)
    except HubPublishError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    if args.dry_run is not None:
        files = sorted(p.relative_to(result).as_posix() for p in Path(result).rglob("*") if p.is_file())
        print(f"dry run: {len(files)} files written to {result} (nothing uploaded):")
        for name in files:
            print(f"  {name}")
    else:
        print(f"uploaded to {getattr(result, 'commit_url', result)}")
    return 0


def card(argv: list[str], prog: str = "adv-midibert card") -> int:
    """Write (or rewrite) the model card README.md of a trained folder from its all_results.json."""
    from pathlib import Path

    from .hub import HubPublishError, write_model_card

    parser = argparse.ArgumentParser(prog=prog, description=card.__doc__)
    parser.add_argument("output_dir", type=Path, help="model folder (holds config.json, maybe all_results.json)")
    parser.add_argument("--repo_id", default=None, help="Hub id shown in the loading examples")
    parser.add_argument("--base_model", default=None, help="Hub id of the pre-trained model it was fine-tuned from")
    parser.add_argument("--dataset", action="append", default=None, help="training data set (repeatable)")
    parser.add_argument("--task", default=None, help="task name (default: all_results.json's 'task')")
    parser.add_argument("--training_command", default=None, help="the run's exact command line")
    parser.add_argument("--hyperparameter", action="append", type=_key_value, default=[], metavar="NAME=VALUE",
                        help="a training hyper-parameter to list (repeatable)")
    parser.add_argument("--license", default="mit", help="license of the weights (SPDX id)")
    args = parser.parse_args(argv)
    try:
        path = write_model_card(args.output_dir, repo_id=args.repo_id, base_model=args.base_model,
                                datasets=args.dataset, task=args.task, training_command=args.training_command,
                                hyperparameters=dict(args.hyperparameter), license=args.license)
    except HubPublishError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def convert(argv: list[str], prog: str = "adv-midibert convert") -> int:
    """Convert a checkpoint of the authors' reference code into a Hub-ready model folder."""
    from .hub.convert import main as convert_main

    return convert_main(argv, prog=prog)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def embed(argv: list[str]) -> int:
    """Embed every MIDI file of folders/files into a datasets folder (file, embedding) for similarity search."""
    from pathlib import Path

    from .atomic_io import FolderBusyError
    from .similarity import INFO_FILE_NAME, POOLING, embed_files

    parser = argparse.ArgumentParser(prog="adv-midibert embed", description=embed.__doc__ + (
        f" The embedding of a piece is the {POOLING}. Files that cannot be read are skipped, listed here and in "
        f"{INFO_FILE_NAME}; the exit code is then 1."))
    parser.add_argument("inputs", nargs="+", help="MIDI files, or folders searched recursively for MIDI files")
    parser.add_argument("--model", required=True, help="model folder or Hub id (pre-trained or fine-tuned)")
    parser.add_argument("--output_dir", type=Path, required=True,
                        help="the datasets folder to write: new, empty, or an earlier one (replaced); never another")
    parser.add_argument("--segment_batch_size", type=_positive_int, default=8, help="segments per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda... (default: cuda when available)")
    parser.add_argument("--trust_remote_code", action="store_true", help="run the Hub repository's code (Hub ids)")
    args = parser.parse_args(argv)
    try:
        dataset, run = embed_files(args.model, args.inputs, args.output_dir, segment_batch_size=args.segment_batch_size,
                                   device=args.device, trust_remote_code=args.trust_remote_code)
    except (ValueError, OSError, FolderBusyError) as error:
        print(f"adv-midibert embed: error: {error}", file=sys.stderr)
        return 2
    for error in run.errors:
        print(f"skipped: {error['error']}", file=sys.stderr)
    print(f"wrote {args.output_dir}: {len(dataset)} pieces embedded, {len(run.errors)} skipped "
          f"(listed in {args.output_dir / INFO_FILE_NAME})")
    return 1 if run.errors else 0


def search(argv: list[str]) -> int:
    """Find the pieces of an embeddings folder nearest to a MIDI file (cosine similarity, datasets' faiss index)."""
    from pathlib import Path

    from .output_folders import check_output_file
    from .similarity import INDEX_FILE_NAME, search_inputs
    from .similarity import search as search_index

    parser = argparse.ArgumentParser(prog="adv-midibert search", description=search.__doc__ + (
        f" The index is built on the first query and saved in the folder ({INDEX_FILE_NAME}); later queries load "
        "it. Needs faiss: pip install adversarial-midibert[search]."))
    parser.add_argument("query", type=Path, help="the query MIDI file")
    parser.add_argument("--index", type=Path, required=True, help="a folder written by `adv-midibert embed`")
    parser.add_argument("--top_k", type=_positive_int, default=10, help="how many neighbours (default 10)")
    parser.add_argument("--model", default=None, help="the model (default: the one that embedded the folder)")
    parser.add_argument("--device", default=None, help="cpu, cuda... (default: cuda when available)")
    parser.add_argument("--trust_remote_code", action="store_true", help="run the Hub repository's code (Hub ids)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("adv-midibert search: error: faiss is not installed: pip install adversarial-midibert[search] "
              "(or pip install faiss-cpu)", file=sys.stderr)
        return 2
    if not args.query.is_file():
        print(f"adv-midibert search: error: {args.query}: MIDI file not found", file=sys.stderr)
        return 2
    try:
        if args.json is not None:  # before the search: never over an input, never lost to a bad path at the end
            check_output_file(args.json, "--json", inputs=search_inputs(args.query, args.index, args.model))
        result = search_index(args.query, args.index, top_k=args.top_k, model=args.model, device=args.device,
                              trust_remote_code=args.trust_remote_code)
    except (ValueError, OSError) as error:
        print(f"adv-midibert search: error: {error}", file=sys.stderr)
        return 2
    if args.json is not None:
        from .atomic_io import atomic_write_json

        atomic_write_json(args.json, result)
    print(f"{result['query']} ({result['num_notes']} notes): nearest of {args.index}"
          + (" (index built and saved)" if result["index_built"] else ""))
    for item in result["neighbours"]:
        print(f"{item['rank']:>4}  {item['score']:.4f}  {item['file']}")
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], object], str]] = {
    "prepare": (prepare, "build a data set (paper recipes, or your MIDI folder + labels "
                                                     "CSV)"),
    "pretrain": (pretrain, "adversarial masked-LM pre-training (Accelerate)"),
    "finetune": (finetune, "fine-tune on a sequence or token task (Accelerate)"),
    "predict": (predict, "classify MIDI files, or label their notes, with a fine-tuned model"),
    "card": (card, "write the model card of a trained folder"),
    "push": (push, "publish a trained folder to the Hugging Face Hub in one commit"),
    "convert": (convert, "convert a checkpoint of the authors' original code"),
    "embed": (embed, "embed MIDI files into a datasets folder (file, embedding) for similarity search"),
    "search": (search, "find the pieces nearest to a MIDI file in an embedded folder"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: adv-midibert COMMAND [ARGS...]   (adv-midibert COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``adv-midibert COMMAND ARGS``; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(f"adv-midibert {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"adv-midibert: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    result = COMMANDS[command][0](rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
