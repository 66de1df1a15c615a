"""The run folder: its files, its lock, and the one way sweeper writes a file.

A run folder holds ``recipe.yaml`` (the recipe the sweep ran with), ``progress.json`` (the
driver's latest state, for ``sweeper status``), ``.driver.lock`` (held by the driver that
owns the folder), the Optuna journal, and the Parquet datasets ``trials/`` and ``curves/``.

Every file sweeper writes (Parquet parts, fit.json, exports, progress, the saved recipe) is
written whole under a hidden temporary name in the destination folder, flushed to disk, made
readable like any file the user writes (0644 under the usual umask: teammates on a shared
filesystem read results), then renamed into place with ``os.replace``, which is atomic on
POSIX. A reader sees the old file or the new one, never half of one, and a failed write
leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

import yaml

from sweeper.errors import SweeperError

if TYPE_CHECKING:
    from sweeper.recipe import Recipe

LOCK_FILE = ".driver.lock"
PROGRESS_FILE = "progress.json"
RECIPE_FILE = "recipe.yaml"


class DestinationError(SweeperError):
    """A file or folder sweeper was asked to write cannot be written there."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None] | bytes | str) -> Path:
    """Write ``path`` atomically. ``write`` is the content (bytes or text) or a function that
    writes the content to the binary stream it is given (e.g. pyarrow's ``write_table``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            if isinstance(write, str):
                stream.write(write.encode("utf-8"))
            elif isinstance(write, bytes):
                stream.write(write)
            else:
                write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates 0600; results are meant to be shared like any file the user writes.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, what: str) -> None:
    """The nearest existing folder above ``path`` must be a folder this process may write."""
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise DestinationError(f"{what} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DestinationError(
            f"{what} {path}: {ancestor} is not writable (read-only place or no permission)"
        )


def check_writable_file(path: str | Path, what: str) -> None:
    """Refuse, before any work, a destination file that is a folder or cannot be created."""
    path = Path(path)
    if path.is_dir():
        raise DestinationError(f"{what} {path}: is a folder; name a file to write")
    _check_creatable(path, what)


def check_writable_folder(path: str | Path, what: str) -> None:
    """Refuse, before any work, a destination folder that is a file or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DestinationError(f"{what} {path}: exists and is not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise DestinationError(
                f"{what} {path}: folder is not writable (read-only place or no permission)"
            )
        return
    _check_creatable(path, what)


def atomic_write_json(path: str | Path, document: Any, *, indent: int = 1) -> Path:
    """``document`` as strict JSON (``allow_nan=False``: NaN/inf are not JSON; clean them
    first), written atomically."""
    text = json.dumps(document, indent=indent, allow_nan=False, default=str) + "\n"
    return atomic_write(path, text)


class RunFolderLock:
    """Exclusive ownership of a run folder by one driver.

    flock, not a pid file: the kernel drops the lock the moment the holder dies, however it
    dies, so a leftover file never blocks a restart.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise SweeperError (exit code 3) naming its holder."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as error:
            raise DestinationError(
                f"run folder {self.path.parent}: cannot be created or written ({error.strerror})"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SweeperError(
                f"{self.path.parent}: run folder is in use by another sweeper driver ({holder}); "
                "wait for it to finish or stop it first",
                exit_code=3,
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle

    def check_free(self) -> None:
        """Raise SweeperError (exit code 3) at once when another driver holds the folder;
        changes nothing (a sweep checks this before its slower checks, then acquires)."""
        if not self.path.is_file():
            return
        try:
            handle = open(self.path)
        except OSError:
            return  # acquire() will name what is wrong
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = handle.read().strip() or "another process"
                raise SweeperError(
                    f"{self.path.parent}: run folder is in use by another sweeper driver ({holder}); "
                    "wait for it to finish or stop it first",
                    exit_code=3,
                ) from None
            fcntl.flock(handle, fcntl.LOCK_UN)

    def remove(self) -> None:
        """Release, and delete the lock file and the run folder it made (a refused sweep
        leaves nothing behind); a folder holding anything else is kept."""
        self.release()
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def save_recipe(recipe: Recipe, run_dir: Path) -> Path:
    """The recipe a sweep runs with, as ``recipe.yaml`` (what ``sweeper resume`` reads)."""
    text = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
    return atomic_write(Path(run_dir) / RECIPE_FILE, text)


def write_progress(run_dir: Path, progress: dict[str, Any]) -> Path:
    """The driver's state as ``progress.json`` (rewritten about once a second while it runs)."""
    return atomic_write(Path(run_dir) / PROGRESS_FILE, json.dumps(progress, indent=2, default=str))


def read_progress(run_dir: Path) -> dict[str, Any]:
    """``progress.json`` of ``run_dir``; empty when no driver has run there. A damaged one
    is refused by name (the next driver rewrites it)."""
    path = Path(run_dir) / PROGRESS_FILE
    if not path.is_file():
        return {}
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SweeperError(
            f"{path}: unreadable ({str(error).splitlines()[0][:120]}); the next `sweeper resume` rewrites it"
        ) from None
    if not isinstance(progress, dict):
        raise SweeperError(f"{path}: not a sweeper progress file")
    return progress


__all__ = [
    "DestinationError",
    "LOCK_FILE",
    "PROGRESS_FILE",
    "RECIPE_FILE",
    "RunFolderLock",
    "atomic_write",
    "atomic_write_json",
    "check_writable_file",
    "check_writable_folder",
    "read_progress",
    "save_recipe",
    "write_progress",
]
