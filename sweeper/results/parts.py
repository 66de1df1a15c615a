"""Part files of a dataset folder: how they are named and in which order they were written.

A part's name is ``<sequence>-<kind>.parquet``: the sequence number orders parts by write
time, which is what lets readers keep a trial's latest rows when it appears in several
parts. Names without a number (written before parts were numbered) count as older than
every numbered part. Hidden names ('.' or '_' first) are never parts: temporaries in
flight, and the ``_damaged`` folder where compaction sets aside unreadable files.
"""

from __future__ import annotations

import re
from pathlib import Path

_SEQUENCED = re.compile(r"^(\d{9})-")


def part_sequence(path: Path) -> int:
    """The write order of a part file: its sequence number, -1 for an unnumbered name."""
    match = _SEQUENCED.match(path.name)
    return int(match.group(1)) if match else -1


def part_order(path: Path) -> tuple[int, str]:
    return part_sequence(path), path.name


def sequenced_name(sequence: int, kind: str) -> str:
    return f"{sequence:09d}-{kind}"


def part_files(dataset_dir: Path) -> list[Path]:
    """The visible part files of a dataset folder, oldest first."""
    if not dataset_dir.is_dir():
        return []
    return sorted(
        (p for p in dataset_dir.glob("*.parquet") if not p.name.startswith((".", "_"))), key=part_order
    )


def next_sequence(*dataset_dirs: Path) -> int:
    """One more than the highest sequence number among the parts of ``dataset_dirs``."""
    return 1 + max((part_sequence(p) for folder in dataset_dirs for p in part_files(folder)), default=-1)
