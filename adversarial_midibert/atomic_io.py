"""Writes that are all or nothing: files and folders written aside, flushed to disk, then renamed into place.

A run killed at any moment, or a full disk, leaves either the old content or the new one, never a mixture:

- :func:`atomic_write_text` / :func:`atomic_write_json` / :func:`atomic_copy_file`: one file, through a temporary
  file in the same folder;
- :func:`write_folder_aside`: a whole folder, built under a hidden temporary name beside it and swapped in;
- :func:`fsync_tree` / :func:`fsync_path`: make what was written durable before it is published by a rename;
- :func:`file_sha256`: what a reader checks a finished file against (checkpoints, data set shards);
- :class:`FolderLock`: one writer per output folder (a second concurrent run fails clearly instead of mixing its
  files with the first one's).

Temporary names start with ``.tmp-`` and folders being replaced are first renamed to ``.deleting-`` names, so a
reader that lists the parent folder never takes a half-written or half-deleted folder for a finished one.
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
    """Move the finished folder ``source`` to ``target`` (same file system), replacing any folder there.

    The old ``target`` is renamed away before ``source`` takes its name and is deleted afterwards, so ``target``
    always names a complete folder (or, for an instant after a crash, none).
    """
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
    """Build a folder under a temporary name beside ``target``; on success flush it and swap it in.

    Yields the temporary folder to write into. If the block raises, the temporary folder is deleted and ``target``
    is untouched. A ``target`` that is a symbolic link keeps its link: the folder it points to is replaced::

        with write_folder_aside("outputs/model") as tmp:
            model.save_pretrained(tmp)
    """
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
    """An exclusive lock on an output folder, held by one process at a time.

    The lock is ``fcntl.flock`` on a hidden file beside the folder (``.<name>.lock``; beside, because the folder
    itself may be replaced by :func:`write_folder_aside`), keyed on the folder's resolved path, so that a folder and
    a symbolic link to it share one lock. The operating system releases it when the process ends,
    however it ends, so a killed run never leaves a stale lock. A process may take the lock of a folder it already
    holds (nested ``with`` blocks). Use as a context manager, or ``acquire`` / ``release``::

        with FolderLock("data/composer"):
            ...  # write data/composer

    Args:
        folder: the folder to lock (it need not exist yet).

    Raises:
        FolderBusyError: from ``acquire`` when another process holds the lock (the message names the folder and
            that process's id).
    """

    _held: dict[str, list] = {}  # lock file -> [fd, depth] of the locks this process holds

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        resolved = Path(os.path.realpath(self.folder))
        self.path = resolved.with_name(f".{resolved.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; writes stay atomic, concurrent runs are not refused
            return self
        key = os.path.abspath(self.path)
        if key in FolderLock._held:
            FolderLock._held[key][1] += 1
            self._fd = FolderLock._held[key][0]
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FolderBusyError(f"{self.folder} is being written by another process (pid {holder}; lock "
                                      f"{self.path}); wait for it to finish or choose another folder") from None
            try:  # the holder before us may have removed the file after we opened it: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        FolderLock._held[key] = [fd, 1]
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        key = os.path.abspath(self.path)
        held = FolderLock._held.get(key)
        if held is not None and held[1] > 1:
            held[1] -= 1
            self._fd = None
            return
        FolderLock._held.pop(key, None)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
