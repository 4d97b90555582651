"""`mlsignals predict --at TIME` answers for a past minute from every source (SQL store, candle
files, replay) and never passes older candles off as that minute's; data errors say what to do."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from common.db import make_engine
from features.sources.sql_store import SqlCandleStore
from tests.conftest import run_cli as cli

N = 10_000  # the shipped model needs 9,780 one-minute candles


@pytest.fixture
def sql_env(shipped_candles, tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'candles.db'}"
    store = SqlCandleStore(make_engine(db), exchange="bybit")
    for s in ("ETHUSDT", "BTCUSDT"):
        store.upsert(s, shipped_candles[s].iloc[:N])
    for key in ("MLSIGNALS_DATA__EXCHANGE",):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("MLSIGNALS_DATA__SOURCE", "sql")
    return shipped_candles["ETHUSDT"].index[N - 1]


def _comparable(sig: dict) -> dict:
    return {k: v for k, v in sig.items() if k not in ("created_at", "expires_at", "latency_ms", "metadata")}


def test_past_minute_from_sql_equals_candle_files_and_later_minutes_are_refused(
        sql_env, shipped_candles, tmp_path, capsys, monkeypatch):
    last = sql_env
    at = last.isoformat()
    code, out, err = cli(capsys, "predict", "--symbol", "ETHUSDT", "--at", at, "--json")
    assert code == 0, err
    from_sql = json.loads(out)
    assert pd.Timestamp(from_sql["bar_time"]) == last  # that minute's candles, the model's forecast
    assert from_sql["entry"] == shipped_candles["ETHUSDT"]["close"].iloc[N - 1] and from_sql["forecast"]
    files = []
    for s in ("ETHUSDT", "BTCUSDT"):
        f = tmp_path / f"{s}_1m.csv"
        shipped_candles[s].iloc[:N].to_csv(f)
        files.append(str(f))
    code, out, err = cli(capsys, "predict", "--symbol", "ETHUSDT", "--candles", *files, "--at", at, "--json")
    assert code == 0, err
    assert _comparable(json.loads(out)) == _comparable(from_sql)
    # a minute after the stored candles: refused, not answered with older candles
    later = (last + pd.Timedelta(minutes=10)).isoformat()
    code, _, err = cli(capsys, "predict", "--symbol", "ETHUSDT", "--at", later)
    assert code == 2
    assert f"ETHUSDT: stale data at {pd.Timestamp(later).isoformat()}, last candle {at}" in err
    # now (the store ends in 2025): stale, and the message says how to ask for a past minute
    code, _, err = cli(capsys, "predict", "--symbol", "ETHUSDT")
    assert code == 2 and f"for a past minute pass --at (e.g. --at {at})" in err
    # the service reads another exchange label: say which label has the symbol
    monkeypatch.setenv("MLSIGNALS_DATA__EXCHANGE", "okx")
    code, _, err = cli(capsys, "predict", "--symbol", "ETHUSDT", "--at", at)
    assert code == 2 and "no candles" in err and "MLSIGNALS_DATA__EXCHANGE=bybit" in err


def test_past_minute_from_replay(capsys, monkeypatch):
    monkeypatch.setenv("MLSIGNALS_DATA__SOURCE", "replay")
    code, out, err = cli(capsys, "predict", "--symbol", "SOLUSDT", "--at", "2025-06-10T12:00Z", "--json")
    assert code == 0, err
    assert json.loads(out)["symbol"] == "SOLUSDT"
