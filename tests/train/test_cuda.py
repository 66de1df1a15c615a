"""The GPU path of the trainers (bf16 autocast on CUDA). These need a CUDA device: CI has
none, so they are skipped there with that reason; benchmarks/gpu_check.sh runs them on a GPU
machine together with the CUDA benchmark."""

import math

import numpy as np
import pytest
import torch

from sweeper.train import run_trial
from sweeper.train.fused import run_fused

from .conftest import build_specs

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (run by benchmarks/gpu_check.sh)"
)


def test_fused_members_on_cuda_follow_their_single_runs_within_bf16_rounding():
    specs = build_specs(lrs=[1e-3, 3e-3, 1e-2], steps=30, evaluation={"every_steps": 10})
    fused = run_fused(specs, device="cuda")
    assert [o.status for o in fused] == ["complete"] * 3
    for spec, outcome in zip(specs, fused):
        single = run_trial(spec, device="cuda")
        assert single.status == "complete"
        # bf16 matmuls: batched and single products round differently; 30 steps at these
        # learning rates keep the curves within a few percent, and both must have learned.
        np.testing.assert_allclose(
            [p.train_loss for p in outcome.curve], [p.train_loss for p in single.curve], rtol=3e-2
        )
        assert outcome.final_val_loss == pytest.approx(single.final_val_loss, rel=3e-2)
        assert outcome.final_val_loss < outcome.curve[0].train_loss - 0.3


def test_a_diverging_member_on_cuda_is_frozen_and_the_others_finish():
    specs = build_specs(lrs=[3e-3, 1000.0], steps=12, optimizer={"grad_clip": 0})
    first, blown = run_fused(specs, device="cuda")
    assert first.status == "complete" and math.isfinite(first.final_val_loss)
    assert blown.status == "diverged" and blown.diverged_step is not None
    assert blown.steps_done == blown.diverged_step - 1
