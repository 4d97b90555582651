"""The one interface every market-data source implements, and an in-memory source over frames."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd

from common.errors import UnknownSymbolError


@runtime_checkable
class MarketDataSource(Protocol):
    """"Give me the last N closed 1-minute candles of symbol S at time T."

    ``end`` is the open time of the last candle wanted (inclusive); ``None`` means "now": the
    last candle that has closed by the wall clock. Returned frames are validated candle frames
    (see features/candles.py), oldest first, possibly fewer than ``n`` rows if history is short.
    """

    def symbols(self) -> list[str]: ...

    def get_candles(self, symbol: str, n: int, end: pd.Timestamp | None = None) -> pd.DataFrame: ...


def last_closed_minute(now: pd.Timestamp | None = None) -> pd.Timestamp:
    """Open time of the most recent 1-minute candle that has closed at ``now``."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if now.tzinfo is None:
        now = now.tz_localize("UTC")
    return now.floor("min") - pd.Timedelta(minutes=1)


class FrameSource:
    """Candles held in memory (files given on the command line, backtests, tests).

    ``end`` is interpreted in the frames' own timestamps; ``end=None`` means their last row.
    """

    def __init__(self, frames: dict[str, pd.DataFrame]) -> None:
        self._frames = {s.upper(): f for s, f in frames.items()}

    def symbols(self) -> list[str]:
        return sorted(self._frames)

    def frame(self, symbol: str) -> pd.DataFrame:
        try:
            return self._frames[symbol.upper()]
        except KeyError:
            raise UnknownSymbolError(
                f"unknown symbol {symbol!r}; this source has {', '.join(self.symbols()) or 'no symbols'}"
            ) from None

    def get_candles(self, symbol: str, n: int, end: pd.Timestamp | None = None) -> pd.DataFrame:
        df = self.frame(symbol)
        if end is not None:
            stop = df.index.searchsorted(pd.Timestamp(end), side="right")
            df = df.iloc[:stop]
        return df.iloc[-n:] if n > 0 else df.iloc[0:0]
