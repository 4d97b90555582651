"""SQL candle store (sqlmodel): SQLite by default, PostgreSQL by URL, fed by
``mlsignals data import``. Rows are unique on (exchange, symbol, timeframe, time); imports are
bulk upserts inside one transaction, so a file is written whole or not at all."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import UniqueConstraint, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel

from common.db import create_tables
from common.errors import DataSourceError
from features.candles import CANDLE_COLUMNS, find_gaps

_CHUNK = 5_000


class CandleRow(SQLModel, table=True):
    __tablename__ = "candles"
    __table_args__ = (UniqueConstraint("exchange", "symbol", "timeframe", "time", name="uq_candle"),)

    id: int | None = Field(default=None, primary_key=True)
    exchange: str = Field(index=True, max_length=32)
    symbol: str = Field(index=True, max_length=32)
    timeframe: str = Field(max_length=8)
    time: datetime = Field(index=True, description="candle open time, UTC")
    open: float
    high: float
    low: float
    close: float
    volume: float


def _as_utc(t: datetime) -> pd.Timestamp:
    """A stored time (naive UTC on SQLite, aware on PostgreSQL) as a UTC Timestamp."""
    ts = pd.Timestamp(t)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("ns")


def _utc(ts: pd.DatetimeIndex) -> list[datetime]:
    return list(ts.tz_convert("UTC").to_pydatetime())


class SqlCandleStore:
    """Implements MarketDataSource over the ``candles`` table."""

    def __init__(self, engine: Engine, exchange: str = "bybit", timeframe: str = "1m") -> None:
        self.engine, self.exchange, self.timeframe = engine, exchange, timeframe
        create_tables(engine)

    def upsert(self, symbol: str, candles: pd.DataFrame) -> int:
        """Insert or update validated candles of one symbol in one transaction; returns rows written."""
        if candles.empty:
            return 0
        values = candles.loc[:, list(CANDLE_COLUMNS)].to_numpy(dtype="float64")
        times = _utc(candles.index)
        rows = [
            {"exchange": self.exchange, "symbol": symbol, "timeframe": self.timeframe, "time": t,
             **dict(zip(CANDLE_COLUMNS, map(float, v), strict=True))}
            for t, v in zip(times, values, strict=True)
        ]
        dialect = self.engine.dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        table = CandleRow.__table__
        try:
            with self.engine.begin() as conn:  # one transaction: all or nothing
                for i in range(0, len(rows), _CHUNK):
                    stmt = insert(table).values(rows[i : i + _CHUNK])
                    stmt = stmt.on_conflict_do_update(
                        index_elements=["exchange", "symbol", "timeframe", "time"],
                        set_={c: stmt.excluded[c] for c in CANDLE_COLUMNS},
                    )
                    conn.execute(stmt)
        except SQLAlchemyError as exc:
            raise DataSourceError(f"candle store write failed for {symbol}: {type(exc).__name__}") from None
        return len(rows)

    def symbols(self) -> list[str]:
        t = CandleRow.__table__
        with self.engine.connect() as conn:
            q = select(t.c.symbol).where(t.c.exchange == self.exchange, t.c.timeframe == self.timeframe)
            return sorted({r[0] for r in conn.execute(q.distinct())})

    def get_candles(self, symbol: str, n: int, end: pd.Timestamp | None = None) -> pd.DataFrame:
        t = CandleRow.__table__
        q = select(t.c.time, *[t.c[c] for c in CANDLE_COLUMNS]).where(
            t.c.exchange == self.exchange, t.c.symbol == symbol, t.c.timeframe == self.timeframe
        )
        if end is not None:
            q = q.where(t.c.time <= pd.Timestamp(end).tz_convert("UTC").to_pydatetime())
        q = q.order_by(t.c.time.desc()).limit(n)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
        except SQLAlchemyError as exc:
            raise DataSourceError(f"candle store read failed for {symbol}: {type(exc).__name__}") from None
        df = pd.DataFrame(rows, columns=["timestamp", *CANDLE_COLUMNS])
        df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).dt.as_unit("ns")
        return df.set_index("timestamp").sort_index().astype("float64")

    def time_range(self, symbol: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """(first, last) candle open time stored for ``symbol`` on this exchange, None if none."""
        t = CandleRow.__table__
        q = select(func.min(t.c.time), func.max(t.c.time)).where(
            t.c.exchange == self.exchange, t.c.symbol == symbol, t.c.timeframe == self.timeframe
        )
        try:
            with self.engine.connect() as conn:
                first, last = conn.execute(q).one()
        except SQLAlchemyError as exc:
            raise DataSourceError(f"candle store read failed for {symbol}: {type(exc).__name__}") from None
        if first is None:
            return None
        return _as_utc(first), _as_utc(last)

    def exchanges(self) -> list[str]:
        """Every exchange label with rows of this timeframe in the store."""
        t = CandleRow.__table__
        with self.engine.connect() as conn:
            q = select(t.c.exchange).where(t.c.timeframe == self.timeframe).distinct()
            return sorted(r[0] for r in conn.execute(q))

    def coverage(self, all_exchanges: bool = False) -> list[dict]:
        """Per symbol: first/last time, rows, gaps (count and missing minutes); of this
        store's exchange, or of every exchange label in the table."""
        if all_exchanges:
            return [e for ex in self.exchanges()
                    for e in SqlCandleStore(self.engine, ex, self.timeframe).coverage()]
        t = CandleRow.__table__
        q = (
            select(t.c.symbol, func.min(t.c.time), func.max(t.c.time), func.count())
            .where(t.c.exchange == self.exchange, t.c.timeframe == self.timeframe)
            .group_by(t.c.symbol)
            .order_by(t.c.symbol)
        )
        with self.engine.connect() as conn:
            summary = conn.execute(q).all()
        out = []
        for sym, _first, _last, rows in summary:
            full = self.get_candles(sym, int(rows))
            gaps = find_gaps(full)
            out.append(coverage_entry(sym, self.exchange, full.index[0], full.index[-1], int(rows), gaps))
        return out


def coverage_entry(symbol: str, exchange: str, first: pd.Timestamp, last: pd.Timestamp, rows: int, gaps: list) -> dict:
    return {
        "symbol": symbol,
        "exchange": exchange,
        "first": pd.Timestamp(first).isoformat(),
        "last": pd.Timestamp(last).isoformat(),
        "rows": rows,
        "gaps": len(gaps),
        "missing_minutes": int(sum(g.missing for g in gaps)),
    }
