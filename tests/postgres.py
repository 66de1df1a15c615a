"""A throwaway PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` binaries
(``initdb``, ``pg_ctl``), a fresh data folder, a free port on 127.0.0.1, stopped on exit.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the server runs
as the ``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _binaries() -> Path | None:
    for candidate in [
        shutil.which("pg_ctl"),
        *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True),
    ]:
        if candidate and Path(candidate).with_name("initdb").exists():
            return Path(candidate).resolve().parent
    return None


def unavailable() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    if _binaries() is None:
        return "PostgreSQL server binaries (Debian package postgresql) are not installed"
    try:
        import psycopg2  # noqa: F401 (SQLAlchemy's driver for postgresql:// URLs)
    except ImportError:
        return "psycopg2 (pip psycopg2-binary, in the test extras) is not installed"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield its SQLAlchemy URL (database ``postgres``, no password)."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    binaries = _binaries()
    folder = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=on",
        )
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
