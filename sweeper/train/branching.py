"""WSD branching: every token budget of one run, trained as one run.

With a warmup-stable-decay schedule, the run for a budget D_i is, step for step, the run for
the longest budget D_k of the same shape, lr, batch, seed and schedule until D_i's decay
starts: the same initial weights, the same batches (one seed, one data order:
``data.BatchSampler``) and the same learning rates (the warmup, then the peak). So the
longest budget's run (the trunk) trains the stable phase once, and each shorter budget
forks from a copy of the trunk's weights and AdamW state at its decay start, trains only
its decay and ends as its own trial: its own id, row and curve, whose steps up to the fork
are the trunk's, as its own run would have logged them (validations included). Tokens
trained: D_k + the shorter budgets' decays, instead of D_1 + ... + D_k.

Where that holds is checked, not assumed: a budget forks only when its learning-rate table
up to its decay start equals the trunk's, float for float. A warmup given as a fraction of
the run (``warmup_fraction`` > 0) makes every budget warm up differently from the first
step, so those budgets train unbranched; a fixed ``Schedule.warmup_steps`` branches (unless
a budget's decay would start inside it).

The training is the fused trainer's (``fused.run_fused`` with ``forks``): a fork copies the
trunk's row of the stack, and the trunks of several learning rates (a fused group) share
the stack, so they share each step and branch together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sweeper.outcome import TrialOutcome
from sweeper.train.fused import run_fused
from sweeper.train.monitor import ProgressReport
from sweeper.train.schedules import decay_steps, lr_table
from sweeper.trainspec import TrainSpec, as_train_spec, budget_line_key

Fork = tuple[int, int]  # (parent member, the step after whose update the member forks)
# The planning functions take TrainSpecs or planned TrialSpecs (the driver counts with these
# without reading them into TrainSpecs); they read steps, lr, schedule and batch tokens only.
Spec = Any


# Schedules whose run up to the decay does not depend on the run's length (given a warmup
# in steps): wsd, and the Power scheduler (its rate is a function of the tokens seen).
BRANCHING_KINDS = ("wsd", "power")


def budget_lines(specs: Sequence[Spec]) -> list[list[int]]:
    """Indices of ``specs`` grouped by ``plan.budget_line_key`` (trials differing only in
    token budget), in order of first appearance."""
    lines: dict[tuple, list[int]] = {}
    for index, spec in enumerate(specs):
        lines.setdefault(budget_line_key(spec), []).append(index)
    return list(lines.values())


def fork_points(specs: Sequence[Spec]) -> dict[int, Fork]:
    """member -> (trunk, decay start) for every member of ``specs`` that can branch from the
    longest budget of its line; members not listed train from the initial weights."""
    forks: dict[int, Fork] = {}
    for line in budget_lines(specs):
        if len(line) < 2 or specs[line[0]].schedule.kind not in BRANCHING_KINDS:
            continue
        trunk = max(line, key=lambda member: specs[member].steps)  # the first of the longest
        trunk_lrs = _lrs(specs[trunk])
        for member in line:
            spec = as_train_spec(specs[member])
            start = spec.steps - decay_steps(spec.steps, spec.schedule)
            if member != trunk and start >= 1 and _lrs(spec)[:start] == trunk_lrs[:start]:
                forks[member] = (trunk, start)
    return forks


def _lrs(spec: Spec) -> list[float]:
    spec = as_train_spec(spec)
    return lr_table(spec.steps, spec.lr, spec.schedule, spec.batch_size_tokens)


def tokens_trained(specs: Sequence[Spec], forks: dict[int, Fork]) -> int:
    """Tokens the stack trains on: a forked member only from its fork on."""
    return sum(
        (spec.steps - (forks[member][1] if member in forks else 0)) * spec.batch_size_tokens
        for member, spec in enumerate(specs)
    )


def peak_rows(specs: Sequence[Spec], forks: dict[int, Fork]) -> int:
    """Most stack rows (model copies with their AdamW state) alive at once: a member holds a
    row from its start (0, or its fork) to its last step; at one step, members that end leave
    before the forks arrive."""
    events = sorted(
        [(forks[member][1] if member in forks else 0, 1) for member in range(len(specs))]
        + [(spec.steps, -1) for spec in specs]
    )
    alive = peak = 0
    for _, change in events:  # at equal steps -1 sorts first: leaving before forking
        alive += change
        peak = max(peak, alive)
    return peak


def branch_groups(specs: Sequence[Spec]) -> list[tuple[Spec, int]]:
    """(trunk, peak rows) of every line that branches: what one of its tasks holds at once,
    for the memory check."""
    groups = []
    for line in budget_lines(specs):
        members = [specs[member] for member in line]
        forks = fork_points(members)
        if forks:
            trunk = members[next(iter(forks.values()))[0]]
            groups.append((trunk, peak_rows(members, forks)))
    return groups


@dataclass(frozen=True)
class BranchingPlan:
    """What branching does to a sweep's plan, for the driver's start line and ``status``."""

    budgets: int  # most token budgets of one run (line)
    trials: int
    branched: int  # trials that fork from a longer budget's run
    tokens_planned: int  # every trial trained on its own
    tokens_to_train: int  # with the forks
    note: str  # one line for the user

    @property
    def saving(self) -> float:
        """Share of the planned tokens not trained."""
        return 1.0 - self.tokens_to_train / self.tokens_planned if self.tokens_planned else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "saving": self.saving}


def plan_branching(specs: Sequence[Spec]) -> BranchingPlan:
    """Budgets, tokens and the saving of ``specs`` when each line trains in one task (the
    driver keeps lines whole when any member branches)."""
    forks = fork_points(specs)
    lines = budget_lines(specs)
    budgets = max((len(line) for line in lines), default=0)
    planned, to_train = tokens_trained(specs, {}), tokens_trained(specs, forks)
    multi = [member for line in lines if len(line) > 1 for member in line]
    is_wsd = bool(specs) and specs[0].schedule.kind in BRANCHING_KINDS
    stay = len(multi) - len([line for line in lines if len(line) > 1]) - len(forks)  # not trunks, not forked
    tokens = f"{to_train:.3g} tokens to train"
    if not is_wsd or not multi:
        note = f"{tokens} ({budgets} token budget(s) per run, each trained on its own)"
    elif not forks:
        schedule = specs[0].schedule
        why = (
            "warmup_fraction warms each budget up over its own share of steps, so their runs differ "
            "from the first step; give schedule.warmup_steps (a fixed count) to branch"
            if schedule.warmup_steps is None and (schedule.warmup_fraction or 0.0) > 0
            else "the budgets' runs differ before their decay starts"
        )
        note = f"wsd branching off: {why}; {tokens}"
    else:
        unbranched = (
            f", {stay} whose runs differ from it before their decay train on their own" if stay else ""
        )
        note = (
            f"wsd branching: {len(forks)} trials fork from their run's longest budget at their decay "
            f"start{unbranched}; {tokens} instead of {planned:.3g} ({1 - to_train / planned:.0%} saved)"
        )
    return BranchingPlan(budgets, len(specs), len(forks), planned, to_train, note)


def run_branched(
    specs: list[TrainSpec] | list[Any],
    *,
    threads: int | None = None,
    device: str | None = None,
    report: ProgressReport | None = None,
) -> list[TrialOutcome]:
    """``fused.run_fused(specs)`` with every member that can branch forked from its trunk;
    outcome ``i`` belongs to ``specs[i]``, as if it had run alone. ``report`` hears each
    member's progress while it runs."""
    return run_fused(specs, threads=threads, device=device, forks=fork_points(specs), report=report)


__all__ = [
    "BranchingPlan",
    "Fork",
    "branch_groups",
    "budget_lines",
    "fork_points",
    "peak_rows",
    "plan_branching",
    "run_branched",
    "tokens_trained",
]
