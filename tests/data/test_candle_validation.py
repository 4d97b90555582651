"""Property tests: every validation rule rejects what it should, names symbol, time and rule,
and valid candles pass untouched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.candles import GapPolicy, fill_gaps, find_gaps, resample, validate_candles
from common.errors import CandleValidationError

START = pd.Timestamp("2025-01-01 00:00", tz="UTC")


@st.composite
def valid_candles(draw, min_rows: int = 3, max_rows: int = 40) -> pd.DataFrame:
    n = draw(st.integers(min_rows, max_rows))
    price = st.floats(0.0001, 1e6, allow_nan=False, allow_infinity=False)
    rows = []
    for _ in range(n):
        o, c = draw(price), draw(price)
        hi = max(o, c) * (1 + draw(st.floats(0, 0.05)))
        lo = min(o, c) * (1 - draw(st.floats(0, 0.05)))
        rows.append((o, hi, lo, c, draw(st.floats(0, 1e9))))
    idx = pd.date_range(START, periods=n, freq="1min", unit="ns")
    return pd.DataFrame(rows, index=idx, columns=["open", "high", "low", "close", "volume"])


def _reject(df: pd.DataFrame, row: int, rule_part: str) -> None:
    with pytest.raises(CandleValidationError) as ei:
        validate_candles(df, "TESTUSDT")
    err = ei.value
    assert err.symbol == "TESTUSDT"
    assert rule_part in err.rule
    assert err.time == df.index[row].isoformat()


@settings(max_examples=40, deadline=None)
@given(valid_candles())
def test_valid_candles_pass_unchanged(df):
    out = validate_candles(df, "TESTUSDT")
    pd.testing.assert_frame_equal(out, df, check_freq=False, check_names=False)


@settings(max_examples=40, deadline=None)
@given(valid_candles(), st.data(), st.sampled_from([np.nan, np.inf, -np.inf]),
       st.sampled_from(["open", "high", "low", "close", "volume"]))
def test_nan_and_inf_rejected(df, data, bad, col):
    i = data.draw(st.integers(0, len(df) - 1))
    df = df.copy()
    df.iloc[i, df.columns.get_loc(col)] = bad
    _reject(df, i, "NaN or infinite")


@settings(max_examples=40, deadline=None)
@given(valid_candles(), st.data(), st.floats(-1e6, 0))
def test_non_positive_price_rejected(df, data, bad):
    i = data.draw(st.integers(0, len(df) - 1))
    df = df.copy()
    df.iloc[i, :4] = bad  # all four prices non-positive keeps the high/low rules satisfied
    _reject(df, i, "non-positive price")


@settings(max_examples=40, deadline=None)
@given(valid_candles(), st.data(), st.floats(1e-6, 0.5))
def test_high_below_open_close_rejected(df, data, frac):
    i = data.draw(st.integers(0, len(df) - 1))
    df = df.copy()
    top = max(df.iloc[i]["open"], df.iloc[i]["close"])
    df.iloc[i, df.columns.get_loc("high")] = top * (1 - frac)
    df.iloc[i, df.columns.get_loc("low")] = min(df.iloc[i]["low"], top * (1 - frac))
    _reject(df, i, "high below")


@settings(max_examples=40, deadline=None)
@given(valid_candles(), st.data(), st.floats(1e-6, 0.5))
def test_low_above_open_close_rejected(df, data, frac):
    i = data.draw(st.integers(0, len(df) - 1))
    df = df.copy()
    bottom = min(df.iloc[i]["open"], df.iloc[i]["close"])
    df.iloc[i, df.columns.get_loc("low")] = bottom * (1 + frac)
    df.iloc[i, df.columns.get_loc("high")] = max(df.iloc[i]["high"], bottom * (1 + frac))
    _reject(df, i, "low above")


@settings(max_examples=40, deadline=None)
@given(valid_candles(), st.data(), st.floats(-1e9, -1e-9))
def test_negative_volume_rejected(df, data, vol):
    i = data.draw(st.integers(0, len(df) - 1))
    df = df.copy()
    df.iloc[i, df.columns.get_loc("volume")] = vol
    _reject(df, i, "negative volume")


@settings(max_examples=40, deadline=None)
@given(valid_candles(), st.data())
def test_duplicate_timestamp_rejected(df, data):
    i = data.draw(st.integers(1, len(df) - 1))
    idx = df.index.to_list()
    idx[i] = idx[i - 1]
    df = df.set_axis(pd.DatetimeIndex(idx), axis=0)
    _reject(df, i, "duplicate")


@settings(max_examples=40, deadline=None)
@given(valid_candles(), st.data())
def test_out_of_order_rejected(df, data):
    i = data.draw(st.integers(1, len(df) - 1))
    idx = df.index.to_list()
    idx[i - 1], idx[i] = idx[i], idx[i - 1]
    df = df.set_axis(pd.DatetimeIndex(idx), axis=0)
    _reject(df, i, "out of order")


@settings(max_examples=40, deadline=None)
@given(valid_candles(), st.data(), st.integers(1, 59))
def test_off_grid_rejected(df, data, seconds):
    i = data.draw(st.integers(0, len(df) - 1))
    idx = df.index.to_list()
    idx[i] = idx[i] + pd.Timedelta(seconds=seconds)
    # keep order monotonic so the grid rule is the one that fires
    df = df.set_axis(pd.DatetimeIndex(idx), axis=0)
    _reject(df, i, "grid")


def test_naive_timestamps_are_utc():
    idx = pd.date_range("2025-01-01", periods=3, freq="1min")
    df = pd.DataFrame({"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 0.0}, index=idx)
    assert str(validate_candles(df, "X").index.tz) == "UTC"


def test_gaps_reported_and_short_ones_filled_flat():
    idx = pd.date_range(START, periods=30, freq="1min", unit="ns")
    df = pd.DataFrame({"open": 10.0, "high": 11.0, "low": 9.0, "close": np.arange(30) + 10.0, "volume": 5.0},
                      index=idx)
    holey = df.drop(idx[[5, 6]]).drop(idx[15:25])
    gaps = find_gaps(holey)
    assert [(g.start, g.missing) for g in gaps] == [(idx[5], 2), (idx[15], 10)]
    filled, left = fill_gaps(holey, GapPolicy(max_fill=5))
    assert [g.missing for g in left] == [10]
    assert filled.loc[idx[5], "close"] == df.loc[idx[4], "close"]
    assert filled.loc[idx[6], "volume"] == 0.0
    assert filled.loc[idx[6], ["open", "high", "low", "close"]].nunique() == 1


def test_resample_anchored_bars_end_at_anchor_and_are_complete():
    idx = pd.date_range(START, periods=200, freq="1min", unit="ns")
    rng = np.random.default_rng(0)
    close = 100 + rng.normal(0, 1, 200).cumsum()
    df = pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 1.0},
                      index=idx)
    for anchor in idx[-20:]:
        bars = resample(df, 15, anchor)
        assert bars.index[-1] + pd.Timedelta(minutes=14) == anchor
        last = df.loc[bars.index[-1]: anchor]
        assert len(last) == 15
        assert bars["close"].iloc[-1] == df.loc[anchor, "close"]
        assert bars["high"].iloc[-1] == last["high"].max()
        assert bars["volume"].iloc[-1] == 15.0
    epoch = resample(df, 15)
    assert (epoch.index.minute % 15 == 0).all()
