"""The fused trainer is K independent trainings: same curves as run_trial, member by member."""

import math

import numpy as np
import pytest
import torch

from sweeper.plan import estimate_group_memory_bytes
from sweeper.train import run_trial
from sweeper.train.fused import _build_params, run_fused
from sweeper.train.loop import build_model
from sweeper.trainspec import fusion_key

from .conftest import build_specs


def assert_same_run(fused, single):
    assert fused.trial_id == single.trial_id
    assert fused.status == single.status
    assert fused.diverged_step == single.diverged_step
    assert fused.steps_done == single.steps_done and fused.tokens_done == single.tokens_done
    assert [p.step for p in fused.curve] == [p.step for p in single.curve]
    assert [p.lr for p in fused.curve] == pytest.approx([p.lr for p in single.curve], rel=1e-12)
    np.testing.assert_allclose(
        [p.train_loss for p in fused.curve], [p.train_loss for p in single.curve], rtol=1e-4, atol=1e-4
    )
    assert [p.val_loss is None for p in fused.curve] == [p.val_loss is None for p in single.curve]
    np.testing.assert_allclose(
        [p.val_loss for p in fused.curve if p.val_loss is not None],
        [p.val_loss for p in single.curve if p.val_loss is not None],
        rtol=1e-4,
    )
    if single.status == "complete":
        assert fused.final_val_loss == pytest.approx(single.final_val_loss, rel=1e-4)
        assert fused.smoothed_train_loss == pytest.approx(single.smoothed_train_loss, rel=1e-4)
    else:
        assert math.isnan(fused.final_val_loss)


def test_members_train_exactly_as_they_would_alone_and_a_diverging_one_is_frozen():
    # grad_clip 0 lets lr=1000 blow up at step 2; the others must not notice.
    specs = build_specs(
        lrs=[3e-3, 1e-2, 3e-2, 1000.0], steps=12, optimizer={"grad_clip": 0}, evaluation={"every_steps": 5}
    )
    fused = run_fused(specs)
    assert [o.status for o in fused] == ["complete", "complete", "complete", "diverged"]
    assert fused[3].diverged_step == 2 and len(fused[3].curve) == 2
    for spec, outcome in zip(specs, fused):
        assert_same_run(outcome, run_trial(spec))


def test_per_member_clipping_and_schedules_match_single_runs():
    cosine = build_specs(lrs=[1e-2, 4e-2], steps=10, optimizer={"grad_clip": 0.5})
    wsd = build_specs(
        lrs=[2e-2], steps=10, optimizer={"grad_clip": 0.5}, schedule={"kind": "wsd", "warmup_fraction": 0.2}
    )
    specs = cosine + wsd
    assert all(can_fuse(specs[0], spec) for spec in specs)
    for spec, outcome in zip(specs, run_fused(specs)):
        assert_same_run(outcome, run_trial(spec))


def test_members_with_smaller_token_budgets_end_at_their_own_step_as_they_would_alone():
    # 7 steps: ends between validations; 10: ends on a validation step; 15: the longest.
    seven, ten, fifteen = (
        build_specs(lrs=[1e-2, 3e-3], steps=n, evaluation={"every_steps": 5}) for n in (7, 10, 15)
    )
    specs = [fifteen[0], seven[0], ten[1], fifteen[1], seven[1]]
    assert all(can_fuse(specs[0], spec) for spec in specs)
    fused = run_fused(specs)
    assert [o.steps_done for o in fused] == [15, 7, 10, 15, 7]
    assert [o.status for o in fused] == ["complete"] * 5
    assert [p.step for p in fused[1].curve if p.val_loss is not None] == [5, 7]
    assert [p.step for p in fused[2].curve if p.val_loss is not None] == [5, 10]
    for spec, outcome in zip(specs, fused):
        assert_same_run(outcome, run_trial(spec))


def test_member_weights_start_where_run_trial_starts():
    specs = build_specs(lrs=[1e-3, 1e-2], steps=2, n_layers=1)
    stacked = _build_params(specs, torch.device("cpu")).views()
    single = dict(build_model(specs[1], torch.device("cpu")).named_parameters())
    assert list(stacked) == list(single)
    for name, tensor in stacked.items():
        assert tensor.shape == (2, *single[name].shape)
        assert torch.equal(tensor[1].detach(), single[name].detach()), name


def can_fuse(a, b) -> bool:
    return fusion_key(a) == fusion_key(b)


def test_grouping_respects_what_must_be_shared():
    lrs = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]
    specs = build_specs(lrs=lrs, seeds=[0, 1])
    by_seed = {s.seed: [x for x in specs if x.seed == s.seed] for s in specs}
    assert can_fuse(by_seed[0][0], by_seed[0][1])
    assert not can_fuse(by_seed[0][0], by_seed[1][0])  # another seed: other init and data order
    assert not can_fuse(specs[0], build_specs(lrs=lrs, batch_size=8)[0])
    assert can_fuse(specs[0], build_specs(lrs=lrs, steps=7)[0])  # another token budget: fine
    with pytest.raises(ValueError):
        run_fused([by_seed[0][0], by_seed[1][0]])
    assert estimate_group_memory_bytes(specs[0], 8) > estimate_group_memory_bytes(specs[0], 1) > 0


def test_a_training_error_fails_every_member_with_its_message(tmp_path):
    path = tmp_path / "tokens.bin"
    (np.arange(4000, dtype=np.uint16) % 300).tofile(path)
    specs = build_specs(
        lrs=[1e-3, 1e-2], vocab_size=64, steps=3, data={"source": "tokens", "path": str(path)}
    )
    outcomes = run_fused(specs)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all(o.error.startswith("ValueError: ") for o in outcomes)
    assert run_fused([]) == []


def test_a_member_trains_the_same_whatever_group_it_is_in():
    # The demo's fused and unfused sweeps must not differ by the group a trial lands in: each
    # member's arithmetic is its own slice of the batched matmuls. 150 steps at high learning
    # rates, where the landscapes amplify any rounding difference to 0.01-0.1 nats.
    specs = build_specs(lrs=[2e-3, 8e-3, 1.6e-2, 3.2e-2], d_model=16, seq_len=16, batch_size=4, steps=150)
    together = run_fused(specs)
    for spec, outcome in zip(specs, together):
        alone = run_fused([spec])[0]
        assert outcome.status == alone.status == "complete"
        assert outcome.final_val_loss == pytest.approx(alone.final_val_loss, rel=1e-6)
    reordered = run_fused(specs[::-1])[::-1]
    assert [o.final_val_loss for o in reordered] == pytest.approx(
        [o.final_val_loss for o in together], rel=1e-6
    )
