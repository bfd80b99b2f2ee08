"""Runs an example script as ``python SCRIPT ARGS``, then writes the fingerprint of each process's mask book
(:meth:`PackedMaskBook.fingerprint`) to ``<--output_dir>/mask_book_rank{RANK}.txt``: what the tests compare across
processes and across a resume. Usage: ``python tests/mask_book_probe.py examples/pretrain.py ARGS...``."""

from __future__ import annotations

import atexit
import os
import runpy
import sys
from pathlib import Path

from adversarial_midibert.mask_book import PackedMaskBook

books: list[PackedMaskBook] = []
_init = PackedMaskBook.__init__


def _recording_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    books.append(self)


def _write_fingerprint() -> None:
    if books and "--output_dir" in sys.argv:
        output_dir = Path(sys.argv[sys.argv.index("--output_dir") + 1])
        (output_dir / f"mask_book_rank{os.environ.get('RANK', '0')}.txt").write_text(books[-1].fingerprint() + "\n")


if __name__ == "__main__":
    PackedMaskBook.__init__ = _recording_init
    atexit.register(_write_fingerprint)
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
