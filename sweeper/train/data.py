"""Training data: one token stream per DataSource, split into train and validation, and the
batches a trial draws from it.

Sources (``trainspec.DataSettings``, the recipe's ``data:``):
- builtin: the Python standard library's top-level ``*.py`` files (sorted by name, read as
  bytes, concatenated, truncated to ``max_bytes``); byte-level tokens, vocabulary 256. Needs
  no network and is the same on every machine running one Python version.
- text: a file's bytes, byte-level tokens.
- tokens: a nanoGPT-style flat binary of token ids (``uint16`` or ``uint32``), memory-mapped.

The validation split is the tail ``val_fraction`` of the stream. A corpus is loaded once per
process (and per file version) and shared by every trial of that process.

Batches are a pure function of (seed, step): a trial's sampler draws random window offsets
from a ``torch.Generator`` seeded with the trial seed, so trials with one seed see the same
data in the same order (fused training shares one batch among its members). Validation
windows are evenly spaced over the validation split and depend only on the corpus, seq_len
and the count asked for, so every trial is measured on the same tokens.
"""

from __future__ import annotations

import functools
import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweeper.errors import SweeperError
from sweeper.trainspec import DataSettings, as_data_settings


class DataError(SweeperError):
    """A data source that cannot feed the recipe's trials; found before any trial runs."""


VAL_BATCH_SEQUENCES = 16  # sequences per validation batch, fixed so every trial sees the same
BYTE_VOCAB = 256


@dataclass(frozen=True)
class Corpus:
    """A token stream split into ``train`` and ``val`` (1-D integer tensors, ids < vocab).

    ``identity`` is the first 16 hex digits of sha256 over a description of the token kind
    and the stream's bytes; ``max_token`` is the largest id (checked against the model's
    vocabulary before training).
    """

    train: torch.Tensor
    val: torch.Tensor
    identity: str
    vocab_hint: int  # 256 for byte-level data, max_token + 1 for token files
    max_token: int


def builtin_corpus_bytes(max_bytes: int) -> bytes:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[bytes] = []
    size = 0
    for path in sorted(stdlib.glob("*.py"), key=lambda p: p.name):
        if size >= max_bytes:
            break
        data = path.read_bytes()
        parts.append(data)
        size += len(data)
    return b"".join(parts)[:max_bytes]


def _cache_key(source: DataSettings) -> tuple:
    """What identifies the stream: the source settings and, for files, the file's version
    (a file rewritten in place during a long-lived worker must not be served stale)."""
    if source.source == "builtin":
        return ("builtin", sysconfig.get_paths()["stdlib"], source.max_bytes, source.val_fraction)
    assert source.path is not None
    path = Path(source.path).expanduser().resolve()
    stat = path.stat()
    return (source.source, str(path), stat.st_size, stat.st_mtime_ns, source.dtype, source.val_fraction)


@functools.lru_cache(maxsize=8)
def _load(key: tuple) -> Corpus:
    kind = key[0]
    if kind in ("builtin", "text"):
        raw = builtin_corpus_bytes(key[2]) if kind == "builtin" else Path(key[1]).read_bytes()
        if not raw:
            raise DataError(
                f"data.path {key[1]}: the text file is empty"
                if kind == "text"
                else "data (builtin): no standard-library sources found to read"
            )
        stream = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        description = f"bytes:vocab{BYTE_VOCAB}:".encode()
        stream_bytes = raw
        vocab_hint = BYTE_VOCAB
    else:
        dtype = np.dtype(key[4])
        size = Path(key[1]).stat().st_size
        if size % dtype.itemsize:
            raise DataError(
                f"data.path {key[1]}: {size} bytes is not a whole number of {dtype.name} "
                f"token ids ({dtype.itemsize} bytes each); is data.dtype right?"
            )
        if size == 0:
            raise DataError(f"data.path {key[1]}: the token file is empty")
        array = np.memmap(key[1], dtype=dtype, mode="r")
        # int32 holds every uint16 id and any realistic uint32 vocabulary; int64 would double
        # the memory of large token files for nothing.
        wide = np.int64 if dtype == np.uint32 else np.int32
        stream = torch.from_numpy(np.asarray(array, dtype=wide))
        description = f"tokens:{dtype.name}:".encode()
        stream_bytes = array.tobytes()
        vocab_hint = int(stream.max()) + 1 if stream.numel() else 0
    val_fraction = key[-1]
    n_val = int(len(stream) * val_fraction)
    if len(stream) < 2 or n_val < 2 or len(stream) - n_val < 2:
        where = f"data.path {key[1]}" if kind != "builtin" else "data (builtin)"
        raise DataError(
            f"{where}: {len(stream)} tokens are too few to split off a validation share of {val_fraction:g}"
        )
    digest = hashlib.sha256(description + stream_bytes).hexdigest()[:16]
    return Corpus(
        train=stream[: len(stream) - n_val],
        val=stream[len(stream) - n_val :],
        identity=digest,
        vocab_hint=vocab_hint,
        max_token=int(stream.max()),
    )


def load_corpus(source: DataSettings | Any) -> Corpus:
    """The corpus of ``source`` (DataSettings, or the recipe's DataSource), loaded once per
    process (cached on the source settings and the file's size and modification time)."""
    return _load(_cache_key(as_data_settings(source)))


def data_identity(source: DataSettings | Any) -> str:
    """16 hex digits identifying the token stream of ``source`` (part of every trial id)."""
    return load_corpus(source).identity


class BatchSampler:
    """Random training windows, a pure function of (seed, step).

    ``next()`` returns (inputs, targets), each (batch_size, seq_len) int64 on ``device``.
    Two samplers built with one seed yield identical sequences of batches.
    """

    def __init__(self, corpus: Corpus, batch_size: int, seq_len: int, seed: int, device: str = "cpu"):
        if len(corpus.train) < seq_len + 2:
            raise ValueError(f"training split ({len(corpus.train)} tokens) is shorter than seq_len+1")
        self._data = corpus.train
        self._batch_size = batch_size
        self._n_starts = len(corpus.train) - seq_len - 1
        self._window = torch.arange(seq_len + 1)
        self._generator = torch.Generator().manual_seed(seed)
        self._device = torch.device(device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(self._n_starts, (self._batch_size, 1), generator=self._generator)
        windows = self._data[starts + self._window].long()
        if self._device.type != "cpu":
            windows = windows.to(self._device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]


def validation_batches(
    corpus: Corpus, seq_len: int, n_batches: int, device: str = "cpu"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` fixed (inputs, targets) batches of ``VAL_BATCH_SEQUENCES`` windows each,
    evenly spaced over the validation split (windows overlap when the split is short)."""
    if len(corpus.val) < seq_len + 1:
        raise ValueError(
            f"validation split ({len(corpus.val)} tokens) is shorter than seq_len+1 ({seq_len + 1})"
        )
    count = n_batches * VAL_BATCH_SEQUENCES
    starts = torch.linspace(0, len(corpus.val) - seq_len - 1, count).long()
    windows = corpus.val[starts[:, None] + torch.arange(seq_len + 1)].long().to(device)
    return [(chunk[:, :-1], chunk[:, 1:]) for chunk in windows.split(VAL_BATCH_SEQUENCES)]


def check_data(source: DataSettings | Any, shapes: list[Any]) -> Corpus:
    """Load ``source`` and refuse, before any trial runs, data that some shape cannot train
    on: splits shorter than a sequence, token ids beyond the vocabulary."""
    corpus = load_corpus(source)
    # Shapes: the recipe's ModelShape or trainspec.Shape (anything with seq_len, vocab_size).
    where = f"data.path {source.path}" if source.path else "data (builtin)"
    for index, shape in enumerate(shapes):
        if len(corpus.train) < shape.seq_len + 2 or len(corpus.val) < shape.seq_len + 1:
            raise DataError(
                f"models[{index}].seq_len: {shape.seq_len} is longer than {where} allows "
                f"(training split {len(corpus.train)} tokens, validation split "
                f"{len(corpus.val)}); use shorter sequences or more data"
            )
        if corpus.max_token >= shape.vocab_size:
            raise DataError(
                f"models[{index}].vocab_size: {where} holds token id {corpus.max_token}, "
                f"beyond vocab_size {shape.vocab_size}"
            )
    return corpus


def check_vocab(corpus: Corpus, vocab_size: int) -> None:
    """Raise ValueError when the data holds ids the model cannot embed."""
    if corpus.max_token >= vocab_size:
        raise ValueError(f"data holds token id {corpus.max_token} but the model's vocab_size is {vocab_size}")


__all__ = [
    "BatchSampler",
    "Corpus",
    "VAL_BATCH_SEQUENCES",
    "builtin_corpus_bytes",
    "DataError",
    "check_data",
    "check_vocab",
    "data_identity",
    "load_corpus",
    "validation_batches",
]
