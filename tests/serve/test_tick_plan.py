"""Scheduler bookkeeping (plain logic + the real Redis): no minute twice, none silently skipped."""

from __future__ import annotations

import pandas as pd
import pytest
import redis

from mlsignals.ticks import TickLedger, plan_ticks, seconds_until_next
from tests.conftest import REDIS_TEST_URL

T = pd.Timestamp("2026-11-25 12:00:03", tz="UTC")


def test_first_start_runs_the_current_minute():
    p = plan_ticks(T, 2, None, catch_up=True)
    assert p.run == [pd.Timestamp("2026-11-25 11:59", tz="UTC")] and p.skipped == 0


def test_delay_waits_for_the_candle_to_close():
    p = plan_ticks(pd.Timestamp("2026-11-25 12:00:01", tz="UTC"), 2, None, catch_up=True)
    assert p.run == [pd.Timestamp("2026-11-25 11:58", tz="UTC")]


def test_same_minute_is_not_run_twice():
    last = pd.Timestamp("2026-11-25 11:59", tz="UTC")
    assert plan_ticks(T, 2, last, catch_up=True).run == []


def test_missed_minutes_caught_up_once_and_excess_reported():
    last = pd.Timestamp("2026-11-25 11:56", tz="UTC")
    p = plan_ticks(T, 2, last, catch_up=True)
    assert [t.minute for t in p.run] == [57, 58, 59] and p.skipped == 0
    last = pd.Timestamp("2026-11-25 11:40", tz="UTC")
    p = plan_ticks(T, 2, last, catch_up=True, max_catch_up=5)
    assert [t.minute for t in p.run] == [54, 55, 56, 57, 58, 59] and p.skipped == 13
    p = plan_ticks(T, 2, last, catch_up=False)
    assert [t.minute for t in p.run] == [59] and p.skipped == 18


def test_seconds_until_next():
    assert seconds_until_next(pd.Timestamp("2026-11-25 12:00:00.5", tz="UTC"), 2) == pytest.approx(1.5)
    assert seconds_until_next(pd.Timestamp("2026-11-25 12:00:03", tz="UTC"), 2) == pytest.approx(59)


@pytest.mark.services
def test_ledger_claims_once_and_completion_is_monotonic(redis_prefix):
    r = redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    a, b = TickLedger(r, redis_prefix), TickLedger(r, redis_prefix)
    m = pd.Timestamp("2026-11-25 11:59", tz="UTC")
    assert a.claim(m) and not b.claim(m)
    assert a.last_completed() is None
    a.complete(m)
    a.complete(m - pd.Timedelta(minutes=3))  # a late catch-up does not move it back
    assert b.last_completed() == m
