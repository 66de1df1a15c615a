"""K copies of the proxy model as one: every weight gets a leading member dimension K and
every matmul becomes one batched matmul, so K small trainings pay the per-operation
overhead of one.

This is ``model.GPT``'s forward written over stacked tensors (same parameter names, same
math; members never mix: every op is either batched over the member dimension or
row-wise). ``StackedParameters`` builds the stacked weights from ordinary ``GPT`` modules,
which is how a fused member gets exactly the initial weights its single run would have.

Why bmm and not ``torch.func.vmap(functional_call)``: vmap has no batching rule for the
CPU flash-attention kernel (it loops over members) and adds tracing overhead; measured by
``benchmarks/trainer_throughput.py`` (K=8, d_model 32/64, forward+backward, 1 CPU thread),
vmap took 7-20% longer than this hand-written bmm forward.

Where it pays: fusing removes per-operation overhead, not arithmetic. On a CPU at 16x64
tokens per step the single-trial path is already compute-bound (about half the matmul peak
at d_model 64), so fusion gains ~1.2x there; at 2 sequences per step it gains 2-2.4x at
d_model 32 and 1.3-1.8x at d_model 64, where a K=8 group reaches about the efficiency of
one run at 8x the batch and no more: the batched matmuls are as fast as the single ones,
and layer norm, GELU, attention and the softmax remain per-element work. On GPUs, where a
tiny model cannot fill the device, it should pay far more (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sweeper.train.model import GPT, NORM_EPS, GPTConfig, hidden_parameter_names


class StackedParameters:
    """The K members' weights as one (K, P) leaf tensor ``flat``: row k is member k, the
    weight matrices first (columns ``[0, n_decayed)``, the ones weight decay applies to),
    μP's hidden matrices first among them (columns ``[0, n_hidden)``, the ones whose learning
    rate μP scales), then the norm gains.

    Why one tensor: per-member gradient clipping is one norm over ``flat.grad``'s rows and
    the optimizer runs one fused kernel per member row instead of a multi-tensor loop over
    every (member, tensor). ``views()`` hands the forward named (K, *shape) views made with
    ``torch.split``, whose backward is a single concatenation into ``flat.grad`` (slicing
    each view separately would allocate and sum a (K, P) zero buffer per tensor).
    """

    def __init__(self, models: list[GPT], device: torch.device | str = "cpu"):
        named = list(models[0].named_parameters())
        hidden = hidden_parameter_names(models[0].config)
        self.names = [name for name, _ in named]
        # Hidden matrices, other matrices (embeddings included, as loop.make_optimizer decays
        # them), then vectors: each optimizer rule applies to one contiguous column range.
        self.layout = (
            [name for name, p in named if name in hidden]
            + [name for name, p in named if p.dim() >= 2 and name not in hidden]
            + [name for name, p in named if p.dim() < 2]
        )
        shapes = {name: tuple(p.shape) for name, p in named}
        self.shapes = [shapes[name] for name in self.layout]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.n_decayed = sum(size for name, size in zip(self.layout, self.sizes) if len(shapes[name]) >= 2)
        self.n_hidden = sum(size for name, size in zip(self.layout, self.sizes) if name in hidden)
        per_model = [dict(m.named_parameters()) for m in models]
        rows = [
            torch.cat([params[name].detach().reshape(-1) for name in self.layout]) for params in per_model
        ]
        self.flat = torch.stack(rows).to(device).requires_grad_(True)

    @property
    def members(self) -> int:
        return self.flat.shape[0]

    def views(self) -> dict[str, torch.Tensor]:
        """``{name: (K, *shape)}`` views of ``flat`` in ``GPT.named_parameters`` order."""
        pieces = torch.split(self.flat, self.sizes, dim=1)
        by_name = {
            name: piece.unflatten(1, shape) for name, piece, shape in zip(self.layout, pieces, self.shapes)
        }
        return {name: by_name[name] for name in self.names}

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the member rows at ``index`` (and their gradient)."""
        grad = self.flat.grad
        self.flat = self.flat.detach()[index].requires_grad_(True)
        if grad is not None:
            self.flat.grad = grad[index]


class StackedGPT:
    """Forward of K stacked GPTs of one config on one shared batch of token ids."""

    def __init__(self, config: GPTConfig):
        self.config = config

    def logits(self, params: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (K, B*T, V) logits, member k computed with ``params[.][k]``."""
        cfg = self.config
        wte = params["wte.weight"]
        members, vocab, width = wte.shape
        batch, time = idx.shape
        heads = cfg.n_heads
        # One embedding lookup for all members: member k's rows live at k*V .. k*V+V-1.
        offsets = torch.arange(members, device=idx.device).view(members, 1, 1) * vocab
        x = F.embedding(idx.unsqueeze(0) + offsets, wte.reshape(members * vocab, width))
        x = (x + params["wpe.weight"][:, None, :time]).view(members, batch * time, width)
        for layer in range(cfg.n_layers):
            prefix = f"blocks.{layer}."
            qkv = _normed_matmul(x, params[prefix + "norm1.weight"], params[prefix + "attn.qkv.weight"])
            q, k, v = qkv.view(members * batch, time, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=cfg.attention_scale)
            y = y.transpose(1, 2).reshape(members, batch * time, width)
            x = x + torch.bmm(y, params[prefix + "attn.proj.weight"].transpose(1, 2))
            h = F.gelu(_normed_matmul(x, params[prefix + "norm2.weight"], params[prefix + "mlp.fc.weight"]))
            x = x + torch.bmm(h, params[prefix + "mlp.proj.weight"].transpose(1, 2))
        logits = _normed_matmul(x, params["norm_f.weight"], wte)  # tied head
        return logits if cfg.mup_base_width is None else logits * cfg.output_mult

    def member_losses(
        self, params: dict[str, torch.Tensor], idx: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """(K,) mean cross-entropy of each member on the shared batch (nats/token)."""
        logits = self.logits(params, idx)
        members, rows, vocab = logits.shape
        losses = F.cross_entropy(
            logits.float().reshape(members * rows, vocab),
            targets.reshape(1, -1).expand(members, -1).reshape(-1),
            reduction="none",
        )
        return losses.view(members, rows).mean(dim=1)


def _normed_matmul(x: torch.Tensor, gain: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(LayerNorm(x) * gain) @ weight^T`` per member, for x (K, R, d), gain (K, d) and
    weight (K, out, d). The gain is folded into the weight (``weight * gain``, a weight-sized
    product) rather than applied to the activations (an activation-sized one, R >> out):
    the same function, less memory traffic forward and backward."""
    normed = F.layer_norm(x, (x.shape[-1],), eps=NORM_EPS)
    return torch.bmm(normed, (weight * gain.unsqueeze(1)).transpose(1, 2))


__all__ = ["StackedGPT", "StackedParameters"]
