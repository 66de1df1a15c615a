import math

import pytest

from sweeper.recipe import Schedule
from sweeper.train.schedules import lr_at, lr_table

PEAK = 0.01


def test_cosine_warms_up_linearly_to_peak_and_ends_at_floor():
    schedule = Schedule(kind="cosine", warmup_fraction=0.1, min_lr_ratio=0.1)
    lrs = lr_table(100, PEAK, schedule)
    assert lrs[0] == pytest.approx(PEAK / 10)
    assert lrs[4] == pytest.approx(PEAK / 2)
    assert lrs[9] == pytest.approx(PEAK)  # last warmup step reaches the peak
    assert lrs[-1] == pytest.approx(0.1 * PEAK)
    assert max(lrs) == pytest.approx(PEAK)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # decays monotonically
    midpoint = 10 + 45  # halfway through the decay: mean of peak and floor
    assert lrs[midpoint - 1] == pytest.approx((PEAK + 0.1 * PEAK) / 2)


def test_constant_is_flat_after_warmup():
    schedule = Schedule(kind="constant", warmup_fraction=0.2, min_lr_ratio=0.1)
    lrs = lr_table(50, PEAK, schedule)
    assert lrs[0] == pytest.approx(PEAK / 10)
    assert all(lr == PEAK for lr in lrs[9:])


def test_wsd_warms_holds_then_decays_linearly_to_floor():
    schedule = Schedule(kind="wsd", warmup_fraction=0.1, min_lr_ratio=0.0, decay_fraction=0.2)
    lrs = lr_table(100, PEAK, schedule)
    assert lrs[9] == pytest.approx(PEAK)
    assert all(lr == PEAK for lr in lrs[9:80])  # stable until the last 20 steps
    assert lrs[89] == pytest.approx(PEAK / 2)
    assert lrs[-1] == pytest.approx(0.0)
    steps = [lrs[i] - lrs[i + 1] for i in range(80, 99)]
    assert max(steps) - min(steps) < 1e-12  # linear


def test_no_warmup_starts_at_peak_and_steps_clamp():
    schedule = Schedule(kind="cosine", warmup_fraction=0.0, min_lr_ratio=0.0)
    assert lr_at(1, 10, PEAK, schedule) == pytest.approx(PEAK * 0.5 * (1 + math.cos(math.pi / 10)))
    assert lr_at(0, 10, PEAK, schedule) == lr_at(1, 10, PEAK, schedule)
    assert lr_at(99, 10, PEAK, schedule) == pytest.approx(0.0)
    assert lr_at(1, 1, PEAK, schedule) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        lr_at(1, 0, PEAK, schedule)


@pytest.mark.parametrize("kind", ["cosine", "constant", "wsd"])
def test_every_schedule_stays_within_floor_and_peak(kind):
    schedule = Schedule(kind=kind, warmup_fraction=0.05, min_lr_ratio=0.1)
    lrs = lr_table(37, PEAK, schedule)
    assert len(lrs) == 37
    assert all(0 < lr <= PEAK * (1 + 1e-12) for lr in lrs)


def test_power_schedule_follows_its_law_capped_at_the_peak_then_decays():
    # B * a * n^b with B = 64 tokens: 64 * 3e-3 * (64 s)^-0.5 = 0.024 / sqrt(s): capped at
    # the peak (0.01) up to step 5, the law from step 6 on.
    schedule = Schedule(kind="power", a=3e-3, b=-0.5, warmup_steps=4, decay_fraction=0.2, min_lr_ratio=0.1)
    lrs = lr_table(100, PEAK, schedule, batch_tokens=64)
    law = [64 * 3e-3 * (64 * step) ** -0.5 for step in range(1, 101)]
    assert lrs[3] == pytest.approx(min(PEAK, law[3]))  # the warmup ends on the law's value
    assert lrs[0] == pytest.approx(min(PEAK, law[3]) / 4)
    for step in range(5, 81):  # stable phase: the law, capped at the peak
        assert lrs[step - 1] == pytest.approx(min(PEAK, law[step - 1]))
    assert lrs[-1] == pytest.approx(0.1 * lrs[79])  # the decay ends at min_lr_ratio x its start
    assert any(lr < PEAK for lr in lrs[4:80]) and any(lr == PEAK for lr in lrs[4:80])


def test_power_schedule_before_its_decay_does_not_depend_on_the_run_length():
    schedule = Schedule(kind="power", a=1e-3, b=-0.5, warmup_steps=4, decay_fraction=0.2)
    short, long = (
        lr_table(50, PEAK, schedule, batch_tokens=64),
        lr_table(200, PEAK, schedule, batch_tokens=64),
    )
    assert short[:40] == long[:40]


def test_power_schedule_needs_its_law_and_the_batch():
    with pytest.raises(ValueError):
        Schedule(kind="power", a=1e-3)
    with pytest.raises(ValueError):
        Schedule(kind="cosine", a=1e-3, b=-0.5)
    with pytest.raises(ValueError):
        lr_table(10, PEAK, Schedule(kind="power", a=1e-3, b=-0.5))
