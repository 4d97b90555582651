"""The in-process pipeline on real candles: a signal per symbol, failures as NEUTRAL with reasons,
delivery through the outbox onto the real Redis, log rows in the database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import redis

from features.sources.base import FrameSource
from mlsignals import factories
from mlsignals.settings import load_settings
from signals.schema import Direction
from tests.bundles import make_test_bundle
from tests.conftest import REDIS_TEST_URL


@pytest.fixture(scope="module")
def bundle(shipped_candles, tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("m") / "tiny", shipped_candles)


def _settings(tmp_path: Path, bundle: Path, prefix: str = "t"):
    return load_settings(
        model={"path": str(bundle), "compile": False},
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        redis_url=REDIS_TEST_URL,
        delivery={"prefix": prefix},
    )


def test_every_symbol_gets_a_signal_and_bad_ones_say_why(shipped_candles, bundle, tmp_path):
    frames = {s: df.iloc[:3000] for s, df in shipped_candles.items()}
    frames["DOTUSDT"] = frames["DOTUSDT"].iloc[-100:]  # too short (up to the same minute)
    settings = _settings(tmp_path, bundle)
    pipe = factories.in_process_pipeline(settings, FrameSource(frames))
    end = frames["BTCUSDT"].index[-1]
    signals = pipe.run(["BTCUSDT", "ETHUSDT", "DOTUSDT"], end=end)
    assert [s.symbol for s in signals] == ["BTCUSDT", "ETHUSDT", "DOTUSDT"]
    dot = signals[2]
    assert dot.direction is Direction.NEUTRAL and "needs" in dot.reasons[0] and "got 100" in dot.reasons[0]
    for s in signals[:2]:
        assert s.bar_time == end.to_pydatetime() and s.entry == frames[s.symbol]["close"].iloc[-1]
        assert s.model_version.startswith("tiny-") and s.reasons


def test_publish_and_log_roundtrip(shipped_candles, bundle, tmp_path, redis_prefix):
    frames = {s: df.iloc[:3000] for s, df in shipped_candles.items()}
    settings = _settings(tmp_path, bundle, prefix=redis_prefix.rstrip(":"))
    pipe = factories.in_process_pipeline(settings, FrameSource(frames), publish=True, log_predictions=True)
    end = frames["BTCUSDT"].index[-1]
    first = pipe.run(["BTCUSDT", "SOLUSDT"], end=end, publish=True)
    again = pipe.run(["BTCUSDT", "SOLUSDT"], end=end, publish=True)  # same minute: idempotent
    assert [s.id for s in first] == [s.id for s in again]
    pipe.sink.publisher.relay.relay_once()
    r = redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    entries = r.xrange(settings.delivery.stream_key)
    assert sorted(e[1]["id"] for e in entries) == sorted(s.id for s in first)
    rows = pipe.sink.prediction_log.rows()
    assert len(rows) == 2 and {row.symbol for row in rows} == {"BTCUSDT", "SOLUSDT"}
    assert rows[0].feature_summary["count"] == 262 and rows[0].feature_summary["cached"] is False and rows[0].latencies_ms["features_ms"] > 0


def test_stale_live_source_is_neutral(shipped_candles, bundle, tmp_path):
    frames = {s: df.iloc[:3000] for s, df in shipped_candles.items()}
    pipe = factories.in_process_pipeline(_settings(tmp_path, bundle), FrameSource(frames))
    # "now" is long after the recorded candles: a live run must not trade on them
    sig = pipe.run(["ETHUSDT"], now=pd.Timestamp("2030-01-01", tz="UTC"))[0]
    assert sig.direction is Direction.NEUTRAL and "stale" in sig.reasons[0]


def test_source_features_of_a_closed_minute_are_reused(shipped_candles, bundle, tmp_path):
    frames = {s: df.iloc[:3000] for s, df in shipped_candles.items()}
    stage = factories.feature_stage(_settings(tmp_path, bundle), FrameSource(frames))
    end = frames["BTCUSDT"].index[-1]
    first = stage.compute(["ETHUSDT"], end=end)["ETHUSDT"]
    again = stage.compute(["ETHUSDT", "SOLUSDT"], end=end)
    assert again["ETHUSDT"].cached and again["ETHUSDT"].latency_ms == {}
    assert (again["ETHUSDT"].window == first.window).all() and again["ETHUSDT"].atr == first.atr
    assert "features_ms" in again["SOLUSDT"].latency_ms  # computed, not cached
    later = stage.compute(["ETHUSDT"], end=end - pd.Timedelta(minutes=5))["ETHUSDT"]
    assert later.bar_time == end - pd.Timedelta(minutes=5)
    for m in range(1, 4):  # only the two latest minutes stay cached
        stage.compute(["ETHUSDT"], end=end + pd.Timedelta(minutes=m))
    assert len({k[1] for k in stage._cache}) <= 2
