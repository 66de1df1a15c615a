import math

import numpy as np

from sweeper.train import run_trial

from .conftest import build_specs


def test_loss_falls_on_the_builtin_corpus():
    spec = build_specs(lrs=[3e-2], steps=30, evaluation={"every_steps": 10, "val_batches": 4})[0]
    outcome = run_trial(spec)
    assert outcome.status == "complete", outcome.error
    assert outcome.initial_loss > 5.0  # ~ln(256) = 5.55 at init
    assert outcome.final_val_loss < 4.0  # measured ~3.2
    assert outcome.smoothed_train_loss < outcome.initial_loss
    assert outcome.steps_done == 30 and outcome.tokens_done == 30 * 16 * 64
    assert [p.step for p in outcome.curve] == list(range(1, 31))
    assert [p.step for p in outcome.curve if p.val_loss is not None] == [10, 20, 30]
    assert outcome.curve[-1].val_loss == outcome.final_val_loss
    assert outcome.curve[0].lr < outcome.curve[2].lr  # warmup
    assert outcome.wall_seconds > 0 and outcome.ended_at >= outcome.started_at
    assert outcome.trial_id == spec.trial_id and outcome.node_id == "" and outcome.error is None


def test_same_seed_gives_the_same_curve_exactly():
    spec = build_specs(steps=8)[0]
    a, b = run_trial(spec), run_trial(spec)
    assert [(p.train_loss, p.val_loss, p.lr) for p in a.curve] == [
        (p.train_loss, p.val_loss, p.lr) for p in b.curve
    ]
    other = run_trial(build_specs(steps=8, seeds=[1])[0])
    assert other.curve[0].train_loss != a.curve[0].train_loss


def test_huge_learning_rate_diverges_and_stops():
    spec = build_specs(lrs=[1000.0], steps=30, optimizer={"grad_clip": 0})[0]
    outcome = run_trial(spec)
    assert outcome.status == "diverged"
    assert outcome.diverged_step is not None and 1 < outcome.diverged_step < 30
    assert math.isnan(outcome.final_val_loss)
    assert outcome.steps_done == outcome.diverged_step - 1
    assert len(outcome.curve) == outcome.diverged_step
    assert outcome.error is None


def test_token_ids_beyond_the_vocabulary_fail_with_a_message(tmp_path):
    path = tmp_path / "tokens.bin"
    (np.arange(4000, dtype=np.uint16) % 300).tofile(path)
    spec = build_specs(vocab_size=64, steps=3, data={"source": "tokens", "path": str(path)})[0]
    outcome = run_trial(spec)
    assert outcome.status == "failed"
    assert outcome.error.startswith("ValueError: ") and "299" in outcome.error
    assert math.isnan(outcome.final_val_loss) and outcome.diverged_step is None


def test_token_files_train(tmp_path):
    path = tmp_path / "tokens.bin"
    (np.arange(20_000, dtype=np.uint16) % 50).tofile(path)  # a perfectly predictable stream
    spec = build_specs(vocab_size=64, steps=20, lrs=[3e-2], data={"source": "tokens", "path": str(path)})[0]
    outcome = run_trial(spec)
    assert outcome.status == "complete", outcome.error
    assert outcome.final_val_loss < 1.0
