"""Which minutes the scheduler must run, with state that outlives the scheduler and any one
outage, so that a restarted scheduler neither fires a minute twice nor silently skips one.

A tick is named by its bar minute: the open time of the last closed 1-minute candle. Each
minute is *claimed* before it runs (a unique (scope, minute) row: two schedulers, or a restart
inside the same minute, cannot both run it) and recorded as *completed* afterwards. After
downtime, the missed minutes are caught up once each, oldest first, up to ``max_catch_up``;
older ones are reported as skipped (logged and counted), never silently dropped.

Where: the database (shared by every node), not Redis, so the clock keeps going while Redis
is down: the signals of those minutes wait in the outbox. While the database is down the
ledger uses a local SQLite file (var/spool/), and writes what it recorded there into the
database when it answers again. Every completion is mirrored into that file too, so a
scheduler restarted during a database outage still knows where it stopped (on the same node;
a scheduler moved to another node during a database outage starts without catch-up, logged).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, UniqueConstraint, func, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, select

from common.db import create_tables, insert_ignore, make_engine
from features.sources.base import last_closed_minute

log = logging.getLogger(__name__)
_MINUTE = pd.Timedelta(minutes=1)


@dataclass(frozen=True)
class TickPlan:
    run: list[pd.Timestamp]  # minutes to run now, oldest first
    skipped: int  # missed minutes beyond the catch-up limit


class TickRow(SQLModel, table=True):
    """One claimed (and maybe completed) minute of one deployment of the service."""

    __tablename__ = "scheduler_ticks"
    __table_args__ = (UniqueConstraint("scope", "minute", name="uq_scheduler_tick"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=128)  # the delivery prefix: apps sharing a database stay apart
    minute: str = Field(max_length=40)  # ISO-8601 UTC; strings of one format sort like the times
    claimed_at: datetime
    completed_at: datetime | None = None
    synced: bool = True  # local file only: False until written into the database


def _iso(minute: pd.Timestamp) -> str:
    return pd.Timestamp(minute).tz_convert("UTC").isoformat()


class _Store:
    """The ledger operations on one database (the shared one or the local fallback file)."""

    def __init__(self, engine: Engine, scope: str) -> None:
        self.engine, self.scope = engine, scope
        self._tables = False

    def _ready(self) -> None:
        if not self._tables:
            create_tables(self.engine, TickRow)
            self._tables = True

    def claim(self, minute: str, synced: bool = True) -> bool:
        self._ready()
        stmt = insert_ignore(self.engine, TickRow, ["scope", "minute"]).values(
            scope=self.scope, minute=minute, claimed_at=datetime.now(UTC), synced=synced)
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def complete(self, minute: str, synced: bool = True, at: datetime | None = None) -> None:
        self._ready()
        at = at or datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(insert_ignore(self.engine, TickRow, ["scope", "minute"]).values(
                scope=self.scope, minute=minute, claimed_at=at, synced=synced))
            conn.execute(update(TickRow).where(TickRow.scope == self.scope, TickRow.minute == minute)
                         .values(completed_at=func.coalesce(TickRow.completed_at, at), synced=synced))

    def last_completed(self) -> str | None:
        self._ready()
        with Session(self.engine) as s:
            q = select(func.max(TickRow.minute)).where(TickRow.scope == self.scope, TickRow.completed_at.is_not(None))
            return s.exec(q).one()

    def unsynced(self) -> list[TickRow]:
        self._ready()
        with Session(self.engine) as s:
            q = select(TickRow).where(TickRow.scope == self.scope, TickRow.synced.is_(False)).order_by(TickRow.minute)
            return list(s.exec(q).all())

    def prune(self, before: str) -> None:
        """Forget synced rows older than ``before`` (the local mirror only needs the latest)."""
        with self.engine.begin() as conn:
            conn.execute(TickRow.__table__.delete().where(
                TickRow.scope == self.scope, TickRow.synced.is_(True), TickRow.minute < before))

    def mark_synced(self, minutes: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(TickRow).where(TickRow.scope == self.scope, TickRow.minute.in_(minutes))
                         .values(synced=True))


class TickLedger:
    """Claims and completions in the database (``engine``), falling back to the local SQLite
    file ``local_path`` while the database is down; reconciled when it answers again."""

    def __init__(self, engine: Engine, scope: str, local_path: str | Path | None = None) -> None:
        self.db = _Store(engine, scope)
        self.local = None if local_path is None else _Store(make_engine(f"sqlite:///{local_path}"), scope)
        self.using_fallback = False

    def claim(self, minute: pd.Timestamp) -> bool:
        """True if this caller won the minute (nobody ran or is running it)."""
        m = _iso(minute)
        if self._reconcile():
            try:
                return self.db.claim(m)
            except SQLAlchemyError as exc:
                self._down(exc)
        if self.local is None:
            raise RuntimeError("tick ledger: database down and no local fallback configured")
        return self.local.claim(m, synced=False)

    def complete(self, minute: pd.Timestamp) -> None:
        """Record ``minute`` as completed (the latest completed minute never moves back)."""
        m = _iso(minute)
        if self._reconcile():
            try:
                self.db.complete(m)
                if self.local is not None:  # the mirror a restart during a DB outage reads
                    with contextlib.suppress(SQLAlchemyError):
                        self.local.complete(m, synced=True)
                        self.local.prune(_iso(minute - pd.Timedelta(days=1)))
                return
            except SQLAlchemyError as exc:
                self._down(exc)
        if self.local is None:
            raise RuntimeError("tick ledger: database down and no local fallback configured")
        self.local.complete(m, synced=False)

    def last_completed(self) -> pd.Timestamp | None:
        found: list[str] = []
        if self._reconcile():
            try:
                found.append(self.db.last_completed())
            except SQLAlchemyError as exc:
                self._down(exc)
        if self.local is not None:
            with contextlib.suppress(SQLAlchemyError):
                found.append(self.local.last_completed())
        found = [f for f in found if f]
        return pd.Timestamp(max(found)) if found else None

    def _reconcile(self) -> bool:
        """Write what the local file recorded during an outage into the database; False when
        the database is (still) down."""
        if self.local is None:
            return True
        try:
            rows = self.local.unsynced()
            for row in rows:
                if not self.db.claim(row.minute) and row.completed_at is None:
                    log.warning("tick ledger: minute %s was also claimed in the database during the outage",
                                row.minute)
                if row.completed_at is not None:
                    self.db.complete(row.minute, at=row.completed_at)
            if rows:
                self.local.mark_synced([r.minute for r in rows])
                log.info("tick ledger: database back; %d minute(s) recorded locally written to it", len(rows))
        except SQLAlchemyError as exc:
            self._down(exc)
            return False
        if self.using_fallback:
            log.info("tick ledger: database back")
        self.using_fallback = False
        return True

    def _down(self, exc: Exception) -> None:
        if not self.using_fallback:
            log.warning("tick ledger: database unavailable (%s); using the local ledger", type(exc).__name__)
        self.using_fallback = True


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
