"""Which minutes the scheduler must run, with state in Redis so that a restarted scheduler
neither fires a minute twice nor silently skips one.

A tick is named by its bar minute: the open time of the last closed 1-minute candle. Each
minute is *claimed* with ``SET NX`` before it runs (two schedulers, or a restart inside the
same minute, cannot both run it) and recorded as *completed* afterwards. After downtime, the
missed minutes are caught up once each, oldest first, up to ``max_catch_up``; older ones are
reported as skipped (logged and counted), never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import redis

from features.sources.base import last_closed_minute

log = logging.getLogger(__name__)
_MINUTE = pd.Timedelta(minutes=1)


@dataclass(frozen=True)
class TickPlan:
    run: list[pd.Timestamp]  # minutes to run now, oldest first
    skipped: int  # missed minutes beyond the catch-up limit


class TickLedger:
    """Redis keys under ``prefix``: ``last_completed`` (ISO minute) and ``claim:<minute>``."""

    def __init__(self, client: redis.Redis, prefix: str, claim_ttl_s: int = 6 * 3600) -> None:
        self.r, self.prefix, self.claim_ttl_s = client, prefix.rstrip(":"), claim_ttl_s

    def _key(self, name: str) -> str:
        return f"{self.prefix}:scheduler:{name}"

    def last_completed(self) -> pd.Timestamp | None:
        v = self.r.get(self._key("last_completed"))
        return pd.Timestamp(v) if v else None

    def claim(self, minute: pd.Timestamp) -> bool:
        """True if this caller won the minute (nobody ran or is running it)."""
        return bool(self.r.set(self._key(f"claim:{minute.isoformat()}"), "1", nx=True, ex=self.claim_ttl_s))

    def complete(self, minute: pd.Timestamp) -> None:
        """Record ``minute`` as the last completed one unless a later one already is (atomic)."""
        script = """
        local cur = redis.call('GET', KEYS[1])
        if (not cur) or cur < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) end
        return 1
        """
        # ISO-8601 UTC strings of equal format compare like the times they name.
        self.r.eval(script, 1, self._key("last_completed"), minute.isoformat())


def plan_ticks(
    now: pd.Timestamp, delay_s: float, last_completed: pd.Timestamp | None, catch_up: bool, max_catch_up: int = 5
) -> TickPlan:
    """The minutes due at ``now``: the current bar minute (its candle closed ``delay_s`` ago),
    plus missed minutes since ``last_completed`` when catching up."""
    current = last_closed_minute(pd.Timestamp(now) - pd.Timedelta(seconds=delay_s))
    if last_completed is not None and current <= last_completed:
        return TickPlan([], 0)
    if last_completed is None or not catch_up:
        missed = 0 if last_completed is None else int((current - last_completed) / _MINUTE) - 1
        return TickPlan([current], missed)
    missed = int((current - last_completed) / _MINUTE) - 1
    take = min(missed, max_catch_up)
    run = [current - _MINUTE * k for k in range(take, 0, -1)] + [current]
    return TickPlan(run, missed - take)


def seconds_until_next(now: pd.Timestamp, delay_s: float) -> float:
    """Sleep until the next minute boundary plus ``delay_s``."""
    now = pd.Timestamp(now)
    nxt = now.floor("min") + pd.Timedelta(seconds=delay_s)
    if nxt <= now:
        nxt += _MINUTE
    return (nxt - now).total_seconds()
