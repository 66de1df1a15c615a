"""The proxy model: a nanoGPT-style decoder-only transformer, and nothing else.

Shape contract (must match ``recipe.ModelShape.n_params_nonembedding`` exactly, it is the N of the
fitted laws): per block, a bias-free LayerNorm before attention and before the MLP (2*d),
a fused qkv projection and an output projection without biases (4*d*d), and a two-layer
MLP without biases (2*d*mlp_ratio*d); one final bias-free LayerNorm (d). Token and learned
position embeddings are the only embedding parameters; the output head is tied to the token
embedding, so it adds no parameters.

No training code lives here (the loop is ``loop.py``); ``fused.py`` re-implements this
forward over stacked weights and initialises its members by building this module, so the
layout of ``GPT.named_parameters`` is part of its contract.

Two parametrizations (``GPTConfig.mup_base_width``): the standard one (GPT-2 / nanoGPT), and
μP, the maximal update parametrization of "Tensor Programs V" (Yang et al. 2022), Table 3 for
Adam, as the ``mup`` package implements it for a shared (tied) readout. With width multiplier
m = d_model / base_width: hidden matrices start with variance / m (std / sqrt(m)) and learn
at lr / m (``hidden_parameter_names``; the optimizer applies it); embeddings and norm gains are
unchanged; the tied readout's logits are multiplied by 1 / m; attention scores are scaled by
1 / head_dim (times sqrt(base head_dim), so that at m = 1 μP is exactly the standard model).
Written here rather than with the ``mup`` package because that package needs its own
``MuReadout`` modules, base-shape files and optimizers, while the fused trainer re-implements
this forward over stacked weights and must apply the same rules to slices of one tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sweeper.trainspec import Shape

INIT_STD = 0.02  # GPT-2's initialiser range
NORM_EPS = 1e-5


@dataclass(frozen=True)
class GPTConfig:
    """Model hyperparameters; ``from_shape`` is the only way the sweep builds one."""

    vocab_size: int
    seq_len: int
    d_model: int
    n_layers: int
    n_heads: int
    mlp_ratio: int = 4
    mup_base_width: int | None = None  # None: standard parametrization; else μP from this width

    @classmethod
    def from_shape(cls, shape: Shape, mup_base_width: int | None = None) -> GPTConfig:
        return cls(
            vocab_size=shape.vocab_size,
            seq_len=shape.seq_len,
            d_model=shape.d_model,
            n_layers=shape.n_layers,
            n_heads=shape.n_heads,
            mlp_ratio=shape.mlp_ratio,
            mup_base_width=mup_base_width,
        )

    @property
    def d_mlp(self) -> int:
        return self.mlp_ratio * self.d_model

    @property
    def width_mult(self) -> float:
        """μP's m = d_model / base_width (1 in the standard parametrization)."""
        return 1.0 if self.mup_base_width is None else self.d_model / self.mup_base_width

    @property
    def attention_scale(self) -> float | None:
        """Softmax scale of the attention scores: None (SDPA's 1/sqrt(head_dim)) in the
        standard parametrization; sqrt(base head_dim) / head_dim in μP."""
        if self.mup_base_width is None:
            return None
        head_dim = self.d_model / self.n_heads
        return math.sqrt(self.mup_base_width / self.n_heads) / head_dim

    @property
    def output_mult(self) -> float:
        """Multiplier of the tied readout's logits: 1 / m in μP, 1 in the standard one."""
        return 1.0 / self.width_mult


def hidden_parameter_names(config: GPTConfig) -> set[str]:
    """The "hidden" matrices of μP (both dimensions grow with width): attention and MLP
    weights. Their Adam learning rate is lr / m; every other parameter (the embeddings, whose
    one dimension is the vocabulary or the context, and the norm gains) learns at lr."""
    names: set[str] = set()
    for layer in range(config.n_layers):
        prefix = f"blocks.{layer}."
        names.update(
            prefix + name
            for name in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight")
        )
    return names


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.scale = config.attention_scale
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        # (B, T, 3, H, hd) -> three (B, H, T, hd) views; SDPA picks the fastest kernel.
        q, k, v = self.qkv(x).view(batch, time, 3, self.n_heads, width // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(batch, time, width))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_mlp, bias=False)
        self.proj = nn.Linear(config.d_mlp, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model, eps=NORM_EPS, bias=False)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.d_model, eps=NORM_EPS, bias=False)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Decoder-only transformer; ``forward(idx)`` maps (B, T) token ids to (B, T, V) logits."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm_f = nn.LayerNorm(config.d_model, eps=NORM_EPS, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) everywhere, norms at 1, and the two projections
        that write into the residual stream scaled by 1/sqrt(2 * n_layers) so that the
        stream's variance does not grow with depth. In μP the hidden matrices' std is further
        divided by sqrt(m) (variance 1/fan_in relative to the base width). Draw order is the
        parameter order, so a seed fixes the weights (fused training relies on this)."""
        hidden = hidden_parameter_names(self.config)
        hidden_std = INIT_STD / math.sqrt(self.config.width_mult)
        residual_std = hidden_std / math.sqrt(2 * self.config.n_layers)
        for name, param in self.named_parameters():
            if param.dim() == 1:
                nn.init.ones_(param)
            elif name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(param, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(param, mean=0.0, std=hidden_std if name in hidden else INIT_STD)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        time = idx.shape[1]
        if time > self.config.seq_len:
            raise ValueError(f"sequence of {time} tokens exceeds the model's seq_len {self.config.seq_len}")
        x = self.wte(idx) + self.wpe.weight[:time]
        for block in self.blocks:
            x = block(x)
        # Tied head: the token embedding doubles as the output projection.
        logits = F.linear(self.norm_f(x), self.wte.weight)
        return logits if self.config.mup_base_width is None else logits * self.config.output_mult

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non-embedding excludes token and position embeddings (the tied
        head is the token embedding, counted once)."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.wte.weight.numel() + self.wpe.weight.numel()
        return total


__all__ = ["GPT", "GPTConfig", "INIT_STD", "NORM_EPS", "hidden_parameter_names"]
