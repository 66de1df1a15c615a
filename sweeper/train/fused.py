"""The fused trainer: K compatible trials trained in one process as one stacked model.

``run_fused(specs)`` is, member by member, the same computation as ``run_trial(spec)``: the
same initial weights (the group's seed builds one ``GPT``, stacked K times), the same
batches (members share a seed, hence a data order, and the batch is drawn once), the same
AdamW with that member's learning-rate schedule, gradient clipping by that member's own
gradient norm, the same divergence rule and the same validation batches. Only the float
rounding of batched versus single matmuls differs. Each member returns its own
``TrialOutcome``, as if it had run alone (``wall_seconds`` is the group's time until the
member ended, since members share every second).

A member that diverges is frozen: it is removed from the stack at the step it diverged
(before that step's update; its loss is excluded from the backward pass), so it neither
updates nor costs compute afterwards, and the others continue untouched. A member with a
smaller token budget (fewer steps) ends the same way after its last update: its final
validation, then out of the stack. Its batches are the first ones of the shared sequence,
exactly those its single run draws (one seed, one data order).

What may differ inside a group (``trainspec.fusion_key``): learning rate, schedule and length (the
token budget). Everything else that shapes the computation must be equal: model shape,
batch size, seed (init and data order), data, optimizer settings and evaluation.
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Mapping
from typing import Any

import torch

from sweeper.outcome import TrialOutcome
from sweeper.train.data import BatchSampler, check_vocab, load_corpus, validation_batches
from sweeper.train.loop import autocast_for, model_config, resolve_device
from sweeper.train.model import GPT
from sweeper.train.monitor import ProgressReport, TrialMonitor, error_text
from sweeper.train.schedules import lr_table
from sweeper.train.stacked import StackedGPT, StackedParameters
from sweeper.trainspec import OptimizerSettings, TrainSpec, as_train_spec, eval_every_steps, fusion_key

# ---- optimizer --------------------------------------------------------------------------


class StackedAdamW:
    """AdamW over ``StackedParameters`` with a learning rate per member.

    torch's AdamW takes one learning rate per param group, so this drives torch's own fused
    AdamW kernel (``torch._fused_adamw_``, what ``torch.optim.AdamW(fused=True)`` and so
    ``loop.make_optimizer`` run) once per member row: element by element the arithmetic of
    the member's single run. The op is called directly rather than through
    ``torch.optim.adamw.adamw`` because that wrapper's Python costs ~65 us a call, and a
    group calls it every step for every member (measured: a third of the update's time at
    K = 8, d_model 32). The decoupled weight decay (matrices only, columns
    ``[0, n_decayed)``, as in ``loop.make_optimizer``) is one multiply for all members
    before the kernels, which then run with no decay: the same order of operations as the
    kernel's own decay. tests/train/test_fused.py holds it to run_trial's curves.
    """

    def __init__(self, params: StackedParameters, settings: OptimizerSettings, hidden_lr_mult: float = 1.0):
        self.params = params
        self.settings = settings
        # μP: the hidden matrices (columns [0, n_hidden)) learn at lr * hidden_lr_mult.
        self.hidden_lr_mult = hidden_lr_mult
        self.exp_avg = torch.zeros_like(params.flat, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(params.flat, requires_grad=False)
        # The kernel reads each row's step count (float32, on the device) for bias correction.
        self.step_counts = torch.zeros(params.members, device=params.flat.device)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at ``index`` (weights, their gradients and the moments)."""
        self.params.keep(index)
        self.exp_avg = self.exp_avg[index]
        self.exp_avg_sq = self.exp_avg_sq[index]
        self.step_counts = self.step_counts[index]

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale each member's gradient so that its own global norm is at most ``max_norm``
        (torch's ``clip_grad_norm_`` formula, per member row). Returns the (K,) norms."""
        grad = self.params.flat.grad
        assert grad is not None  # called after backward()
        norms = torch.linalg.vector_norm(grad, dim=1)
        grad.mul_((max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1))
        return norms

    @torch.no_grad()
    def step(self, lrs: list[float]) -> None:
        """One AdamW update; ``lrs[k]`` is the learning rate of member row k."""
        opt = self.settings
        flat, grad = self.params.flat.detach(), self.params.flat.grad
        assert grad is not None  # called after backward()
        # Column ranges that share one learning rate per member: [(start, end, lr multiple)].
        if self.hidden_lr_mult == 1.0:
            ranges = [(0, flat.shape[1], 1.0)]
        else:
            ranges = [
                (0, self.params.n_hidden, self.hidden_lr_mult),
                (self.params.n_hidden, flat.shape[1], 1.0),
            ]
        if opt.weight_decay:
            member_lrs = torch.tensor(lrs, dtype=flat.dtype, device=flat.device)
            decayed = self.params.n_decayed
            for start, end, mult in ranges:
                if start < decayed:
                    # As torch's AdamW: decay by the parameter's own lr (lr * mult * wd).
                    keep_fraction = 1.0 - member_lrs * mult * opt.weight_decay
                    flat[:, start : min(end, decayed)].mul_(keep_fraction.unsqueeze(1))
        self.step_counts += 1
        for row, lr in enumerate(lrs):
            for start, end, mult in ranges:
                torch._fused_adamw_(
                    [flat[row, start:end]],
                    [grad[row, start:end]],
                    [self.exp_avg[row, start:end]],
                    [self.exp_avg_sq[row, start:end]],
                    [],
                    [self.step_counts[row]],
                    lr=lr * mult,
                    beta1=opt.beta1,
                    beta2=opt.beta2,
                    weight_decay=0.0,
                    eps=opt.eps,
                    amsgrad=False,
                    maximize=False,
                )

    def zero_grad(self) -> None:
        self.params.flat.grad = None


# ---- training ---------------------------------------------------------------------------


def run_fused(
    planned: list[TrainSpec] | list[Any],
    *,
    threads: int | None = None,
    device: str | None = None,
    forks: Mapping[int, tuple[int, int]] | None = None,
    report: ProgressReport | None = None,
) -> list[TrialOutcome]:
    """Train ``specs`` as one fused group; outcome ``i`` belongs to ``specs[i]``. ``report``
    hears each member's progress while it runs, as for ``run_trial``.

    ``forks`` maps a member to ``(parent, step)``: that member does not start from the
    initial weights but enters the stack as a copy of member ``parent``'s row (weights,
    AdamW moments, step count) and history after ``step``'s update, because its run up to
    there is the parent's (WSD branching; ``branching.py`` decides where that holds).

    Raises ValueError only for a group that cannot be fused (a caller's bug: members must
    share ``trainspec.fusion_key``); a training problem never raises: it fails every member
    still running, with the error message, while members that had already diverged keep their
    outcome. ``planned``: TrainSpecs, or planned TrialSpecs (read into them).
    """
    specs = [as_train_spec(spec) for spec in planned]
    if not specs:
        return []
    for spec in specs[1:]:
        if fusion_key(spec) != fusion_key(specs[0]):
            raise ValueError(f"trial {spec.trial_id} cannot be fused with {specs[0].trial_id}")
    monitors = [TrialMonitor(spec, report) for spec in specs]
    outcomes: list[TrialOutcome | None] = [None] * len(specs)
    clock = time.perf_counter()
    try:
        _train_fused(
            specs, dict(forks or {}), monitors, outcomes, clock, threads or 1, resolve_device(device)
        )
    except Exception as error:  # noqa: BLE001 - the contract: every failure becomes a row
        message = error_text(error)
        for member, monitor in enumerate(monitors):
            if outcomes[member] is None:
                outcomes[member] = monitor.outcome(time.perf_counter() - clock, error=message)
    return [outcome for outcome in outcomes if outcome is not None]


def _build_params(specs: list[TrainSpec], device: torch.device) -> StackedParameters:
    """Every member starts from ``loop.build_model(specs[k])``'s weights: one GPT built from
    the group's seed (members share it, see ``trainspec.fusion_key``), stacked K times."""
    torch.manual_seed(specs[0].seed)
    model = GPT(model_config(specs[0]))
    return StackedParameters([model] * len(specs), device)


def _train_fused(
    specs: list[TrainSpec],
    forks: dict[int, tuple[int, int]],
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
    config = model_config(first)
    model = StackedGPT(config)
    active = [member for member in range(len(specs)) if member not in forks]  # member of each stack row
    optimizer = StackedAdamW(
        _build_params([specs[m] for m in active], device),
        first.optimizer,
        hidden_lr_mult=1.0 / config.width_mult,
    )
    sampler = BatchSampler(corpus, first.batch_size, first.shape.seq_len, first.seed, str(device))
    val_batches = validation_batches(corpus, first.shape.seq_len, first.evaluation.val_batches, str(device))
    # Python floats, as run_trial's
    lr_tables = [lr_table(s.steps, s.lr, s.schedule, s.batch_size_tokens) for s in specs]
    clip = first.optimizer.grad_clip
    every = eval_every_steps(first.evaluation, first.batch_size_tokens)

    def evaluate(rows: list[int]) -> list[float]:
        """Mean validation loss of the member rows ``rows`` (all rows: no copy)."""
        with torch.no_grad(), autocast_for(device):
            params = optimizer.params.views()
            if len(rows) < len(active):
                index = torch.tensor(rows, device=device)
                params = {name: tensor[index] for name, tensor in params.items()}
            total = functools.reduce(
                operator.add, [model.member_losses(params, x, y) for x, y in val_batches]
            )
        return (total / len(val_batches)).tolist()

    def restack(rows: list[int], members: list[int]) -> None:
        """Make the stack the rows ``rows`` of the current one, in that order (a row named
        twice is copied: a fork), now holding ``members``."""
        nonlocal active
        if rows:
            optimizer.keep(torch.tensor(rows, device=device))
        active = members

    def drop(rows: list[int]) -> None:
        """Take the member rows ``rows`` out of the stack."""
        keep = [row for row in range(len(active)) if row not in rows]
        restack(keep, [active[row] for row in keep])

    def end_unforked_children(parent: int) -> None:
        """``parent`` diverged before its children forked: their runs are its run up to
        now, so each ends exactly as it did (same step, same curve)."""
        for child, (source, _) in forks.items():
            if source == parent and outcomes[child] is None and child not in active:
                monitors[child].adopt(monitors[parent])
                outcomes[child] = monitors[child].outcome(time.perf_counter() - clock)

    # ---- training ----------------------------------------------------------------------
    for step in range(1, max(s.steps for s in specs) + 1):
        inputs, targets = sampler.next()
        with autocast_for(device):
            losses = model.member_losses(optimizer.params.views(), inputs, targets)
        step_lrs = [lr_tables[member][step - 1] for member in active]
        died = [
            row
            for row, (member, loss) in enumerate(zip(active, losses.tolist()))
            if monitors[member].observe(step, step_lrs[row], loss)
        ]
        if died:
            for row in died:
                outcomes[active[row]] = monitors[active[row]].outcome(time.perf_counter() - clock)
                end_unforked_children(active[row])
            survivors = [row for row in range(len(active)) if row not in died]
            if not survivors:
                return
            losses = losses[torch.tensor(survivors, device=device)]
        losses.sum().backward()  # members are independent: d(sum)/d(member k) = d(loss k)
        if died:
            drop(died)  # the gradient rows of the survivors go with them
        if clip > 0:
            optimizer.clip_grad_norm_(clip)
        optimizer.step([lr_tables[member][step - 1] for member in active])
        optimizer.zero_grad()
        for member in active:
            monitors[member].stepped(step)
        # As run_trial: a validation every ``every`` steps, and the final one after the
        # member's last update (instead of a periodic one at that step).
        ending = [row for row, member in enumerate(active) if specs[member].steps == step]
        periodic = bool(every) and step % every == 0
        if ending or periodic:
            rows = list(range(len(active))) if periodic else ending
            for row, val_loss in zip(rows, evaluate(rows)):
                member = active[row]
                monitors[member].record_val(step, val_loss)
                if row in ending:
                    outcomes[member] = monitors[member].outcome(
                        time.perf_counter() - clock, final_val_loss=val_loss
                    )
        # Forks after the step's validation, so a child's history holds the parent's
        # measurement of that step, as the child's own run would.
        born = [child for child, (_, at) in forks.items() if at == step and outcomes[child] is None]
        parents = [forks[child][0] for child in born]
        if any(parent not in active or specs[parent].steps == step for parent in parents):
            raise ValueError(f"a fork at step {step} has no running parent")
        for child, parent in zip(born, parents):
            monitors[child].adopt(monitors[parent])
        if ending:
            drop(ending)
        if born:
            restack(list(range(len(active))) + [active.index(parent) for parent in parents], active + born)
        if not active:
            return


__all__ = ["StackedAdamW", "run_fused"]
