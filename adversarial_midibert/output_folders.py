"""Checks made before a command writes a folder or a file: it never replaces what it did not write, nor an input
(:func:`check_output_folder`, :func:`check_output_file`), and a name listed in a folder's index stays inside that
folder (:func:`resolves_inside`). Each fails before any work is done, with a one-line error naming the path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .atomic_io import TMP_PREFIX

__all__ = ["check_output_file", "check_output_folder", "describe_folder", "overlapping_input", "resolves_inside"]


def resolves_inside(folder: str | os.PathLike, name: str) -> bool:
    """Whether the relative name ``name`` (of a file listed in a folder's index) stays inside ``folder``: not
    absolute, no ``..`` out of it, no symbolic link out of it."""
    folder = Path(folder)
    return not Path(name).is_absolute() and (folder / name).resolve().is_relative_to(folder.resolve())


def describe_folder(folder: str | os.PathLike, is_ours: Callable[[Path, set[str]], bool]) -> str | None:
    """``None`` when ``folder`` may be written (missing, empty, or ``is_ours(folder, names)``), else what it holds
    (``"a file, not a folder"``, ``"a model folder (it has config.json)"``, ``"a folder with other content (...)"``).
    """
    folder = Path(folder)
    if not folder.exists():
        return None
    if not folder.is_dir():
        return "a file, not a folder"
    names = {p.name for p in folder.iterdir()}
    if not names or is_ours(folder, names):
        return None
    if "config.json" in names:
        return "a model folder (it has config.json)"
    return f"a folder with other content ({', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''})"


def overlapping_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> str | None:
    """The first of ``inputs`` that ``path`` is, or holds (``path`` an enclosing folder), compared by their real
    paths (symbolic links followed); None when there is none."""
    real = Path(os.path.realpath(path))
    for item in inputs:
        if item is None:
            continue
        other = Path(os.path.realpath(item))
        if other == real or real in other.parents:
            return str(item)
    return None


def check_output_folder(output_dir: str | os.PathLike, what: str, is_ours: Callable[[Path, set[str]], bool],
                        inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
                        overwrite_hint: str | None = "--overwrite_output_dir / overwrite=True") -> Path:
    """Fail before a long run when writing ``what`` into ``output_dir`` would lose something; return its absolute path.

    Refused with ``ValueError``: the file system's root, or a folder that is, or holds, one of ``inputs`` (symbolic
    links followed). Refused with ``FileExistsError`` unless ``overwrite``: an existing folder that
    :func:`describe_folder` does not call ours (``overwrite_hint`` says how the user asks to overwrite).
    """
    output_dir = Path(os.path.abspath(output_dir))
    if not output_dir.name:
        raise ValueError(f"output_dir {output_dir} is the file system's root; give a folder for the {what}")
    clash = overlapping_input(output_dir, inputs)
    if clash is not None:
        relation = "is" if os.path.realpath(clash) == os.path.realpath(output_dir) else "holds"
        raise ValueError(f"output_dir {output_dir} {relation} {clash}, an input of this run; refusing to replace it "
                         f"with the {what} (choose another folder)")
    kind = describe_folder(output_dir, is_ours)
    if kind is not None and not overwrite:
        how = f", or overwrite it with {overwrite_hint}" if overwrite_hint else ""
        raise FileExistsError(f"{output_dir} is {kind}; refusing to replace it with the {what} (choose another "
                              f"folder{how})")
    return output_dir


def check_output_file(path: str | os.PathLike, what: str = "--json", inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Fail now, with a one-line ``OSError`` / ``ValueError`` naming ``path``, if the file cannot be written there
    later (a folder in the way, a file where a folder should be, no permission) or if it would replace one of
    ``inputs`` or land inside an input folder (symbolic links followed). A temporary file is created and removed."""
    path = Path(path)
    clash = next((item for item in inputs if item is not None and overlapping_input(item, [path])), None)
    if clash is not None:
        raise ValueError(f"{what} {path} would be written over or inside {clash}, an input of this run; give "
                         "another file name")
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give a file name")
    probe = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OSError(f"{what} {path} cannot be written ({error.strerror or error})") from None
    return path
