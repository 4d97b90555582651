"""The scheduler's tick over shards, with stand-in handles (no Ray started): shards are sent at
once, a shard whose feature call fails or times out degrades only its own symbols to NEUTRAL
with the reason, and the report names each shard's replica and node and stays JSON. The same on a
real three-node cluster: tests/serve/test_cluster_fanout.py."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd

from mlsignals.pipeline import FeatureResult
from mlsignals.settings import SchedulerConfig
from serve_app.model_meta import ModelMetaCache
from serve_app.scheduler import SignalScheduler, describe_shards

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT", "DOGEUSDT", "DOTUSDT"]
MINUTE = pd.Timestamp("2026-11-30 12:00", tz="UTC")


class Method:
    def __init__(self, fn):
        self.remote = fn


class Features:
    """compute_shard: fails for a shard holding ``fail``, never answers for one holding ``hang``."""

    def __init__(self, fail: str | None = None, hang: str | None = None) -> None:
        self.fail, self.hang, self.in_flight, self.most = fail, hang, 0, 0
        self.calls: list[list[str]] = []
        self.compute_shard = Method(self._compute)

    async def _compute(self, symbols, end=None):
        self.calls.append(list(symbols))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            if self.fail in symbols:
                raise RuntimeError("The actor died unexpectedly\nbefore finishing this task.")
            if self.hang in symbols:
                await asyncio.sleep(3600)
            out = {s: FeatureResult(s, bar_time=end, window=np.zeros((4, 2), np.float32), entry=1.0) for s in symbols}
            return out, {"replica": f"r{len(self.calls) % 2}", "node": f"node{len(self.calls) % 2}", "seconds": 0.05}
        finally:
            self.in_flight -= 1


def _signal(fr, output, error):
    return SimpleNamespace(direction=SimpleNamespace(value="NEUTRAL" if (fr.error or error) else "LONG"))


def scheduler(features: Features) -> SignalScheduler:
    async def predict(symbol, window):
        return object(), None, "v1"

    async def meta():
        return SimpleNamespace(model_version="v1")

    async def handle_many(items, meta):
        handled.extend(fr.symbol for fr, _, _ in items)
        return [_signal(*it) for it in items]

    handled: list[str] = []
    cls = SignalScheduler.func_or_class
    s = cls.__new__(cls)
    s.features = features
    s.ml = SimpleNamespace(predict=Method(predict), meta=Method(meta))
    s.signals = SimpleNamespace(handle_many=Method(handle_many))
    s.symbols, s.cfg = SYMBOLS, SchedulerConfig(shard_size=3, symbol_timeout_s=1.0)
    s._meta, s._lock, s.last_report, s.handled = ModelMetaCache(s.ml), asyncio.Lock(), None, handled
    return s


def test_shards_go_out_at_once_and_each_symbol_gets_one_signal():
    feats = Features()
    s = scheduler(feats)
    report = asyncio.run(s.tick(MINUTE))
    assert feats.calls == [["BTCUSDT", "ETHUSDT", "SOLUSDT"], ["BNBUSDT", "ADAUSDT"], ["DOGEUSDT", "DOTUSDT"]]
    assert feats.most == 3  # all three shards in flight together
    assert sorted(s.handled) == sorted(SYMBOLS)  # one signal each, none twice
    assert report.signals == dict.fromkeys(SYMBOLS, "LONG") and report.errors == {}
    assert [(sh["index"], sh["symbols"], sh["error"]) for sh in report.shards] == [(0, 3, None), (1, 2, None),
                                                                                   (2, 2, None)]
    assert all(sh["replica"] and sh["node"] and sh["replica_seconds"] == 0.05 for sh in report.shards)
    json.dumps(report.__dict__)  # /readyz serves it as is
    assert s.last_report is report


def test_a_failed_or_silent_shard_degrades_only_its_symbols():
    s = scheduler(Features(fail="SOLUSDT", hang="ADAUSDT"))
    report = asyncio.run(s.tick(MINUTE))
    assert sorted(s.handled) == sorted(SYMBOLS)  # the degraded ones still get a signal
    failed = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT"}
    assert set(report.errors) == failed
    for sym in failed:
        assert report.signals[sym] == "NEUTRAL"
    assert "feature shard 0 failed: RuntimeError: The actor died unexpectedly" in report.errors["ETHUSDT"]
    assert "\n" not in report.errors["ETHUSDT"]  # one line, not the actor's whole death notice
    assert "feature shard 1 failed: timeout" in report.errors["ADAUSDT"]
    assert report.signals["DOGEUSDT"] == report.signals["DOTUSDT"] == "LONG"
    errors = [sh["error"] for sh in report.shards]
    assert errors[0].startswith("RuntimeError") and errors[1] == "timeout" and errors[2] is None
    assert report.shards[0]["replica"] is None and report.shards[2]["replica"] is not None
    line = describe_shards(report.shards)
    assert "#0 n=3 FAILED (RuntimeError" in line and "#1 n=2 FAILED (timeout)" in line and "#2 n=2 r" in line
