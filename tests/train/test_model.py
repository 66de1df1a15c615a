import pytest
import torch

from sweeper.recipe import ModelShape
from sweeper.train.model import GPT, GPTConfig

SHAPES = [
    ModelShape(d_model=32, n_layers=2, n_heads=4),
    ModelShape(d_model=64, n_layers=3, n_heads=2, seq_len=32, vocab_size=100, mlp_ratio=2),
    ModelShape(d_model=48, n_layers=1, n_heads=6, seq_len=16, vocab_size=512),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_parameter_counts_match_the_recipe(shape):
    model = GPT(GPTConfig.from_shape(shape))
    assert model.n_params(non_embedding=True) == shape.n_params_nonembedding
    assert model.n_params(non_embedding=False) == shape.n_params_total
    assert sum(p.numel() for p in model.parameters()) == shape.n_params_total


def test_head_is_tied_and_logits_have_vocab_width():
    model = GPT(GPTConfig(vocab_size=256, seq_len=16, d_model=32, n_layers=2, n_heads=4))
    logits = model(torch.randint(0, 256, (3, 16)))
    assert logits.shape == (3, 16, 256)
    assert not any("head" in name for name, _ in model.named_parameters())


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, seq_len=16, d_model=32, n_layers=2, n_heads=4))
    idx = torch.randint(0, 256, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 256
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_init_is_gpt2_style_and_seeded():
    torch.manual_seed(3)
    a = GPT(GPTConfig(vocab_size=256, seq_len=64, d_model=64, n_layers=4, n_heads=4))
    torch.manual_seed(3)
    b = GPT(GPTConfig(vocab_size=256, seq_len=64, d_model=64, n_layers=4, n_heads=4))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name
    assert torch.all(a.blocks[0].norm1.weight == 1)
    assert abs(a.wte.weight.std().item() - 0.02) < 0.002
    residual = a.blocks[0].mlp.proj.weight.std().item()
    assert abs(residual - 0.02 / (2 * 4) ** 0.5) < 0.001


def test_too_long_input_is_rejected():
    model = GPT(GPTConfig(vocab_size=256, seq_len=8, d_model=32, n_layers=1, n_heads=4))
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))
