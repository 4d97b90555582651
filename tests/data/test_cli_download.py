"""`mlsignals data download / coverage / import` in process, the exchange replaced by recorded
ccxt payloads (no network here); the real CLI entry point, its exit codes and messages."""

from __future__ import annotations

import json

import ccxt
import pandas as pd
import pytest

from common.db import make_engine
from features.sources import ccxt_source
from features.sources.sql_store import SqlCandleStore
from tests.conftest import run_cli as cli
from tests.data.test_download import PagedExchange, recorded_rows


@pytest.fixture
def db(tmp_path, monkeypatch):
    for key in ("MLSIGNALS_DATA__SOURCE", "MLSIGNALS_DATA__EXCHANGE", "DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    return f"sqlite:///{tmp_path / 'candles.db'}"


@pytest.fixture
def exchanges(shipped_candles, monkeypatch):
    """make_exchange(...) gives a stand-in serving 1500 recorded minutes of each symbol."""
    made: list[PagedExchange] = []
    rows = {f"{s[:-4]}/USDT": recorded_rows(df.iloc[:1500]) for s, df in shipped_candles.items()}

    class Multi(PagedExchange):
        def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None):
            self.rows = rows[symbol]
            return super().fetch_ohlcv(symbol, timeframe, since, limit)

    def make(exchange_id, timeout_ms=10_000):
        ex = Multi([], page=1000, fail=getattr(make, "fail", None))
        made.append(ex)
        return ex

    monkeypatch.setattr(ccxt_source, "make_exchange", make)
    made_by = make
    made_by.made = made
    return made_by


def test_download_several_symbols_then_resume(db, exchanges, shipped_candles, capsys):
    idx = shipped_candles["BTCUSDT"].index
    args = ("data", "download", "--exchange", "binance", "--symbols", "BTCUSDT", "ETHUSDT",
            "--since", idx[0].isoformat(), "--until", idx[1499].isoformat(), "--database-url", db)
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert [d["symbol"] for d in res["downloaded"]] == ["BTCUSDT", "ETHUSDT"]
    assert all(d["written"] == 1500 and d["gaps"] == [] for d in res["downloaded"])
    # the service reads bybit (data.exchange) from replay: say how to serve these
    assert "MLSIGNALS_DATA__SOURCE=sql MLSIGNALS_DATA__EXCHANGE=binance" in err
    store = SqlCandleStore(make_engine(db), exchange="binance")
    pd.testing.assert_frame_equal(store.get_candles("ETHUSDT", 5000), shipped_candles["ETHUSDT"].iloc[:1500],
                                  check_freq=False)
    code, out, err = cli(capsys, *args)  # again: everything is stored, nothing fetched
    assert code == 0 and "BTCUSDT: 0 new candle(s)" in out and "ETHUSDT: 0 new candle(s)" in out
    assert exchanges.made[-1].calls == 0


def test_download_failure_is_one_line_and_resumable(db, exchanges, shipped_candles, capsys, monkeypatch):
    monkeypatch.setenv("MLSIGNALS_DATA__CCXT__MAX_RETRIES", "0")
    exchanges.fail = {i: ccxt.RateLimitExceeded("429") for i in range(2, 50)}
    idx = shipped_candles["BTCUSDT"].index
    code, out, err = cli(capsys, "data", "download", "--exchange", "binance", "--symbols", "BTCUSDT",
                         "--since", idx[0].isoformat(), "--until", idx[1499].isoformat(), "--database-url", db)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "error: 1 of 1 symbol(s) failed (BTCUSDT); rerun the same command to resume")
    assert SqlCandleStore(make_engine(db), exchange="binance").time_range("BTCUSDT") == (idx[0], idx[999])


def test_coverage_lists_every_exchange_and_marks_the_served_one(db, capsys, monkeypatch, shipped_candles, tmp_path):
    f = str(tmp_path / "SOLUSDT_1m.csv")
    shipped_candles["SOLUSDT"].iloc[:300].to_csv(f)
    code, _, err = cli(capsys, "data", "import", f, "--exchange", "binance", "--database-url", db)
    assert code == 0 and "MLSIGNALS_DATA__EXCHANGE=binance" in err
    monkeypatch.setenv("MLSIGNALS_DATA__EXCHANGE", "binance")  # the label matches, the source (replay) not
    code, out, _ = cli(capsys, "data", "coverage", "--source", "sql", "--database-url", db, "--json")
    assert [r["served"] for r in json.loads(out)["symbols"]] == [False]
    monkeypatch.delenv("MLSIGNALS_DATA__EXCHANGE")
    monkeypatch.setenv("MLSIGNALS_DATA__SOURCE", "sql")
    code, _, err = cli(capsys, "data", "import", f, "--exchange", "bybit", "--database-url", db)
    assert code == 0 and "MLSIGNALS_DATA" not in err  # the service reads it as it is
    code, out, _ = cli(capsys, "data", "coverage", "--database-url", db, "--json")
    rows = json.loads(out)
    assert rows["service_reads"] == {"source": "sql", "exchange": "bybit"}
    assert [(r["exchange"], r["symbol"], r["served"]) for r in rows["symbols"]] == [
        ("binance", "SOLUSDT", False), ("bybit", "SOLUSDT", True)]
    code, out, _ = cli(capsys, "data", "coverage", "--database-url", db)
    assert "* bybit" in out and "  binance" in out and "read by the service" in out
    monkeypatch.setenv("MLSIGNALS_DATA__EXCHANGE", "okx")
    code, out, _ = cli(capsys, "data", "coverage", "--database-url", db)
    assert "reads none of these" in out and "binance: MLSIGNALS_DATA__EXCHANGE=binance" in out


def test_download_usage_errors_are_one_line(db, exchanges, capsys):
    code, _, err = cli(capsys, "data", "download", "--exchange", "binance", "--symbols", "BTCUSDT",
                       "--since", "yesterdayish", "--database-url", db)
    assert code == 2 and err.strip() == (
        "error: --since 'yesterdayish': not a time; use ISO-8601, e.g. 2025-06-01T12:14Z")
    code, _, err = cli(capsys, "data", "download", "--exchange", "binance", "--symbols", "BTCUSDT",
                       "--since", "2025-06-02", "--until", "2025-06-01", "--database-url", db)
    assert code == 2 and "--until 2025-06-01 is before --since 2025-06-02" in err
