"""Paper tracking: follow each LONG/SHORT signal over later candles until its take profit, its
stop loss or its expiry, and record the outcome (table ``paper_outcome``).

A candle that touches both levels counts as the stop (the worse case: 1-minute candles do not
say which came first).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, select

from common.db import create_tables, insert_ignore
from signals.schema import Direction, Signal

ONE_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class PaperResult:
    signal_id: str
    symbol: str
    direction: str
    outcome: str  # TP | SL | EXPIRED
    entry: float
    exit_price: float
    exit_time: datetime  # close time of the deciding candle
    return_frac: float  # in the signal's direction, before fees


class PaperOutcome(SQLModel, table=True):
    __tablename__ = "paper_outcome"

    signal_id: str = Field(primary_key=True, max_length=64)
    symbol: str = Field(index=True, max_length=64)
    direction: str = Field(max_length=16)
    outcome: str = Field(max_length=16)
    entry: float
    exit_price: float
    exit_time: datetime
    return_frac: float
    recorded_at: datetime


def evaluate_signal(signal: Signal, candles: pd.DataFrame) -> PaperResult | None:
    """Outcome of one signal against 1-minute candles, or None while it is still open.

    Candles considered: those opening after the signal's bar and closing by ``expires_at``.
    """
    if signal.direction is Direction.NEUTRAL:
        return None
    start = pd.Timestamp(signal.bar_time) + ONE_MINUTE
    expiry = pd.Timestamp(signal.expires_at)
    window = candles.loc[(candles.index >= start) & (candles.index + ONE_MINUTE <= expiry)]
    long = signal.direction is Direction.LONG
    sl, tp = float(signal.stop_loss), float(signal.take_profit)
    sl_hit = (window["low"] <= sl) if long else (window["high"] >= sl)
    tp_hit = (window["high"] >= tp) if long else (window["low"] <= tp)
    decided = window.index[(sl_hit | tp_hit).to_numpy()]
    if len(decided):
        t = decided[0]
        outcome, price = ("SL", sl) if sl_hit.loc[t] else ("TP", tp)
        return _result(signal, outcome, price, t + ONE_MINUTE)
    if len(candles) and candles.index[-1] + ONE_MINUTE >= expiry and len(window):
        return _result(signal, "EXPIRED", float(window["close"].iloc[-1]), window.index[-1] + ONE_MINUTE)
    return None


def _result(signal: Signal, outcome: str, price: float, t: pd.Timestamp) -> PaperResult:
    sign = 1.0 if signal.direction is Direction.LONG else -1.0
    return PaperResult(signal.id, signal.symbol, signal.direction.value, outcome, signal.entry, price,
                       t.to_pydatetime(), sign * (price / signal.entry - 1.0))


class PaperTracker:
    """Holds open signals and writes their outcomes once decided."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.open: dict[str, Signal] = {}
        create_tables(engine, PaperOutcome)

    def track(self, signal: Signal) -> bool:
        """Start following a LONG/SHORT signal; False for NEUTRAL (nothing to follow)."""
        if signal.direction is Direction.NEUTRAL:
            return False
        self.open[signal.id] = signal
        return True

    def update(self, candles_by_symbol: dict[str, pd.DataFrame]) -> list[PaperResult]:
        """Decide what the candles allow, record those outcomes, return them."""
        done = []
        for sid, sig in list(self.open.items()):
            df = candles_by_symbol.get(sig.symbol)
            res = evaluate_signal(sig, df) if df is not None else None
            if res is not None:
                done.append(res)
                del self.open[sid]
        if done:
            rows = [{**asdict(r), "recorded_at": datetime.now(UTC)} for r in done]
            with self.engine.begin() as conn:
                conn.execute(insert_ignore(self.engine, PaperOutcome, ["signal_id"]).values(rows))
        return done

    def outcomes(self) -> list[PaperOutcome]:
        with Session(self.engine) as s:
            return list(s.exec(select(PaperOutcome).order_by(PaperOutcome.exit_time)).all())
