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
