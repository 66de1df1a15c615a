"""K copies of the proxy model as one: every weight gets a leading member dimension K and
every matmul becomes one batched matmul, so K small trainings pay the per-operation
overhead of one.

This is ``model.GPT``'s forward written over stacked tensors (same parameter names, same
math; members never mix: every op is either batched over the member dimension or
row-wise). ``stack_models`` builds the stacked weights from ordinary ``GPT`` modules, which
is how a fused member gets exactly the initial weights its single run would have.

Why bmm and not ``torch.func.vmap(functional_call)``: both give the same batched kernels
for the matmuls, but vmap adds per-call tracing overhead and batches SDPA/embedding less
directly; the benchmark (``benchmarks/trainer_throughput.py --vmap``) measures the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sweeper.train.model import GPT, NORM_EPS, GPTConfig


def stack_models(models: list[GPT]) -> dict[str, torch.Tensor]:
    """``{name: (K, *shape)}`` leaf tensors (requiring grad), member k = ``models[k]``."""
    names = [name for name, _ in models[0].named_parameters()]
    per_model = [dict(m.named_parameters()) for m in models]
    return {
        name: torch.stack([params[name].detach() for params in per_model]).requires_grad_(True)
        for name in names
    }


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
            h = _norm(x, params[prefix + "norm1.weight"])
            qkv = torch.bmm(h, params[prefix + "attn.qkv.weight"].transpose(1, 2))
            q, k, v = qkv.view(members * batch, time, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).reshape(members, batch * time, width)
            x = x + torch.bmm(y, params[prefix + "attn.proj.weight"].transpose(1, 2))
            h = _norm(x, params[prefix + "norm2.weight"])
            h = F.gelu(torch.bmm(h, params[prefix + "mlp.fc.weight"].transpose(1, 2)))
            x = x + torch.bmm(h, params[prefix + "mlp.proj.weight"].transpose(1, 2))
        x = _norm(x, params["norm_f.weight"])
        return torch.bmm(x, wte.transpose(1, 2))  # tied head

    def member_losses(self, params: dict[str, torch.Tensor], idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(K,) mean cross-entropy of each member on the shared batch (nats/token)."""
        logits = self.logits(params, idx)
        members, rows, vocab = logits.shape
        losses = F.cross_entropy(
            logits.float().reshape(members * rows, vocab), targets.reshape(1, -1).expand(members, -1).reshape(-1),
            reduction="none",
        )
        return losses.view(members, rows).mean(dim=1)


def _norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Bias-free LayerNorm with a per-member gain: x (K, R, d), weight (K, d)."""
    return F.layer_norm(x, (x.shape[-1],), eps=NORM_EPS) * weight.unsqueeze(1)


__all__ = ["StackedGPT", "stack_models"]
