"""Writes that are all or nothing: files and folders written aside, flushed to disk, then renamed into place, so that
a run killed at any moment, or a full disk, leaves the old content or the new one, never a mixture. Also
:func:`file_sha256` (what a reader checks a finished file against) and :class:`FolderLock` (one writer per output
folder). Temporary names start with ``.tmp-`` and folders being replaced are first renamed to ``.deleting-`` names, so
that no reader listing the parent takes a half-written or half-deleted folder for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".deleting-"


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or a folder's entries, to disk (a no-op where the platform cannot open folders)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # folders cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file and folder under ``folder`` (the folder included) to disk."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not path.is_symlink():
            fsync_path(path)
    fsync_path(folder)


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, flushed, then renamed over it: a
    reader (or a resumed run checking whether ``path`` exists) never sees a half-written file. Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_path(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> Path:
    """:func:`atomic_write_text` of ``json.dumps(data, indent=indent)``: the project's one JSON writer. NaN and
    infinities are written as ``NaN`` / ``Infinity`` (Python's ``json`` reads them back)."""
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_copy_file(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` to ``target`` through a temporary file beside ``target``, renamed over it when complete."""
    target = Path(target)
    tmp = target.with_name(f"{TMP_PREFIX}{target.name}.{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        remove_path(tmp)
    return target


def replace_folder(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move the finished folder ``source`` to ``target`` (same file system), replacing any folder there: the old one
    is renamed away first and deleted afterwards, so ``target`` always names a complete folder (or, after a crash,
    none)."""
    source, target = Path(source), Path(target)
    if target.exists() or target.is_symlink():
        trash = target.with_name(f"{TRASH_PREFIX}{target.name}.{os.getpid()}")
        remove_path(trash)
        os.replace(target, trash)
        os.replace(source, target)
        remove_path(trash)
    else:
        os.replace(source, target)
    fsync_path(target.parent)
    return target


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file, a symlink or a folder tree if it exists."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextmanager
def write_folder_aside(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` to write into; on success flush it and swap it in (if the block
    raises, it is deleted and ``target`` untouched). A symbolic link ``target`` keeps its link: the folder it points
    to is replaced."""
    target = Path(os.path.realpath(target)) if Path(target).is_symlink() else Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{TMP_PREFIX}{target.name}.{os.getpid()}")
    remove_path(tmp)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        replace_folder(tmp, target)
    finally:
        remove_path(tmp)


class FolderBusyError(RuntimeError):
    """Another process is writing the folder (it holds the folder's lock)."""


class FolderLock:
    """An exclusive lock on an output folder, held by one process at a time until ``release`` (or garbage collection).

    ``filelock.FileLock`` (``flock``: released by the operating system however the process ends) on a hidden file
    beside the folder (``.<name>.lock``, as the folder itself may be replaced), keyed on its resolved path. Written
    around filelock only to refuse at once with :class:`FolderBusyError` naming the folder, and to remove the lock
    file when the last hold ends.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        resolved = Path(os.path.realpath(self.folder))
        self.path = resolved.with_name(f".{resolved.name}.lock")
        self._lock = FileLock(self.path, is_singleton=True)  # one lock object per file in this process: re-entrant
        self._held = False

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            raise FolderBusyError(f"{self.folder} is being written by another process (lock {self.path}); wait for it "
                                  "to finish or choose another folder") from None
        self._held = True
        return self

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        if self._lock.lock_counter == 1:  # removed while still held: a process that locks the removed file retries
            self.path.unlink(missing_ok=True)
        self._lock.release()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
