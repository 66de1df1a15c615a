"""WSD branching: one run with forks gives every budget the result of its own run."""

import numpy as np
import pytest

from sweeper.train import run_trial
from sweeper.train.branching import fork_points, peak_rows, plan_branching, run_branched, tokens_trained
from sweeper.train.fused import run_fused

from .conftest import build_specs

WSD = {"kind": "wsd", "warmup_steps": 3, "decay_fraction": 0.25, "min_lr_ratio": 0.1}


def budget_ladder(steps: list[int], lrs: list[float], **fields) -> list:
    """The specs of ``lrs`` x budgets of ``steps`` optimizer steps, shortest budget first."""
    fields = {"schedule": WSD, "batch_size": 4, **fields}
    return [spec for n in steps for spec in build_specs(lrs=lrs, steps=n, **fields)]


def test_branched_budgets_equal_their_unbranched_runs_and_share_the_trunk_until_their_decay():
    # Two learning rates (a fused group) x four budgets; validations every 4 steps, so
    # some land before a fork, one on a fork step (decay of 16 steps starts at 12).
    specs = budget_ladder([8, 16, 24, 32], lrs=[3e-3, 1e-2], evaluation={"every_steps": 4})
    forks = fork_points(specs)
    assert {member: parent for member, (parent, _) in forks.items()} == {0: 6, 2: 6, 4: 6, 1: 7, 3: 7, 5: 7}
    assert {member: step for member, (_, step) in forks.items()} == {0: 6, 1: 6, 2: 12, 3: 12, 4: 18, 5: 18}
    assert tokens_trained(specs, forks) == (2 * 32 + 2 * (2 + 4 + 6)) * 4 * 64

    branched = run_branched(specs)
    unbranched = run_fused(specs)  # the same trainer, every budget from the initial weights
    assert [o.status for o in branched] == ["complete"] * 8
    for member, (spec, mine, alone) in enumerate(zip(specs, branched, unbranched)):
        assert mine.trial_id == spec.trial_id == alone.trial_id
        assert mine.steps_done == spec.steps and mine.tokens_done == spec.tokens
        assert abs(mine.final_val_loss - alone.final_val_loss) <= 1e-5
        assert [p.step for p in mine.curve] == list(range(1, spec.steps + 1))
        assert [p.lr for p in mine.curve] == [p.lr for p in alone.curve]
        assert [p.step for p in mine.curve if p.val_loss is not None] == [
            p.step for p in alone.curve if p.val_loss is not None
        ]
        np.testing.assert_allclose(
            [p.train_loss for p in mine.curve], [p.train_loss for p in alone.curve], atol=1e-5
        )
        if member in forks:  # up to its fork, the curve is the trunk's, point for point
            parent, at = forks[member]
            assert mine.curve[:at] == branched[parent].curve[:at]
            assert mine.curve[at].lr < branched[parent].curve[at].lr  # its decay, the trunk's peak
    # And each budget is the training run_trial gives it on its own: the same schedule step by
    # step and the same loss up to the rounding of batched against single matmuls, which
    # training at lr 1e-2 amplifies (tests/train/test_fused.py holds the early steps tight).
    for spec, mine in zip(specs[::3], branched[::3]):
        alone = run_trial(spec)
        assert [p.lr for p in mine.curve] == pytest.approx([p.lr for p in alone.curve], rel=1e-12)
        assert mine.final_val_loss == pytest.approx(alone.final_val_loss, rel=1e-2)
        np.testing.assert_allclose(
            [p.train_loss for p in mine.curve[:4]], [p.train_loss for p in alone.curve[:4]], rtol=1e-4
        )


def test_a_trunk_that_diverges_before_the_forks_ends_its_budgets_as_their_own_runs_would():
    # grad_clip 0 lets lr=1000 blow up at step 2, long before any decay starts.
    specs = budget_ladder([8, 16], lrs=[1e-2, 1000.0], optimizer={"grad_clip": 0})
    assert len(fork_points(specs)) == 2
    branched, unbranched = run_branched(specs), run_fused(specs)
    assert [o.status for o in branched] == ["complete", "diverged", "complete", "diverged"]
    for mine, alone in zip(branched, unbranched):
        assert (mine.status, mine.diverged_step, mine.steps_done) == (
            alone.status,
            alone.diverged_step,
            alone.steps_done,
        )
        assert [p.step for p in mine.curve] == [p.step for p in alone.curve]


def test_budgets_branch_only_where_their_run_is_the_longest_ones():
    fraction = budget_ladder([8, 16, 32], lrs=[1e-2], schedule={"kind": "wsd", "warmup_fraction": 0.1})
    assert fork_points(fraction) == {}
    plan = plan_branching(fraction)
    assert plan.branched == 0 and plan.tokens_to_train == plan.tokens_planned
    assert "warmup_steps" in plan.note and "off" in plan.note
    no_warmup = budget_ladder([8, 16, 32], lrs=[1e-2], schedule={"kind": "wsd", "warmup_fraction": 0.0})
    assert set(fork_points(no_warmup)) == {0, 1}
    # A warmup of 10 steps: the 8-step budget warms up over all its 8 steps, not the trunk's 10.
    long_warmup = budget_ladder([8, 16, 32], lrs=[1e-2], schedule={"kind": "wsd", "warmup_steps": 10})
    assert set(fork_points(long_warmup)) == {1}
    assert "1 whose runs differ" in plan_branching(long_warmup).note
    cosine = budget_ladder([8, 16], lrs=[1e-2], schedule={"kind": "cosine", "warmup_steps": 2})
    assert fork_points(cosine) == {} and "wsd" not in plan_branching(cosine).note


def test_the_plan_counts_the_issues_ladder_exactly():
    # Budgets 1, 2, 4, 8 units, 10% decay: 8 + 0.1 + 0.2 + 0.4 = 8.7 units instead of 15.
    schedule = {"kind": "wsd", "warmup_steps": 5, "decay_fraction": 0.1}
    specs = budget_ladder([100, 200, 400, 800], lrs=[1e-2, 2e-2], schedule=schedule)
    plan = plan_branching(specs)
    assert (plan.budgets, plan.trials, plan.branched) == (4, 8, 6)
    assert plan.tokens_to_train / plan.tokens_planned == pytest.approx(8.7 / 15)
    assert "42% saved" in plan.note
    one_run = specs[::2]
    assert peak_rows(one_run, fork_points(one_run)) == 2  # the trunk and one decaying branch


def test_power_schedule_budgets_branch_from_their_shared_stem_like_wsd():
    # The Power scheduler's rate is a function of the tokens seen, so before its decay a run
    # does not depend on its length: its budgets fork from one trunk, each equal to its run.
    power = {"kind": "power", "a": 2e-3, "b": -0.5, "warmup_steps": 3, "decay_fraction": 0.25}
    specs = budget_ladder([8, 16], lrs=[1e-2], schedule=power)
    assert fork_points(specs) == {0: (1, 6)}
    branched, unbranched = run_branched(specs), run_fused(specs)
    for mine, alone in zip(branched, unbranched):
        assert mine.status == alone.status == "complete"
        assert abs(mine.final_val_loss - alone.final_val_loss) <= 1e-5
        assert [p.lr for p in mine.curve] == [p.lr for p in alone.curve]
