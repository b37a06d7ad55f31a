"""Intake's load average and the token bucket, over monotonic times passed in."""

from __future__ import annotations

import math

import pytest

from bot.domain.ratelimit import LoadAverage, TokenBucket


def busy_in_steps(load: LoadAverage, start: float, end: float, step: float) -> LoadAverage:
    now = start
    while now < end - 1e-9:
        load = load.busy(now, now + step)
        now += step
    return load


def test_an_idle_load_average_stays_zero():
    assert LoadAverage().at(0.0) == LoadAverage().at(60.0) == 0.0


@pytest.mark.parametrize(("since", "share"), [
    (0.0, 1.0),    # busy the whole second since the last update
    (0.5, 0.5),    # idle for the first half
    (1.0, 0.0),    # nothing waited
    (-5.0, 1.0),   # waiting began before the last update: capped at all of it
])
def test_one_update_folds_in_the_busy_share_of_the_time_since_the_last(since, share):
    assert LoadAverage().busy(since, 1.0).value == pytest.approx(share * (1 - math.exp(-1)))


def test_busy_without_a_break_rises_towards_one_however_finely_it_is_updated():
    coarse = LoadAverage().busy(0.0, 3.0)
    fine = busy_in_steps(LoadAverage(), 0.0, 3.0, 0.01)
    assert coarse.value == pytest.approx(fine.value) == pytest.approx(1 - math.exp(-3))
    assert fine.updated == pytest.approx(3.0)


def test_it_decays_by_e_per_window_once_intake_is_idle():
    load = busy_in_steps(LoadAverage(), 0.0, 3.0, 0.1)
    assert load.at(3.0) == pytest.approx(load.value)
    assert load.at(5.5) == pytest.approx(load.value * math.exp(-2.5))
    assert LoadAverage(window=2.0).busy(0.0, 2.0).at(4.0) == pytest.approx((1 - math.exp(-1)) * math.exp(-1))


def test_an_update_at_the_same_instant_changes_nothing():
    load = LoadAverage(value=0.7, updated=4.0)
    assert load.busy(4.0, 4.0).value == pytest.approx(0.7)


def test_the_bucket_allows_its_burst_then_its_rate():
    bucket = TokenBucket(300, now=0.0, burst=5)  # the outbox's Slack trickle: 5 a second
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.available(0.0) == 0
    assert bucket.take(0.0) == pytest.approx(0.2)
    assert bucket.take(0.0) == pytest.approx(0.2)  # a refused take takes nothing
    assert bucket.available(0.5) == 2
    assert bucket.available(1.0) == 5
    assert bucket.available(60.0) == 5  # never more than the burst
    assert [bucket.take(1.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(1.0) > 0
