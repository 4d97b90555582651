"""Start-up backfill (mlsignals/backfill.py) without Ray, on recorded ccxt-format payloads of the
shipped real candles served by a stand-in exchange (no network here)."""

from __future__ import annotations

import threading
import time

import ccxt
import pandas as pd
import pytest

from common.db import make_engine
from common.errors import DataSourceError
from features.sources.ccxt_source import CcxtSource
from features.sources.download import CandleDownloader
from features.sources.sql_store import SqlCandleStore
from mlsignals.backfill import Backfill, BackfilledSource
from tests.data.test_download import recorded_rows

_MIN = pd.Timedelta(minutes=1)
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


class LiveExchange:
    """Recorded rows of several symbols up to the (fake) wall clock, the newest still forming;
    counts calls in flight; `gate` holds every call until set; `down` makes calls fail."""

    def __init__(self, frames: dict[str, pd.DataFrame], clock: dict, page: int = 1000, delay: float = 0.0):
        self.rows = {f"{s[:-4]}/USDT": recorded_rows(df) for s, df in frames.items()}
        self.clock, self.page, self.delay = clock, page, delay
        self.gate = threading.Event()
        self.gate.set()
        self.down: set[str] = set()
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.calls: list[tuple[str, int]] = []

    def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.calls.append((symbol, since))
        try:
            self.gate.wait(10)
            time.sleep(self.delay)
            if symbol in self.down or "*" in self.down:
                raise ccxt.NetworkError("connection reset")
            now_ms = self.clock["now"].value // 10**6
            out = [r for r in self.rows[symbol] if r[0] >= since and r[0] <= now_ms]
            return out[: min(limit or self.page, self.page)]
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def clock(shipped_candles):
    return {"now": shipped_candles["BTCUSDT"].index[3000] + pd.Timedelta(seconds=30)}


@pytest.fixture
def store(tmp_path):
    return SqlCandleStore(make_engine(f"sqlite:///{tmp_path / 'candles.db'}"), exchange="binance")


def make(shipped_candles, clock, store, symbols=SYMBOLS, minutes=1200, concurrency=2, **ex_kw):
    ex = LiveExchange({s: shipped_candles[s] for s in symbols}, clock, **ex_kw)
    src = CcxtSource(ex, symbols, sleep=lambda s: None, max_retries=1, backoff_s=0.01,
                     clock=lambda: clock["now"])
    down = CandleDownloader(src, store, page_limit=500, clock=lambda: clock["now"], progress=False)
    return ex, Backfill(down, symbols, minutes=minutes, concurrency=concurrency, retry_s=0.05)


def test_backfill_fills_the_needed_history_with_bounded_concurrency(shipped_candles, clock, store):
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT"]
    ex, bf = make(shipped_candles, clock, store, symbols, delay=0.02)
    status = bf.run_once()
    assert status == {"state": "done", "done": 5, "total": 5, "message": "backfilled 5 symbols", "failed": {}}
    assert ex.max_in_flight == 2  # never more than `concurrency` requests at once, and used
    for s in symbols:  # exactly the last 1200 closed minutes, the forming one not stored
        pd.testing.assert_frame_equal(store.get_candles(s, 10_000), shipped_candles[s].iloc[1800:3000],
                                      check_freq=False)
    calls = len(ex.calls)
    assert bf.run_once()["state"] == "done" and len(ex.calls) == calls  # nothing left to do


def test_symbols_backfilling_get_a_reason_then_only_new_minutes_are_fetched(shipped_candles, clock, store):
    from mlsignals.factories import feature_stage
    from mlsignals.settings import load_settings

    source_probe = feature_stage(load_settings(), source=_Empty())
    minutes = source_probe.required_minutes + source_probe.gap_policy.max_fill * 4
    assert minutes > 9000  # a week of 15-minute bars: start where the recording has that much before
    clock["now"] = shipped_candles["BTCUSDT"].index[12000] + pd.Timedelta(seconds=30)
    ex, bf = make(shipped_candles, clock, store, minutes=minutes)
    source = BackfilledSource(bf)
    stage = feature_stage(load_settings(), source=source)
    ex.gate.clear()  # the exchange answers nothing yet
    bf.start()
    assert source.status()["message"] == "backfilling 0/3 symbols"
    frames, errors = stage.load_candles(SYMBOLS, None, clock["now"])  # no exception: reasons
    assert frames == {} and set(errors) == set(SYMBOLS)
    assert all("history still backfilling (backfilling 0/3 symbols)" in e for e in errors.values())
    with pytest.raises(DataSourceError, match="ETHUSDT: history still backfilling"):
        source.get_candles("ETHUSDT", 10)
    ex.gate.set()
    assert bf.wait(30) and source.status()["state"] == "done"
    bf.stop(5)
    frames, errors = stage.load_candles(SYMBOLS, None, clock["now"])
    assert errors == {} and all(len(f) == stage.required_minutes for f in frames.values())
    # the next minute: one small fetch per symbol, starting after the stored candles
    clock["now"] += _MIN
    before = len(ex.calls)
    df = source.get_candles("SOLUSDT", 100)
    new_calls = ex.calls[before:]
    assert new_calls == [("SOL/USDT", shipped_candles["SOLUSDT"].index[12000].value // 10**6)]
    assert df.index[-1] == shipped_candles["SOLUSDT"].index[12000]
    pd.testing.assert_frame_equal(df, shipped_candles["SOLUSDT"].iloc[11901:12001], check_freq=False)


class _Empty:
    def symbols(self):
        return []

    def get_candles(self, symbol, n, end=None):
        raise AssertionError("not read")


def test_a_failed_symbol_is_reported_and_retried(shipped_candles, clock, store):
    ex, bf = make(shipped_candles, clock, store)
    ex.down = {"SOL/USDT"}
    status = bf.run_once()
    assert status["state"] == "backfilling" and status["message"] == "backfilling 2/3 symbols"
    assert "SOL/USDT: exchange unreachable after 2 tries" in status["failed"]["SOLUSDT"]
    with pytest.raises(DataSourceError, match="SOLUSDT: history still backfilling"):
        BackfilledSource(bf).get_candles("SOLUSDT", 10)
    bf.start()  # in the background, retried every retry_s until the exchange answers
    time.sleep(0.2)
    assert bf.status()["message"] == "backfilling 2/3 symbols"
    ex.down = set()
    assert bf.wait(10) and bf.status()["failed"] == {}
    bf.stop(5)
    assert store.time_range("SOLUSDT") == (shipped_candles["SOLUSDT"].index[1800],
                                           shipped_candles["SOLUSDT"].index[2999])


def test_exchange_down_after_backfill_serves_the_stored_candles(shipped_candles, clock, store):
    ex, bf = make(shipped_candles, clock, store)
    bf.run()
    source = BackfilledSource(bf)
    ex.down = {"*"}
    clock["now"] += 2 * _MIN
    df = source.get_candles("BTCUSDT", 50)  # no crash; the feature stage's stale rule judges the age
    assert df.index[-1] == shipped_candles["BTCUSDT"].index[2999]


def test_the_service_feature_stage_backfills_a_ccxt_source(shipped_candles, clock, tmp_path, monkeypatch):
    """factories.feature_stage(..., backfill=True) (what the FeatureCalculator deployment builds):
    tracked symbols and BTC backfilled into the store under the ccxt exchange's label."""
    from features.sources import ccxt_source
    from mlsignals.factories import feature_stage
    from mlsignals.settings import load_settings

    clock["now"] = shipped_candles["BTCUSDT"].index[12000] + pd.Timedelta(seconds=30)
    ex = LiveExchange(shipped_candles, clock, delay=0.0)
    monkeypatch.setattr(ccxt_source, "make_exchange", lambda exchange_id, timeout_ms=10_000: ex)
    monkeypatch.setattr(ccxt_source.CcxtSource, "__init__", _with_clock(ccxt_source.CcxtSource.__init__, clock))
    monkeypatch.setattr(CandleDownloader, "last_closed", lambda self: clock["now"].floor("min") - _MIN)
    db = f"sqlite:///{tmp_path / 'svc.db'}"
    settings = load_settings(symbols=["ETHUSDT", "SOLUSDT"], database_url=db,
                             data={"source": "ccxt", "ccxt": {"exchange": "okx", "backfill_concurrency": 2}})
    stage = feature_stage(settings, backfill=True)
    assert isinstance(stage.source, BackfilledSource)
    assert stage.source.backfill.wait(60), stage.source.status()
    assert stage.source.status()["message"] == "backfilled 3 symbols"  # ETH, SOL and BTC
    okx = SqlCandleStore(make_engine(db), exchange="okx")
    need = stage.required_minutes + stage.gap_policy.max_fill * 4
    assert okx.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert okx.time_range("ETHUSDT") == (shipped_candles["ETHUSDT"].index[12000 - need],
                                         shipped_candles["ETHUSDT"].index[11999])
    frames, errors = stage.load_candles(["ETHUSDT", "SOLUSDT"], None, clock["now"])
    assert errors == {} and set(frames) == {"ETHUSDT", "SOLUSDT", "BTCUSDT"}
    stage.source.backfill.stop(5)
    # one-off runs (CLI) and other sources are not wrapped
    assert not isinstance(feature_stage(settings).source, BackfilledSource)


def _with_clock(init, clock):
    def patched(self, *a, **kw):
        kw.setdefault("clock", lambda: clock["now"])
        init(self, *a, **kw)
    return patched
