"""Replay of real recorded candles mapped onto wall-clock minutes.

The embedded default source: a live run sees a new closed candle every minute, taken from
the recorded candles shipped in ``data/candles/`` and relabelled with wall-clock times. The
mapping depends only on the wall-clock minute (not on process start), so the scheduler, the
HTTP ingress and the CLI — separate processes — all see the same candle for the same minute.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common.errors import MLSignalsError
from features.candle_files import load_candle_dir
from features.sources.base import FrameSource, last_closed_minute

_MINUTE_NS = 60 * 10**9


class ReplaySource:
    """Cycles through the recorded minutes: wall minute m shows recorded row
    ``history + (m mod (rows - history))``, so at least ``history`` earlier rows always exist
    without crossing the wrap-around point."""

    def __init__(self, frames: dict[str, pd.DataFrame], history: int = 10_000) -> None:
        lengths = {len(f) for f in frames.values()}
        if len(lengths) != 1:
            raise MLSignalsError("replay frames must cover the same minutes")
        self._rows = lengths.pop()
        if self._rows <= history + 1:
            raise MLSignalsError(f"replay needs more than {history + 1} recorded minutes, got {self._rows}")
        self._history = history
        self._recorded = FrameSource(frames)
        # Each minute's rows are cut from plain arrays, never by slicing the recorded frames:
        # under pandas' copy-on-write every slice of a long-lived frame leaves a weak reference
        # on its blocks, dead ones only pruned in batches of hundreds, so a replica serving 100
        # symbols piled up ~1,800 of them a minute (tests/data/test_replay_bounded.py).
        self._arrays = {
            sym: (list(f.columns), [f[c].to_numpy() for c in f.columns])
            for sym, f in ((s, self._recorded.frame(s)) for s in self._recorded.symbols())
        }

    @classmethod
    def from_dir(cls, directory: Path, history: int = 10_000) -> ReplaySource:
        return cls(load_candle_dir(directory), history)

    def symbols(self) -> list[str]:
        return self._recorded.symbols()

    @property
    def history(self) -> int:
        return self._history

    def recorded_row(self, wall_minute: pd.Timestamp) -> int:
        m = pd.Timestamp(wall_minute).value // _MINUTE_NS
        return self._history + int(m % (self._rows - self._history))

    def get_candles(self, symbol: str, n: int, end: pd.Timestamp | None = None) -> pd.DataFrame:
        end_wall = last_closed_minute() if end is None else pd.Timestamp(end).floor("min")
        if end_wall.tzinfo is None:
            end_wall = end_wall.tz_localize("UTC")
        row = self.recorded_row(end_wall)
        self._recorded.frame(symbol)  # UnknownSymbolError naming the served symbols
        columns, arrays = self._arrays[symbol.upper()]
        n = min(n, self._history + 1)
        lo = max(0, row - n + 1)
        index = pd.date_range(end=end_wall, periods=row + 1 - lo, freq="1min", unit="ns", name="timestamp")
        return pd.DataFrame({c: a[lo : row + 1].copy() for c, a in zip(columns, arrays, strict=True)}, index=index)
