"""The prediction log: one row per (symbol, bar time, model version) with everything needed
to audit a prediction later, and the realised outcomes filled in once each horizon passed.

If the database is unreachable, rows wait in a bounded spool on local disk (signals/spool.py:
a SQLite file under var/, committed before ``record`` returns) and are written oldest first when
it answers again, also by a new process after a crash; callers (the tick) never block on or fail
because of the log. A row written twice (a crash between the insert and the spool delete) is
ignored by the unique (symbol, bar time, model version) key.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import JSON, Column, Engine, UniqueConstraint, bindparam, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, select

from common.db import create_tables, insert_ignore
from model.contract import ModelOutput, TargetSpec
from signals.schema import Signal
from signals.spool import DiskSpool

log = logging.getLogger(__name__)

# Substrings of feature names worth a glance in the log; the first column matching each is kept.
KEY_INDICATORS: tuple[str, ...] = ("rsi", "atr", "macd", "adx", "bb", "volume", "return")


class PredictionRow(SQLModel, table=True):
    __tablename__ = "prediction_log"
    __table_args__ = (UniqueConstraint("symbol", "bar_time", "model_version", name="uq_prediction"),)

    id: int | None = Field(default=None, primary_key=True)
    symbol: str = Field(index=True, max_length=64)
    bar_time: datetime = Field(index=True)
    model_version: str = Field(max_length=128)
    feature_spec_hash: str = Field(max_length=128)
    signal_id: str = Field(max_length=64)
    direction: str = Field(max_length=16)
    feature_summary: dict = Field(sa_column=Column(JSON))
    raw_outputs: list | None = Field(default=None, sa_column=Column(JSON))
    contract: dict | None = Field(default=None, sa_column=Column(JSON))
    signal: dict = Field(sa_column=Column(JSON))
    latencies_ms: dict = Field(sa_column=Column(JSON))
    target_spec: dict = Field(sa_column=Column(JSON))
    outcomes: dict | None = Field(default=None, sa_column=Column(JSON))
    outcomes_complete: bool = Field(default=False, index=True)
    created_at: datetime


def _f(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summarize_features(
    row: np.ndarray | None, names: Sequence[str], spec_hash: str, keys: Sequence[str] = KEY_INDICATORS
) -> dict:
    """Small JSON summary of one feature row [F]: count, spec hash, NaN count, min/max/mean over
    finite values and a few key indicators by name."""
    if row is None:
        return {"count": 0, "spec_hash": spec_hash}
    x = np.asarray(row, dtype=np.float64).reshape(-1)
    fin = x[np.isfinite(x)]
    key_values: dict[str, float | None] = {}
    for k in keys:
        for i, n in enumerate(names[: len(x)]):
            if k in n.lower():
                key_values[n] = _f(x[i])
                break
    return {
        "count": int(x.size), "spec_hash": spec_hash, "nan_count": int(x.size - fin.size),
        "min": _f(fin.min()) if fin.size else None, "max": _f(fin.max()) if fin.size else None,
        "mean": _f(fin.mean()) if fin.size else None, "key": key_values,
    }


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


_DATETIMES = ("bar_time", "created_at")
_UNIQUE = ["symbol", "bar_time", "model_version"]


class PredictionLog:
    """Writes prediction rows, spools them while the DB is down, fills outcomes later.

    spool_path: the spool file (one per database: it must never be drained into another);
    None keeps the spool in memory (tests, the CLI), which a crash loses."""

    def __init__(self, engine: Engine, spool_path: str | None = None, max_spool: int = 100_000) -> None:
        self.engine = engine
        self.spool = DiskSpool(spool_path or ":memory:", max_spool)
        self._lock = threading.Lock()  # record() is called from concurrent request threads
        self._spooled = len(self.spool) > 0  # rows left by an earlier process: drained first
        self._tables = False
        with contextlib.suppress(SQLAlchemyError):  # a database down at start-up is an outage too
            self._ensure_tables()

    def _ensure_tables(self) -> None:
        if not self._tables:
            create_tables(self.engine, PredictionRow)
            self._tables = True

    @property
    def queued(self) -> int:
        """Rows waiting in the spool."""
        return len(self.spool)

    @property
    def dropped(self) -> int:
        return self.spool.dropped

    def record(
        self,
        signal: Signal,
        *,
        output: ModelOutput | None,
        target_spec: TargetSpec,
        feature_summary: dict,
        latencies_ms: Mapping[str, float],
    ) -> bool:
        """Log one prediction; True when written now, False when spooled (DB down). A repeat of
        (symbol, bar_time, model_version) is ignored."""
        values = {
            "symbol": signal.symbol, "bar_time": signal.bar_time, "model_version": signal.model_version,
            "feature_spec_hash": signal.feature_spec_hash, "signal_id": signal.id,
            "direction": signal.direction.value, "feature_summary": feature_summary,
            "raw_outputs": None if output is None else [_f(v) for v in np.asarray(output.raw, float)],
            "contract": None if output is None or not output.is_finite() else output.to_dict(target_spec),
            "signal": signal.model_dump(mode="json"),
            "latencies_ms": {k: round(float(v), 3) for k, v in latencies_ms.items()},
            "target_spec": target_spec.to_dict(), "created_at": datetime.now(UTC),
        }
        with self._lock:
            if not self._spooled:  # the usual path: straight into the database
                try:
                    self._insert([values])
                    return True
                except SQLAlchemyError as exc:
                    log.warning("prediction log: database unavailable (%s); spooling rows to %s",
                                type(exc).__name__, self.spool.path)
            self.spool.push({k: v.isoformat() if k in _DATETIMES else v for k, v in values.items()})
            self._spooled = True
            return self._drain_locked()

    def flush(self) -> bool:
        """Write spooled rows oldest first; False when the DB is still down."""
        with self._lock:
            return self._drain_locked()

    def _drain_locked(self, batch: int = 200) -> bool:
        while rows := self.spool.peek(batch):
            docs = [{k: datetime.fromisoformat(v) if k in _DATETIMES else v for k, v in d.items()} for _, d in rows]
            try:
                self._insert(docs)
            except SQLAlchemyError:
                return False
            self.spool.remove_through(rows[-1][0])  # after the commit: a crash here only repeats rows
        if self._spooled:
            log.info("prediction log: spool drained into the database")
        self._spooled = False
        return True

    def _insert(self, rows: list[dict]) -> None:
        self._ensure_tables()
        with self.engine.begin() as conn:
            for values in rows:  # one statement per row: a multi-row VALUES needs equal keys
                conn.execute(insert_ignore(self.engine, PredictionRow, _UNIQUE).values(values))

    def rows(self, symbol: str | None = None) -> list[PredictionRow]:
        self._ensure_tables()
        with Session(self.engine) as s:
            q = select(PredictionRow).order_by(PredictionRow.id)
            if symbol:
                q = q.where(PredictionRow.symbol == symbol)
            return list(s.exec(q).all())

    def fill_outcomes(self, candles_by_symbol: Mapping[str, pd.DataFrame]) -> int:
        """Fill realised return and direction per horizon for rows whose horizons have passed.

        candles_by_symbol: 1-minute candle frames (UTC open-time index). The entry is the close
        of the bar_time candle; the realised close of horizon h is the close of the candle
        opening h minutes later. Returns how many rows changed.
        """
        self._ensure_tables()
        frames = [df for df in candles_by_symbol.values() if df is not None and not df.empty]
        if not frames:
            return 0
        since = min(df.index[0] for df in frames).to_pydatetime()  # older rows cannot be completed here
        # Only the columns needed, as plain tuples, and the changes in one executemany: loading
        # whole ORM rows and updating them one statement at a time made each UPDATE autoflush a
        # session holding every incomplete row (up to the longest horizon's worth, 72,000 rows
        # at 100 symbols and 12 h), a per-minute cost that grew with the square of the rows.
        t = PredictionRow.__table__
        with self.engine.begin() as conn:
            todo = conn.execute(select(t.c.id, t.c.symbol, t.c.bar_time, t.c.target_spec, t.c.outcomes).where(
                t.c.outcomes_complete.is_(False), t.c.bar_time >= since)).all()
            updates = []
            for row_id, symbol, bar_time, target_spec, outcomes in todo:
                df = candles_by_symbol.get(symbol)
                if df is None or df.empty:
                    continue
                spec = TargetSpec.from_dict(target_spec)
                new = self._outcomes(spec, bar_time, outcomes, df)
                if new is None or new == (outcomes or {}):
                    continue
                updates.append({"row_id": row_id, "new_outcomes": new, "complete": len(new) == len(spec.horizons)})
            if updates:
                conn.execute(update(t).where(t.c.id == bindparam("row_id"))
                             .values(outcomes=bindparam("new_outcomes"), outcomes_complete=bindparam("complete")),
                             updates)
            changed = len(updates)
        return changed

    @staticmethod
    def _outcomes(spec: TargetSpec, bar_time: datetime, outcomes: dict | None, df: pd.DataFrame) -> dict | None:
        t0 = pd.Timestamp(_utc(bar_time))
        if t0 not in df.index:
            return None
        c0 = float(df.at[t0, "close"])
        out = dict(outcomes or {})
        for i, h in enumerate(spec.horizons):
            t = t0 + timedelta(minutes=spec.horizon_minutes(i))
            if f"h{h}" in out or t not in df.index:
                continue
            r = float(df.at[t, "close"]) / c0 - 1.0
            band = spec.flat_bands[i]
            direction = "LONG" if r > band else "SHORT" if r < -band else "FLAT"
            out[f"h{h}"] = {"return": r, "direction": direction, "minutes": spec.horizon_minutes(i)}
        return out
