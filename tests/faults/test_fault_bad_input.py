"""Bad candles, property-based: whatever hypothesis does to a symbol's real candles, the
in-process pipeline answers one signal per symbol, never raises, turns an invalid frame into
NEUTRAL with a reason naming the symbol, and lets nothing tradeable out of rejected input (the
outbox holds, for that symbol, only the NEUTRAL signal without levels). The other symbol of the
tick is unaffected."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.db import make_engine
from features.sources.base import FrameSource
from mlsignals import factories
from mlsignals.pipeline import SignalPipeline, SignalSink
from mlsignals.settings import load_settings
from signals.config import DeliveryConfig
from signals.outbox import Outbox
from signals.publisher import OutboxRelay, SignalPublisher
from signals.redis_conn import connect_redis
from signals.schema import Direction, Signal
from tests.bundles import make_test_bundle
from tests.conftest import REDIS_TEST_URL

ROWS = 640  # candles handed to the source; the tiny bundle needs 588 (+20 head-room for gaps)
TARGET, OTHER = "ETHUSDT", "BTCUSDT"
PRICE_COLS = ("open", "high", "low", "close")
# Corruptions that make a frame invalid: the target must be NEUTRAL with a reason.
INVALID = {"nan", "inf", "nonpositive", "high_below_low", "low_above_high", "negative_volume", "duplicate",
           "out_of_order", "misaligned", "too_short", "empty"}
# Corruptions of a still-valid frame: any outcome but an exception or an invalid signal.
VALID = {"huge_consistent", "gap"}


@pytest.fixture(scope="module")
def parts(shipped_candles, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("badinput")
    bundle = make_test_bundle(tmp / "tiny", shipped_candles)
    s = load_settings(model={"path": str(bundle), "compile": False}, database_url=f"sqlite:///{tmp / 'x.db'}",
                      redis_url=REDIS_TEST_URL)
    base = {sym: shipped_candles[sym].iloc[5000 : 5000 + ROWS] for sym in (TARGET, OTHER)}
    return {"settings": s, "bundle": Path(bundle), "engine": factories.inference_engine(s), "base": base}


def corrupt(df: pd.DataFrame, kind: str, pos: int, col: str, magnitude: float) -> pd.DataFrame:
    """A copy of ``df`` with one corruption at row ``pos`` (counted from the end, within the
    window the pipeline reads)."""
    df = df.copy()
    i = len(df) - 1 - pos
    j = df.columns.get_loc(col)
    if kind == "nan":
        df.iloc[i, j] = np.nan
    elif kind == "inf":
        df.iloc[i, j] = math.copysign(np.inf, magnitude)
    elif kind == "nonpositive":
        for c in PRICE_COLS if col == "volume" else (col,):
            df.iloc[i, df.columns.get_loc(c)] = -abs(magnitude) if magnitude < 0 else 0.0
    elif kind == "high_below_low":
        df.iloc[i, df.columns.get_loc("high")] = df["low"].iloc[i] * 0.9
    elif kind == "low_above_high":
        df.iloc[i, df.columns.get_loc("low")] = df["high"].iloc[i] * 1.1
    elif kind == "negative_volume":
        df.iloc[i, df.columns.get_loc("volume")] = -abs(magnitude) - 1.0
    elif kind == "huge_consistent":  # a valid but absurd candle: every price and the volume x1e12
        df.iloc[i] = df.iloc[i] * 1e12
    elif kind == "duplicate":
        df = pd.concat([df.iloc[: i + 1], df.iloc[i : i + 1], df.iloc[i + 1 :]])
    elif kind == "out_of_order":
        k = max(i - 1 - int(abs(magnitude)) % 30, 0)
        idx = df.index.to_numpy().copy()
        idx[i], idx[k] = idx[k], idx[i]
        df.index = pd.DatetimeIndex(idx, name="timestamp")
    elif kind == "misaligned":
        idx = df.index.to_numpy().copy()
        idx[i] = idx[i] + np.timedelta64(1 + int(abs(magnitude)) % 59, "s")
        df.index = pd.DatetimeIndex(idx, name="timestamp")
    elif kind == "gap":
        df = df.drop(df.index[max(i - int(abs(magnitude)) % 40, 0) : i + 1])
    elif kind == "too_short":
        df = df.iloc[-(1 + pos % 587) :]
    elif kind == "empty":
        df = df.iloc[0:0]
    return df


corruptions = st.tuples(
    st.sampled_from(sorted(INVALID | VALID)),
    st.integers(0, 580),  # row from the end
    st.sampled_from([*PRICE_COLS, "volume"]),
    st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False),
    st.booleans(),  # hit BTC (the cross-asset reference) instead of the target
    st.booleans(),  # hand the candles in directly (HTTP path) instead of through the source
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(case=corruptions)
def test_corrupted_candles_give_neutral_with_reason_never_an_exception(parts, case):
    kind, pos, col, magnitude, hit_btc, direct = case
    frames = dict(parts["base"])
    victim = OTHER if hit_btc else TARGET
    frames[victim] = corrupt(frames[victim], kind, pos, col, magnitude)
    s = parts["settings"]
    outbox = Outbox(make_engine("sqlite://"))  # fresh per example: ids repeat across examples
    redis_client = connect_redis(REDIS_TEST_URL)
    relay = OutboxRelay(outbox, redis_client, DeliveryConfig(prefix="unused"))
    sink = SignalSink(s.signals, SignalPublisher(outbox, relay))
    pipe = SignalPipeline(factories.feature_stage(s, FrameSource(frames)), parts["engine"], sink)
    end = parts["base"][OTHER].index[-1]
    symbols = [TARGET, OTHER]

    out = pipe.run_detailed(symbols, end=end, candles=frames if direct else None, publish=True)  # must not raise

    assert [sig.symbol for _, sig in out] == symbols
    by_symbol = {sig.symbol: (fr, sig) for fr, sig in out}
    for _, sig in out:
        _assert_well_formed(sig)
    fr, sig = by_symbol[victim]
    if kind in INVALID:
        assert fr.error and victim in fr.error, (kind, fr.error)
        assert sig.direction is Direction.NEUTRAL and sig.reasons[0].startswith("upstream error"), sig.reasons
        if not hit_btc:  # the untouched reference symbol still gets a real prediction
            assert by_symbol[OTHER][0].error is None, by_symbol[OTHER][0].error
        # nothing tradeable from rejected input reached the outbox
        rows = [Signal.model_validate_json(r.payload) for r in outbox.pending(1000) if r.symbol == victim]
        assert all(r.direction is Direction.NEUTRAL and r.stop_loss is None for r in rows)
    if hit_btc and kind in INVALID:  # ETH's cross-asset features have no BTC: NEUTRAL, saying why
        fr_t, sig_t = by_symbol[TARGET]
        assert fr_t.error and sig_t.direction is Direction.NEUTRAL
    redis_client.close()


def _assert_well_formed(sig: Signal) -> None:
    for v in (sig.entry, sig.stop_loss, sig.take_profit):
        assert v is None or (math.isfinite(v) and v > 0)
    assert 0.0 <= sig.confidence <= 1.0 and sig.reasons
    if sig.direction is Direction.NEUTRAL:
        assert sig.stop_loss is None and sig.take_profit is None


def test_valid_frame_is_not_rejected(parts):
    """The control: the same real candles uncorrupted give both symbols a prediction."""
    s = parts["settings"]
    pipe = SignalPipeline(factories.feature_stage(s, FrameSource(parts["base"])), parts["engine"],
                          SignalSink(s.signals))
    out = pipe.run_detailed([TARGET, OTHER], end=parts["base"][OTHER].index[-1])
    assert all(fr.error is None and fr.window is not None for fr, _ in out), [fr.error for fr, _ in out]
