"""The fused trainer: K compatible trials trained in one process as one stacked model.

``run_fused(specs)`` is, member by member, the same computation as ``run_trial(spec)``: the
same initial weights (each member's ``GPT`` is built from its seed, then stacked), the same
batches (members share a seed, hence a data order, and the batch is drawn once), the same
AdamW with that member's learning-rate schedule, gradient clipping by that member's own
gradient norm, the same divergence rule and the same validation batches. Only the float
rounding of batched versus single matmuls differs. Each member returns its own
``TrialOutcome``, as if it had run alone (``wall_seconds`` is the group's time until the
member ended, since members share every second).

A member that diverges is frozen: it is removed from the stack at the step it diverged
(before that step's update; its loss is excluded from the backward pass), so it neither
updates nor costs compute afterwards, and the others continue untouched.

What may differ inside a group (``fuse_key``): learning rate and schedule. Everything else
that shapes the computation must be equal: model shape, batch size, steps, seed (init and
data order), data, optimizer settings and evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import torch

from sweeper.outcome import TrialOutcome
from sweeper.plan import TrialSpec, estimate_group_memory_bytes, fusion_key
from sweeper.recipe import Optimizer
from sweeper.train.data import BatchSampler, check_vocab, load_corpus, validation_batches
from sweeper.train.loop import autocast_for, resolve_device
from sweeper.train.model import GPT, GPTConfig
from sweeper.train.monitor import TrialMonitor, error_text
from sweeper.train.schedules import lr_table
from sweeper.train.stacked import StackedGPT, stack_models

# ---- grouping ---------------------------------------------------------------------------


# The key lives in plan.py so that the driver can group trials without importing torch.
fuse_key = fusion_key


def can_fuse(a: TrialSpec, b: TrialSpec) -> bool:
    """True when ``a`` and ``b`` may be members of one fused group (they differ at most in
    learning rate and schedule)."""
    return fuse_key(a) == fuse_key(b)


def group_fusable(specs: Iterable[TrialSpec], max_members: int) -> list[list[TrialSpec]]:
    """Split ``specs`` into fusable groups of at most ``max_members``, keeping the input
    order inside each group and ordering groups by their first member."""
    if max_members < 1:
        raise ValueError(f"max_members must be >= 1, got {max_members}")
    by_key: dict[tuple, list[list[TrialSpec]]] = {}
    groups: list[list[TrialSpec]] = []
    for spec in specs:
        chunks = by_key.setdefault(fuse_key(spec), [])
        if not chunks or len(chunks[-1]) >= max_members:
            chunks.append([])
            groups.append(chunks[-1])
        chunks[-1].append(spec)
    return groups


# One estimate for the planner, the driver's choice of K and this module (plan.py).
fused_memory_bytes = estimate_group_memory_bytes


# ---- optimizer --------------------------------------------------------------------------


class StackedAdamW:
    """AdamW over stacked (K, ...) tensors with a learning rate per member.

    Written by hand because ``torch.optim.AdamW`` takes one scalar learning rate per param
    group, and a group per member would split the stacked tensors apart. The arithmetic is
    torch's foreach AdamW (decoupled decay ``p *= 1 - lr*wd``, bias-corrected moments,
    ``eps`` added after the square root), with every scalar that depends on the learning
    rate broadcast as a (K, 1, ...) tensor. Weight decay applies to the matrices only, as in
    ``loop.make_optimizer``.
    """

    def __init__(self, params: dict[str, torch.Tensor], settings: Optimizer):
        self.params = params
        self.settings = settings
        self.exp_avg = {name: torch.zeros_like(p) for name, p in params.items()}
        self.exp_avg_sq = {name: torch.zeros_like(p) for name, p in params.items()}
        self.steps = 0

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at ``index`` (params, their gradients and the moments)."""
        for name, param in list(self.params.items()):
            kept = param.detach()[index].requires_grad_(True)
            if param.grad is not None:
                kept.grad = param.grad[index]
            self.params[name] = kept
            self.exp_avg[name] = self.exp_avg[name][index]
            self.exp_avg_sq[name] = self.exp_avg_sq[name][index]

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale each member's gradients so that its own global norm is at most ``max_norm``
        (torch's ``clip_grad_norm_`` formula, per member). Returns the (K,) norms."""
        grads = [p.grad for p in self.params.values()]
        members = grads[0].shape[0]
        per_tensor = torch.stack([torch.linalg.vector_norm(g.reshape(members, -1), dim=1) for g in grads], dim=1)
        norms = torch.linalg.vector_norm(per_tensor, dim=1)
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [scale.view(-1, *[1] * (g.dim() - 1)) for g in grads])
        return norms

    @torch.no_grad()
    def step(self, lrs: torch.Tensor) -> None:
        """One AdamW update; ``lrs`` is the (K,) learning rate of each member."""
        opt = self.settings
        self.steps += 1
        names = list(self.params)
        params = [self.params[n] for n in names]
        grads = [p.grad for p in params]
        exp_avg = [self.exp_avg[n] for n in names]
        exp_avg_sq = [self.exp_avg_sq[n] for n in names]
        lr_views = [lrs.view(-1, *[1] * (p.dim() - 1)) for p in params]

        if opt.weight_decay:
            matrices = [i for i, p in enumerate(params) if p.dim() >= 3]
            torch._foreach_mul_(
                [params[i] for i in matrices], [1.0 - lr_views[i] * opt.weight_decay for i in matrices]
            )
        torch._foreach_lerp_(exp_avg, grads, 1.0 - opt.beta1)
        torch._foreach_mul_(exp_avg_sq, opt.beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1.0 - opt.beta2)
        bias_correction1 = 1.0 - opt.beta1**self.steps
        bias_correction2 = 1.0 - opt.beta2**self.steps
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(bias_correction2))
        torch._foreach_add_(denom, opt.eps)
        update = torch._foreach_div(exp_avg, denom)
        torch._foreach_mul_(update, [lr / bias_correction1 for lr in lr_views])
        torch._foreach_sub_(params, update)

    def zero_grad(self) -> None:
        for param in self.params.values():
            param.grad = None


# ---- training ---------------------------------------------------------------------------


def run_fused(specs: list[TrialSpec], *, threads: int | None = None, device: str | None = None) -> list[TrialOutcome]:
    """Train ``specs`` as one fused group; outcome ``i`` belongs to ``specs[i]``.

    Raises ValueError only for a group that cannot be fused (a caller's bug, see
    ``can_fuse``); a training problem never raises: it fails every member still running,
    with the error message, while members that had already diverged keep their outcome.
    """
    if not specs:
        return []
    for spec in specs[1:]:
        if not can_fuse(specs[0], spec):
            raise ValueError(f"trial {spec.trial_id} cannot be fused with {specs[0].trial_id}")
    monitors = [TrialMonitor(spec) for spec in specs]
    outcomes: list[TrialOutcome | None] = [None] * len(specs)
    clock = time.perf_counter()
    try:
        _train_fused(specs, monitors, outcomes, clock, threads or 1, resolve_device(device))
    except Exception as error:  # noqa: BLE001 - the contract: every failure becomes a row
        message = error_text(error)
        for member, monitor in enumerate(monitors):
            if outcomes[member] is None:
                outcomes[member] = monitor.outcome(time.perf_counter() - clock, error=message)
    return [outcome for outcome in outcomes if outcome is not None]


def _build_params(specs: list[TrialSpec], device: torch.device) -> dict[str, torch.Tensor]:
    """Member k's weights are exactly ``loop.build_model(specs[k])``'s (one GPT per seed)."""
    config = GPTConfig.from_shape(specs[0].shape)
    by_seed: dict[int, GPT] = {}
    for spec in specs:
        if spec.seed not in by_seed:
            torch.manual_seed(spec.seed)
            by_seed[spec.seed] = GPT(config)
    params = stack_models([by_seed[spec.seed] for spec in specs])
    return {name: p.detach().to(device).requires_grad_(True) for name, p in params.items()}


def _train_fused(
    specs: list[TrialSpec],
    monitors: list[TrialMonitor],
    outcomes: list[TrialOutcome | None],
    clock: float,
    threads: int,
    device: torch.device,
) -> None:
    # ---- setup -------------------------------------------------------------------------
    torch.set_num_threads(threads)
    first = specs[0]
    corpus = load_corpus(first.data)
    check_vocab(corpus, first.shape.vocab_size)
    model = StackedGPT(GPTConfig.from_shape(first.shape))
    optimizer = StackedAdamW(_build_params(specs, device), first.optimizer)
    sampler = BatchSampler(corpus, first.batch_size, first.shape.seq_len, first.seed, str(device))
    val_batches = validation_batches(corpus, first.shape.seq_len, first.evaluation.val_batches, str(device))
    lr_rows = torch.tensor([lr_table(s.steps, s.lr, s.schedule) for s in specs], dtype=torch.float64)
    lr_rows_f32 = lr_rows.to(device=device, dtype=torch.float32)
    active = list(range(len(specs)))  # member index of each row of the stack
    clip = first.optimizer.grad_clip
    every = first.evaluation.every_steps

    def evaluate() -> list[float]:
        with torch.no_grad(), autocast_for(device):
            total = sum(model.member_losses(optimizer.params, x, y) for x, y in val_batches)
        return (total / len(val_batches)).tolist()

    # ---- training ----------------------------------------------------------------------
    for step in range(1, first.steps + 1):
        inputs, targets = sampler.next()
        with autocast_for(device):
            losses = model.member_losses(optimizer.params, inputs, targets)
        step_lrs = lr_rows[:, step - 1].tolist()
        died = [
            row for row, (member, loss) in enumerate(zip(active, losses.tolist()))
            if monitors[member].observe(step, step_lrs[row], loss)
        ]
        if died:
            for row in died:
                outcomes[active[row]] = monitors[active[row]].outcome(time.perf_counter() - clock)
            keep = [row for row in range(len(active)) if row not in died]
            if not keep:
                return
            index = torch.tensor(keep, device=device)
            losses = losses[index]
        losses.sum().backward()  # members are independent: d(sum)/d(member k) = d(loss k)
        if died:
            optimizer.keep(index)
            lr_rows, lr_rows_f32 = lr_rows[index.cpu()], lr_rows_f32[index]
            active = [active[row] for row in keep]
        if clip > 0:
            optimizer.clip_grad_norm_(clip)
        optimizer.step(lr_rows_f32[:, step - 1])
        optimizer.zero_grad()
        for member in active:
            monitors[member].stepped(step)
        if every and step % every == 0 and step != first.steps:
            for member, val_loss in zip(active, evaluate()):
                monitors[member].record_val(step, val_loss)

    # ---- final measurement -------------------------------------------------------------
    for member, val_loss in zip(active, evaluate()):
        monitors[member].record_val(first.steps, val_loss)
        outcomes[member] = monitors[member].outcome(time.perf_counter() - clock, final_val_loss=val_loss)


__all__ = ["StackedAdamW", "can_fuse", "fuse_key", "fused_memory_bytes", "group_fusable", "run_fused"]
