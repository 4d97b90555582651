"""POST /predict answered from the scheduler's tick, in process (no Ray, no services): the
SignalProcessor's map of tick signals (exact minute, bounded, only what the full path would
compute again, the first of a repeated minute) and the Ingress's copy of it and its choice
between the tick's signal and the full path (what-ifs, untracked symbols, a minute not ticked,
a new minute, another model, a failing lookup). The same path over real HTTP through Ray Serve:
tests/serve/test_serve_app.py."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi import Response

from common.errors import UnknownSymbolError
from mlsignals.pipeline import FeatureResult
from serve_app import ingress as ingress_module
from serve_app.deployments import SignalProcessor
from serve_app.ingress import SOURCE_HEADER, Ingress, TickSignals
from serve_app.inputs import PredictRequest
from signals.schema import Direction, Signal, signal_id

M = pd.Timestamp("2026-11-30 12:00", tz="UTC")
MINUTE = pd.Timedelta(minutes=1)


def make_signal(symbol: str, bar_time: pd.Timestamp, version: str = "m1") -> Signal:
    t = bar_time.to_pydatetime()
    return Signal(id=signal_id(symbol, t, version), symbol=symbol, direction=Direction.NEUTRAL, confidence=0.5,
                  strength=0.1, horizon="1h", bar_time=t, created_at=datetime.now(UTC),
                  expires_at=t + timedelta(hours=1), model_version=version, feature_spec_hash="h", reasons=["r"])


def processor() -> SignalProcessor:
    """The replica's class without its constructor (no Redis, database or threads): ``handle``
    is replaced by one that makes the signal of the feature result's bar with ``sp.version``."""
    sp = object.__new__(SignalProcessor.func_or_class)
    sp._ticked, sp._ticked_lock = {}, threading.Lock()
    sp._stop, sp.embedded = threading.Event(), None  # what __del__ stops
    sp.version = "m1"
    sp.handle = lambda fr, output, meta, error: make_signal(fr.symbol, fr.bar_time, sp.version)
    return sp


def tick(sp: SignalProcessor, minute: pd.Timestamp, symbols=("BTCUSDT", "ETHUSDT"), **bad) -> list[Signal]:
    """One tick's handle_many; ``bad``: symbol -> "model" (no output, an error) or "features"."""
    items = []
    for s in symbols:
        fr = FeatureResult(s, bar_time=minute, entry=1.0, error="stale" if bad.get(s) == "features" else None)
        items.append((fr, None if bad.get(s) == "model" else object(), "timeout" if bad.get(s) == "model" else None))
    return sp.handle_many(items, meta=None)


def test_a_tick_is_found_by_its_exact_minute_only():
    sp = processor()
    sigs = tick(sp, M)
    assert sp.ticked(M) == {"BTCUSDT": sigs[0], "ETHUSDT": sigs[1]}
    assert sp.ticked(M.tz_localize(None)) == sp.ticked(M.to_pydatetime()) == sp.ticked(M)  # naive = UTC
    assert sp.ticked(M + MINUTE) == {}  # a minute not ticked yet: the older tick is not current
    assert sp.ticked(M - MINUTE) == {}


def test_signals_a_failure_of_the_tick_made_are_not_kept():
    sp = processor()
    sigs = tick(sp, M, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), ETHUSDT="model", SOLUSDT="features")
    assert len(sigs) == 3  # still one signal per symbol on the stream
    assert sp.ticked(M) == {"BTCUSDT": sigs[0]}


def test_a_minute_ticked_again_keeps_the_signal_delivered_first():
    sp = processor()
    first = tick(sp, M)
    again = tick(sp, M)  # same ids, later created_at: delivery dropped these as repeats
    assert again[1].id == first[1].id and again[1] is not first[1]
    assert sp.ticked(M)["ETHUSDT"] is first[1]
    sp.version = "m2"  # ticked again after a hot swap: another id, the new model's signal
    swapped = tick(sp, M)
    assert sp.ticked(M)["ETHUSDT"] is swapped[1]


def test_only_the_latest_two_minutes_are_kept():
    sp = processor()
    for k in range(5):
        tick(sp, M + k * MINUTE)
    assert {m for _, m in sp._ticked} == {M + 3 * MINUTE, M + 4 * MINUTE}
    assert len(sp._ticked) == 4
    tick(sp, M + 2 * MINUTE)  # a late catch-up tick of an older minute does not evict newer ones
    assert {m for _, m in sp._ticked} == {M + 3 * MINUTE, M + 4 * MINUTE}


class Call:
    """A DeploymentHandle method: ``.remote(...)`` gives an awaitable; calls are recorded."""

    def __init__(self, fn) -> None:
        self.fn, self.calls, self.delay = fn, [], 0.0

    def remote(self, *args, **kwargs):
        self.calls.append((args, kwargs))

        async def run():
            await asyncio.sleep(self.delay)  # a hop: other requests run meanwhile
            return self.fn(*args, **kwargs)

        return run()


class Handle:
    def __init__(self, **methods) -> None:
        for name, fn in methods.items():
            setattr(self, name, Call(fn))


COMPUTED = make_signal("ETHUSDT", M, version="computed")


class Fakes:
    """The Ingress class without its constructor, on fake handles: SignalProcessor's ticks by
    minute (``ticks``), MLManager serving ``version``; the full path ends in COMPUTED. The clock
    (the latest closed minute) is ``minute``."""

    def __init__(self, monkeypatch, **tick_options) -> None:
        from serve_app.model_meta import ModelMetaCache

        self.minute, self.version, self.ticks, self.fail = M, "m1", {}, set()
        monkeypatch.setattr(ingress_module, "last_closed_minute", lambda: self.minute)

        def ticked(minute):
            if "signals" in self.fail:
                raise RuntimeError("replica died")
            return dict(self.ticks.get(minute, {}))

        def info():
            if "ml" in self.fail:
                raise RuntimeError("replica died")
            return {"model_version": self.version}

        ing = self.ing = object.__new__(Ingress.func_or_class.__mro__[1])  # the class under Serve's ASGI wrapper
        window = np.zeros((4, 3), dtype=np.float32)
        ing.features = Handle(compute=lambda syms, candles=None: {syms[0]: FeatureResult(syms[0], M, window, 1.0)})
        ing.ml = Handle(predict=lambda s, w: ("output", None, self.version), info=info,
                        meta=lambda: SimpleNamespace(model_version=self.version))
        ing.signals = Handle(ticked=ticked, handle=lambda *a, **k: COMPUTED)
        ing._meta = ModelMetaCache(ing.ml)
        ing.ticks = TickSignals(ing.signals, ing.ml, **tick_options)
        ing.symbols, ing.max_candles = {"BTCUSDT", "ETHUSDT"}, 10_000

    def tick(self, *symbols: str) -> dict[str, Signal]:
        self.ticks[self.minute] = {s: make_signal(s, self.minute, self.version) for s in symbols}
        return self.ticks[self.minute]

    async def predict(self, **body) -> tuple[Signal, str]:
        response = Response()
        out = await self.ing.predict(PredictRequest(**body), response)
        return out, response.headers[SOURCE_HEADER]

    async def sources(self, n: int, symbol: str = "ETHUSDT") -> list[str]:
        """``n`` concurrent requests for ``symbol``: where each answer came from."""
        return [src for _, src in await asyncio.gather(*(self.predict(symbol=symbol) for _ in range(n)))]

    def full_path_runs(self) -> int:
        return len(self.ing.features.compute.calls)


def candles(n: int = 3) -> list[dict]:
    t0 = M - n * MINUTE
    return [{"timestamp": (t0 + k * MINUTE).isoformat(), "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5,
             "volume": 1.0} for k in range(n)]


def test_a_tracked_symbol_is_answered_with_the_tick_of_the_latest_closed_minute(monkeypatch):
    f = Fakes(monkeypatch)
    sigs = f.tick("BTCUSDT", "ETHUSDT")

    async def scenario():
        out, source = await f.predict(symbol="ethusdt")
        assert out is sigs["ETHUSDT"] and source == "tick"
        assert await f.sources(8) == ["tick"] * 8
        assert (await f.predict(symbol="BTCUSDT"))[0] is sigs["BTCUSDT"]

    asyncio.run(scenario())
    assert f.full_path_runs() == 0  # no hop of the full path
    assert f.ing.signals.ticked.calls == [((M,), {})]  # one fetch of the minute for every request
    assert len(f.ing.ml.info.calls) == 1


def test_a_minute_not_ticked_yet_computes_until_its_tick_is_there(monkeypatch):
    f = Fakes(monkeypatch, refetch_s=0.05)

    async def scenario():
        assert await f.sources(4) == ["computed"] * 4
        assert await f.sources(1) == ["computed"]  # asked moments ago: not again at once
        assert len(f.ing.signals.ticked.calls) == 1
        f.tick("ETHUSDT")
        await asyncio.sleep(0.06)
        assert await f.sources(3) == ["tick"] * 3
        # the next minute closes: the last minute's signals are not current any more
        f.minute += MINUTE
        assert await f.sources(2) == ["computed"] * 2
        f.tick("ETHUSDT")
        await asyncio.sleep(0.06)
        assert await f.sources(1) == ["tick"]

    asyncio.run(scenario())
    assert f.full_path_runs() == 7


def test_a_tick_of_another_model_is_not_served(monkeypatch):
    f = Fakes(monkeypatch, version_s=0.01, version_max_age_s=0.05)
    f.tick("ETHUSDT")

    async def scenario():
        assert await f.sources(1) == ["tick"]
        f.version = "m2"  # a hot swap after the tick
        await asyncio.sleep(0.06)
        assert await f.sources(3) == ["computed"] * 3

    asyncio.run(scenario())


def test_a_slow_answer_of_the_model_version_still_serves_the_tick(monkeypatch):
    f = Fakes(monkeypatch, version_s=0.01, version_max_age_s=0.05)
    f.ing.ml.info.delay = 0.1  # longer than the version may be old: asked after the request came, so fresh
    f.tick("ETHUSDT")
    assert asyncio.run(f.sources(4)) == ["tick"] * 4


@pytest.mark.parametrize("failing", ["signals", "ml"])
def test_a_failing_lookup_computes(monkeypatch, failing):
    f = Fakes(monkeypatch)
    f.tick("ETHUSDT")
    f.fail.add(failing)
    assert asyncio.run(f.sources(3)) == ["computed"] * 3


def test_what_ifs_and_untracked_symbols_never_look_up_the_tick(monkeypatch):
    f = Fakes(monkeypatch)
    f.tick("BTCUSDT", "ETHUSDT")

    async def scenario():
        for body in ({"symbol": "BTCUSDT", "candles": candles()},  # the caller's candles
                     {"symbol": "BTCUSDT", "btc_candles": candles()},
                     {"symbol": "ADAUSDT", "candles": candles(), "btc_candles": candles()}):  # untracked
            out, source = await f.predict(**body)
            assert out is COMPUTED and source == "computed", body
        with pytest.raises(UnknownSymbolError):  # untracked without candles: 404 as before
            await f.predict(symbol="ADAUSDT")

    asyncio.run(scenario())
    assert f.ing.signals.ticked.calls == []
