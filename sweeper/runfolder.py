"""The run folder's file primitives: the one way sweeper writes a file.

Every file sweeper writes (Parquet parts, fit.json, exports, progress, the saved recipe) is
written whole under a hidden temporary name in the destination folder, flushed to disk, made
readable like any file the user writes (0644 under the usual umask: teammates on a shared
filesystem read results), then renamed into place with ``os.replace``, which is atomic on
POSIX. A reader sees the old file or the new one, never half of one, and a failed write
leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, BinaryIO

from sweeper.errors import SweeperError


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
        raise DestinationError(f"{what} {path}: {ancestor} is not writable (read-only place or no permission)")


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
            raise DestinationError(f"{what} {path}: folder is not writable (read-only place or no permission)")
        return
    _check_creatable(path, what)


def atomic_write_json(path: str | Path, document: Any, *, indent: int = 1) -> Path:
    """``document`` as strict JSON (``allow_nan=False``: NaN/inf are not JSON; clean them
    first), written atomically."""
    text = json.dumps(document, indent=indent, allow_nan=False, default=str) + "\n"
    return atomic_write(path, text)


__all__ = ["DestinationError", "atomic_write", "atomic_write_json", "check_writable_file", "check_writable_folder"]
