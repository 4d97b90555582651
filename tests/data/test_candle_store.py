"""SQL candle store against the real PostgreSQL and SQLite."""

from __future__ import annotations

import pandas as pd
import pytest

from features.sources.sql_store import SqlCandleStore
from common.db import make_engine

pytestmark = pytest.mark.services


def test_upsert_roundtrip_coverage_and_idempotence(db_url, shipped_candles):
    store = SqlCandleStore(make_engine(db_url), exchange="bybit")
    btc = shipped_candles["BTCUSDT"].iloc[:3000]
    eth = shipped_candles["ETHUSDT"].iloc[:2000]
    assert store.upsert("BTCUSDT", btc) == 3000
    store.upsert("ETHUSDT", eth.drop(eth.index[100:110]))
    store.upsert("BTCUSDT", btc.iloc[-500:])  # re-import: upsert, no duplicates
    got = store.get_candles("BTCUSDT", 3000)
    pd.testing.assert_frame_equal(got, btc, check_freq=False)
    end = btc.index[999]
    assert store.get_candles("BTCUSDT", 10, end=end).index[-1] == end
    cov = {c["symbol"]: c for c in store.coverage()}
    assert cov["BTCUSDT"]["rows"] == 3000 and cov["BTCUSDT"]["gaps"] == 0
    assert cov["ETHUSDT"]["rows"] == 1990 and cov["ETHUSDT"]["gaps"] == 1
    assert cov["ETHUSDT"]["missing_minutes"] == 10
    assert store.symbols() == ["BTCUSDT", "ETHUSDT"]


def test_upsert_updates_changed_values(db_url, shipped_candles):
    store = SqlCandleStore(make_engine(db_url))
    df = shipped_candles["SOLUSDT"].iloc[:100]
    store.upsert("SOLUSDT", df)
    changed = df.copy()
    changed["volume"] = changed["volume"] + 1
    store.upsert("SOLUSDT", changed)
    got = store.get_candles("SOLUSDT", 100)
    assert (got["volume"].to_numpy() == changed["volume"].to_numpy()).all()
