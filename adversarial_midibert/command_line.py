"""The command as the user typed it, recorded in model cards and results files."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
    """``prog`` (``adv-midibert finetune``, ``python examples/finetune.py``) and the arguments (``sys.argv[1:]`` when
    ``argv`` is None), quoted as a shell reads them back."""
    return " ".join([prog, shlex.join(sys.argv[1:] if argv is None else argv)]).rstrip()
