import numpy as np
import pytest
import torch

from sweeper.recipe import DataSource
from sweeper.train.data import (
    VAL_BATCH_SEQUENCES,
    BatchSampler,
    builtin_corpus_bytes,
    check_vocab,
    data_identity,
    load_corpus,
    validation_batches,
)


def test_builtin_corpus_is_capped_split_and_byte_level():
    source = DataSource(max_bytes=200_000, val_fraction=0.1)
    corpus = load_corpus(source)
    assert len(corpus.train) + len(corpus.val) == 200_000
    assert len(corpus.val) == 20_000
    assert corpus.max_token < 256 and corpus.vocab_hint == 256
    assert bytes(corpus.val[-100:].tolist()) == builtin_corpus_bytes(200_000)[-100:]
    assert load_corpus(source) is corpus  # cached per process


def test_identity_is_stable_and_tracks_the_stream():
    first = data_identity(DataSource(max_bytes=100_000))
    assert first == data_identity(DataSource(max_bytes=100_000))
    assert len(first) == 16 and int(first, 16) >= 0
    assert first != data_identity(DataSource(max_bytes=100_001))


def test_text_and_token_files(tmp_path):
    text = tmp_path / "a.txt"
    text.write_bytes(bytes(range(256)) * 10)
    corpus = load_corpus(DataSource(source="text", path=str(text)))
    assert len(corpus.train) + len(corpus.val) == 2560
    ids = np.arange(5000, dtype=np.uint16) % 1000
    tokens = tmp_path / "t.bin"
    ids.tofile(tokens)
    corpus = load_corpus(DataSource(source="tokens", path=str(tokens), dtype="uint16"))
    assert corpus.max_token == 999
    assert torch.equal(corpus.train[:10], torch.arange(10, dtype=corpus.train.dtype))
    check_vocab(corpus, 1000)
    with pytest.raises(ValueError, match="token id 999"):
        check_vocab(corpus, 512)
    # Same ids, another file type: another identity.
    assert corpus.identity != data_identity(DataSource(source="text", path=str(text)))


def test_batches_are_a_function_of_seed_and_step():
    corpus = load_corpus(DataSource(max_bytes=100_000))
    a, b, c = (BatchSampler(corpus, 4, 16, seed) for seed in (7, 7, 8))
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = a.next(), b.next(), c.next()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)
    assert xa.shape == (4, 16) and xa.dtype == torch.int64
    assert torch.equal(xa[:, 1:], ya[:, :-1])  # targets are inputs shifted by one


def test_validation_batches_are_fixed_and_cover_the_split():
    corpus = load_corpus(DataSource(max_bytes=100_000))
    batches = validation_batches(corpus, 32, 3)
    again = validation_batches(corpus, 32, 3)
    assert len(batches) == 3
    assert all(x.shape == (VAL_BATCH_SEQUENCES, 32) for x, _ in batches)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(batches, again))
    assert torch.equal(batches[0][0][0], corpus.val[:32].long())
    assert torch.equal(batches[-1][1][-1], corpus.val[-32:].long())
