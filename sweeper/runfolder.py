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


def atomic_write_json(path: str | Path, document: Any, *, indent: int = 1) -> Path:
    """``document`` as strict JSON (``allow_nan=False``: NaN/inf are not JSON; clean them
    first), written atomically."""
    text = json.dumps(document, indent=indent, allow_nan=False, default=str) + "\n"
    return atomic_write(path, text)


__all__ = ["atomic_write", "atomic_write_json"]
