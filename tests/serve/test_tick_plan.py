"""Scheduler bookkeeping (plain logic + real SQLite/PostgreSQL): no minute twice, none silently skipped,\nalso through a database outage."""

from __future__ import annotations

import pandas as pd
import pytest

from common.db import make_engine
from mlsignals.ticks import TickLedger, plan_ticks, seconds_until_next

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
def test_ledger_claims_once_and_completion_is_monotonic(schema_engine, tmp_path):
    a = TickLedger(schema_engine, "app", tmp_path / "a.db")
    b = TickLedger(schema_engine, "app", tmp_path / "b.db")  # a second scheduler, on another node
    other = TickLedger(schema_engine, "other-app")
    m = pd.Timestamp("2026-11-25 11:59", tz="UTC")
    assert a.claim(m) and not b.claim(m)
    assert other.claim(m)  # apps sharing a database have separate ledgers
    assert a.last_completed() is None
    a.complete(m)
    a.complete(m - pd.Timedelta(minutes=3))  # a late catch-up does not move it back
    assert b.last_completed() == m


@pytest.mark.services
def test_ledger_rides_through_a_database_outage_and_a_restart_during_it(schema_engine, tmp_path):
    """Database down: claims and completions go to the local file; a scheduler restarted during
    the outage resumes from it (no minute twice, none skipped); when the database answers again
    everything recorded locally is in it."""
    live, dead = schema_engine, make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    local = tmp_path / "ledger.db"
    m0 = pd.Timestamp("2026-11-25 11:59", tz="UTC")
    m1, m2 = m0 + pd.Timedelta(minutes=1), m0 + pd.Timedelta(minutes=2)
    first = TickLedger(live, "app", local)
    assert first.claim(m0)
    first.complete(m0)
    first.db.engine = dead  # the database goes away
    assert first.claim(m1) and first.using_fallback
    first.complete(m1)
    restarted = TickLedger(dead, "app", local)  # the scheduler restarts during the outage
    assert restarted.last_completed() == m1
    assert plan_ticks(m2 + pd.Timedelta(seconds=63), 2, restarted.last_completed(), True).run == [m2]
    assert not restarted.claim(m1)  # not twice
    assert restarted.claim(m2)
    restarted.db.engine = live  # the database is back
    assert restarted.last_completed() == m1
    assert TickLedger(live, "app").last_completed() == m1  # the outage's completion is in the database
    restarted.complete(m2)
    assert not restarted.using_fallback
    db_only = TickLedger(live, "app")
    assert db_only.last_completed() == m2
    assert not db_only.claim(m1) and not db_only.claim(m2)  # what ran locally is claimed in the database
