"""The transactional outbox: every signal is first a row in the database, then delivered.

A row is unique on the signal id, so adding the same signal twice is a no-op. Rows are
delivered in insertion order (``seq``), which keeps per-symbol order; delivered rows keep
``delivered_at`` and can be pruned later.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, select

from common.db import create_tables, insert_ignore
from signals.schema import Signal


class OutboxRow(SQLModel, table=True):
    """One signal waiting for (or done with) delivery onto Redis."""

    __tablename__ = "signal_outbox"

    seq: int | None = Field(default=None, primary_key=True)
    signal_id: str = Field(unique=True, max_length=64)
    symbol: str = Field(index=True, max_length=64)
    payload: str  # Signal JSON, exactly what goes onto the stream
    created_at: datetime
    delivered_at: datetime | None = Field(default=None, index=True)
    stream_id: str | None = Field(default=None, max_length=64)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)


class Outbox:
    """Database side of delivery. Methods raise SQLAlchemyError when the database is down."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._tables = False
        with contextlib.suppress(SQLAlchemyError):  # a database down at start-up is an outage too
            self._ensure_tables()

    def _ensure_tables(self) -> None:
        if not self._tables:
            create_tables(self.engine, OutboxRow)
            self._tables = True

    def add(self, signal: Signal) -> bool:
        """Store a signal for delivery; False when its id was already there (idempotent)."""
        self._ensure_tables()
        stmt = insert_ignore(self.engine, OutboxRow, ["signal_id"]).values(
            signal_id=signal.id, symbol=signal.symbol, payload=signal.model_dump_json(),
            created_at=datetime.now(UTC), attempts=0,
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def pending(self, limit: int = 200) -> list[OutboxRow]:
        """Undelivered rows, oldest first."""
        self._ensure_tables()
        with Session(self.engine) as s:
            q = select(OutboxRow).where(OutboxRow.delivered_at.is_(None)).order_by(OutboxRow.seq).limit(limit)
            return list(s.exec(q).all())

    def pending_count(self) -> int:
        self._ensure_tables()
        with Session(self.engine) as s:
            q = select(func.count()).select_from(OutboxRow).where(OutboxRow.delivered_at.is_(None))
            return int(s.exec(q).one())

    def mark_delivered(self, seq: int, stream_id: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(OutboxRow).where(OutboxRow.seq == seq)
                .values(delivered_at=datetime.now(UTC), stream_id=stream_id)
            )

    def mark_failed(self, seq: int, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(OutboxRow).where(OutboxRow.seq == seq)
                .values(attempts=OutboxRow.attempts + 1, last_error=error[:500])
            )

    def prune(self, older_than: timedelta) -> int:
        """Delete delivered rows older than ``older_than``; returns how many."""
        cutoff = datetime.now(UTC) - older_than
        with self.engine.begin() as conn:
            t = OutboxRow.__table__
            res = conn.execute(t.delete().where(t.c.delivered_at.is_not(None), t.c.delivered_at < cutoff))
            return int(res.rowcount)
