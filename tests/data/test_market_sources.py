"""Market-data sources: replay mapping onto wall-clock minutes, the frame source, and the
live ccxt source driven by recorded ccxt-format payloads."""

from __future__ import annotations

import ccxt
import pandas as pd
import pytest

from features.sources.base import FrameSource, last_closed_minute
from features.sources.ccxt_source import CcxtSource, ccxt_symbol
from features.sources.replay import ReplaySource
from common.errors import DataSourceError, UnknownSymbolError


def test_last_closed_minute():
    assert last_closed_minute(pd.Timestamp("2025-01-01 10:05:30", tz="UTC")) == pd.Timestamp(
        "2025-01-01 10:04", tz="UTC"
    )


def test_replay_maps_wall_minutes_to_consecutive_recorded_candles(shipped_candles):
    src = ReplaySource(shipped_candles, history=2000)
    t = pd.Timestamp("2026-11-25 12:00", tz="UTC")
    a = src.get_candles("ETHUSDT", 500, end=t)
    b = src.get_candles("ETHUSDT", 500, end=t + pd.Timedelta(minutes=1))
    assert len(a) == len(b) == 500
    assert a.index[-1] == t and b.index[-1] == t + pd.Timedelta(minutes=1)
    # one minute later the window slides by exactly one recorded candle
    pd.testing.assert_frame_equal(a.iloc[1:].reset_index(drop=True), b.iloc[:-1].reset_index(drop=True))
    # the candles are the real recorded ones
    row = src.recorded_row(t)
    rec = shipped_candles["ETHUSDT"].iloc[row]
    assert a.iloc[-1]["close"] == rec["close"]
    # every symbol shows the same recorded minute (cross-asset features need aligned BTC)
    btc = src.get_candles("BTCUSDT", 500, end=t)
    assert btc.iloc[-1]["close"] == shipped_candles["BTCUSDT"].iloc[row]["close"]


_REPLAY_CHILD = """
import json, sys
import pandas as pd
from features.sources.replay import ReplaySource
src = ReplaySource.from_dir(sys.argv[1], history=2000)
t = pd.Timestamp(sys.argv[2])
print(json.dumps({s: [src.recorded_row(t), src.get_candles(s, 10, end=t)["close"].tolist()] for s in src.symbols()}))
"""


def test_replay_is_the_same_in_every_process(shipped_candles, tmp_path):
    """Separate processes (scheduler, ingress, CLI), started at other times with other hash seeds,
    see the same recorded candle for the same wall minute, and the same as this process."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import CANDLE_DIR

    t = "2026-11-25T12:34:00+00:00"
    children = [
        subprocess.Popen([sys.executable, "-c", _REPLAY_CHILD, str(CANDLE_DIR / "bybit_linear_2025-06"), t],
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": seed})
        for seed in ("1", "2")
    ]
    seen = [json.loads(c.communicate(timeout=120)[0]) for c in children]
    assert all(c.returncode == 0 for c in children)
    here = ReplaySource(shipped_candles, history=2000)
    ts = pd.Timestamp(t)
    mine = {s: [here.recorded_row(ts), here.get_candles(s, 10, end=ts)["close"].tolist()] for s in here.symbols()}
    assert seen[0] == seen[1] == mine
    assert len(mine) == len(shipped_candles) and len({row for row, _ in mine.values()}) == 1


def test_frame_source_end_and_unknown_symbol(shipped_candles):
    src = FrameSource(shipped_candles)
    end = shipped_candles["BTCUSDT"].index[1000]
    df = src.get_candles("BTCUSDT", 100, end=end)
    assert len(df) == 100 and df.index[-1] == end
    with pytest.raises(UnknownSymbolError, match="unknown symbol"):
        src.get_candles("NOPEUSDT", 10)


def test_ccxt_symbol_mapping():
    assert ccxt_symbol("BTCUSDT") == "BTC/USDT"
    assert ccxt_symbol("ETHUSDT", "linear") == "ETH/USDT:USDT"
    with pytest.raises(UnknownSymbolError):
        ccxt_symbol("FOO")


class RecordedExchange:
    """Serves recorded ccxt-format OHLCV rows; fails the first `failures` calls like a flaky
    network would. Pages like exchanges do (at most `page` rows per call)."""

    def __init__(self, rows: list[list[float]], failures: int = 0, page: int = 1000) -> None:
        self.rows, self.failures, self.page, self.calls = rows, failures, page, 0

    def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None):
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise ccxt.NetworkError("connection reset")
        out = [r for r in self.rows if since is None or r[0] >= since]
        return out[: min(limit or self.page, self.page)]


def _recorded_rows(df: pd.DataFrame) -> list[list[float]]:
    ms = df.index.as_unit("ns").asi8 // 1_000_000
    return [[int(t), *map(float, v)] for t, v in zip(ms, df.to_numpy(), strict=True)]


def test_ccxt_source_returns_closed_candles_only_and_pages(shipped_candles):
    rec = shipped_candles["BTCUSDT"].iloc[:3000]
    now = rec.index[-1] + pd.Timedelta(seconds=30)  # the last recorded candle is still forming
    ex = RecordedExchange(_recorded_rows(rec), page=500)
    src = CcxtSource(ex, ["BTCUSDT"], clock=lambda: now, sleep=lambda s: None)
    df = src.get_candles("BTCUSDT", 1200)
    assert len(df) == 1200
    assert df.index[-1] == rec.index[-2]  # forming candle dropped
    pd.testing.assert_frame_equal(df, rec.iloc[-1201:-1], check_freq=False)
    assert ex.calls >= 3  # paged


def test_ccxt_source_retries_then_gives_a_clear_error(shipped_candles):
    rec = shipped_candles["BTCUSDT"].iloc[:100]
    now = rec.index[-1] + pd.Timedelta(minutes=1, seconds=5)
    sleeps: list[float] = []
    ok = CcxtSource(RecordedExchange(_recorded_rows(rec), failures=2), ["BTCUSDT"], clock=lambda: now,
                    sleep=sleeps.append, backoff_s=0.1)
    assert len(ok.get_candles("BTCUSDT", 50)) == 50
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9  # backoff grows (with jitter)
    down = CcxtSource(RecordedExchange(_recorded_rows(rec), failures=99), ["BTCUSDT"], clock=lambda: now,
                      sleep=lambda s: None, max_retries=3)
    with pytest.raises(DataSourceError, match="unreachable after 4 tries"):
        down.get_candles("BTCUSDT", 50)


def test_ccxt_source_rejects_bad_exchange_data(shipped_candles):
    rec = shipped_candles["BTCUSDT"].iloc[:50]
    rows = _recorded_rows(rec)
    rows[10][2] = rows[10][3] / 2  # high below low
    now = rec.index[-1] + pd.Timedelta(minutes=1, seconds=5)
    src = CcxtSource(RecordedExchange(rows), ["BTCUSDT"], clock=lambda: now, sleep=lambda s: None)
    with pytest.raises(Exception, match="BTCUSDT @ .*high below"):
        src.get_candles("BTCUSDT", 50)


def test_ccxt_source_fetches_only_new_closed_candles_on_the_next_minute(shipped_candles):
    rec = shipped_candles["ETHUSDT"].iloc[:3000]
    clock = {"now": rec.index[-2] + pd.Timedelta(seconds=30)}  # the last two candles are in the future
    ex = RecordedExchange(_recorded_rows(rec), page=500)
    src = CcxtSource(ex, ["ETHUSDT"], clock=lambda: clock["now"], sleep=lambda s: None)
    first = src.get_candles("ETHUSDT", 1200)
    calls = ex.calls
    clock["now"] += pd.Timedelta(minutes=1)
    second = src.get_candles("ETHUSDT", 1200)
    assert ex.calls == calls + 1  # one small fetch, not the whole window again
    assert second.index[-1] == first.index[-1] + pd.Timedelta(minutes=1)
    pd.testing.assert_frame_equal(second, rec.iloc[-1201:-1], check_freq=False)
    assert src.get_candles("ETHUSDT", 1200).equals(second)  # same minute again: nothing fetched
    assert ex.calls == calls + 1
