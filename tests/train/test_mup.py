"""μP: a coordinate check (activation scales stay flat across widths after a few Adam steps
in μP, and grow with width in the standard parametrization), μP == standard at the base
width, and fused μP members training exactly as they would alone."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweeper.plan import fusion_key, plan_trials
from sweeper.recipe import Optimizer, parse_recipe
from sweeper.train import run_trial
from sweeper.train.fused import run_fused
from sweeper.train.loop import make_optimizer
from sweeper.train.model import GPT, GPTConfig

from .conftest import build_specs
from .test_fused import assert_same_run

WIDTHS = [32, 64, 128, 256]
BASE_WIDTH = 32


def activation_scales(
    width: int, mup: bool, seed: int, lr: float = 1e-2, steps: int = 5
) -> tuple[float, float]:
    """Mean |logit| and mean |last block output| after ``steps`` Adam steps at ``lr`` on
    random tokens, with the trainer's own model and optimizer (param groups and lr_mult)."""
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=256,
        seq_len=32,
        d_model=width,
        n_layers=2,
        n_heads=4,
        mup_base_width=BASE_WIDTH if mup else None,
    )
    model = GPT(config)
    optimizer = make_optimizer(model, SimpleNamespace(optimizer=Optimizer(weight_decay=0.0), lr=lr))
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    tokens = torch.randint(0, 256, (steps + 1, 8, 33), generator=torch.Generator().manual_seed(seed + 100))
    for step in range(steps):
        batch = tokens[step]
        loss = F.cross_entropy(model(batch[:, :-1]).reshape(-1, 256), batch[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    captured = {}
    hook = model.blocks[-1].register_forward_hook(
        lambda module, inputs, output: captured.update(block=output)
    )
    with torch.no_grad():
        logits = model(tokens[steps][:, :-1])
    hook.remove()
    return logits.abs().mean().item(), captured["block"].abs().mean().item()


def width_slopes(mup: bool) -> tuple[float, float]:
    """Slope of log(activation scale) against log(width), logits and block output, mean of 2 seeds."""
    slopes = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead (and contention in CI)
    try:
        for seed in (0, 1):
            scales = np.array([activation_scales(width, mup, seed) for width in WIDTHS])
            slopes.append([np.polyfit(np.log(WIDTHS), np.log(scales[:, i]), 1)[0] for i in range(2)])
    finally:
        torch.set_num_threads(threads)
    logits_slope, block_slope = np.mean(slopes, axis=0)
    return float(logits_slope), float(block_slope)


def test_coordinate_check_is_flat_for_mup_and_grows_for_standard():
    # Adam's updates are O(1) per coordinate: in the standard parametrization a hidden
    # layer's update moves its output by O(width), so activations grow with width (measured
    # here: slopes 0.7-2.1 in log-log); μP's lr / m and 1/m readout keep them O(1) (slopes
    # -0.2..0). The bounds sit far from both, so rounding cannot decide the test.
    mup_logits, mup_block = width_slopes(mup=True)
    assert abs(mup_logits) < 0.4 and abs(mup_block) < 0.4, (mup_logits, mup_block)
    standard_logits, standard_block = width_slopes(mup=False)
    assert standard_logits > 0.4 and standard_block > 0.4, (standard_logits, standard_block)


def test_mup_at_its_base_width_is_the_standard_model():
    torch.manual_seed(0)
    standard = GPT(GPTConfig(vocab_size=256, seq_len=16, d_model=32, n_layers=2, n_heads=4))
    torch.manual_seed(0)
    mup = GPT(GPTConfig(vocab_size=256, seq_len=16, d_model=32, n_layers=2, n_heads=4, mup_base_width=32))
    for (name, a), (_, b) in zip(standard.named_parameters(), mup.named_parameters()):
        assert torch.equal(a, b), name
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(standard(tokens), mup(tokens), rtol=1e-6, atol=1e-6)


def test_mup_recipe_plans_its_own_trials_and_records_the_base_width():
    fields = {
        "name": "m",
        "models": [
            {"d_model": 32, "n_layers": 1, "n_heads": 4},
            {"d_model": 64, "n_layers": 1, "n_heads": 4},
        ],
        "tokens": {"absolute": [4096]},
        "learning_rates": {"values": [1e-2]},
        "batch_sizes": [4],
    }
    standard = plan_trials(parse_recipe(fields), "data")
    mup = plan_trials(parse_recipe({**fields, "parametrization": "mup"}), "data")
    assert [s.mup_base_width for s in mup] == [32, 32]  # default: the ladder's smallest width
    assert {s.parametrization for s in standard} == {"standard"}
    assert not {s.trial_id for s in standard} & {s.trial_id for s in mup}
    wider = plan_trials(
        parse_recipe({**fields, "parametrization": {"kind": "mup", "base_width": 64}}), "data"
    )
    assert [s.mup_base_width for s in wider] == [64, 64]


def test_fused_mup_members_train_as_they_would_alone():
    # d_model 64 over base 32: m = 2, so the hidden matrices' lr and init differ from the
    # standard model's and the fused optimizer's two column ranges are both exercised.
    specs = build_specs(
        lrs=[3e-3, 1e-2, 3e-2],
        d_model=64,
        steps=10,
        evaluation={"every_steps": 5},
        parametrization={"kind": "mup", "base_width": 32},
    )
    assert {spec.mup_base_width for spec in specs} == {32}
    for spec, outcome in zip(specs, run_fused(specs)):
        assert_same_run(outcome, run_trial(spec))


def test_mup_and_standard_trials_never_fuse_together():
    standard = build_specs(d_model=64)
    mup = build_specs(d_model=64, parametrization={"kind": "mup", "base_width": 32})
    assert fusion_key(standard[0]) != fusion_key(mup[0])
    with pytest.raises(ValueError):
        run_fused([standard[0], mup[0]])
