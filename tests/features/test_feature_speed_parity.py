"""The fast live path gives the same features: ``compute_features(tail_rows=...)`` equals the last
rows of the full frame (to rounding), and the indicators that no longer call pandas-ta equal
pandas-ta's own output on real candles."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pandas_ta as ta
import pytest

from features import spec
from features.calculator import RealTimeIndicatorCalculator, compute_features, resample_window
from features.candles import read_candles_csv, resample, validate_candles
from features.indicators import INDICATORS, Ctx

DATA = Path(__file__).resolve().parents[2] / "data" / "candles"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


@cache
def candles(symbol: str, period: str = "binance_spot_2025-01") -> pd.DataFrame:
    return validate_candles(read_candles_csv(DATA / period / f"{symbol}_1m.csv.gz"), symbol)


@cache
def bars_15m(symbol: str) -> pd.DataFrame:
    return resample(candles(symbol), 15)


@pytest.mark.parametrize("tail", [1, 7, 96])
def test_tail_rows_equal_the_full_frames_last_rows(tail):
    btc = bars_15m("BTCUSDT")
    rng = np.random.default_rng(tail)
    for sym in ("ETHUSDT", "XRPUSDT", "BTCUSDT"):
        bars = bars_15m(sym)
        for end in rng.integers(spec.live_window(tail), len(bars), 3):
            window = bars.iloc[end - spec.live_window(tail) : end]
            btcw = btc.loc[window.index]
            full = compute_features(window, btcw, sym)
            live = compute_features(window, btcw, sym, tail_rows=tail)
            assert list(live.columns) == spec.FEATURE_NAMES
            assert live.index.equals(window.index[-tail:])
            # equal up to the last bit or two: the windows are the same, but a BLAS dot product
            # (linreg R^2, Hurst) may round differently for 1 row than for 500
            np.testing.assert_allclose(live.to_numpy(), full.to_numpy()[-tail:], rtol=1e-13, atol=1e-15)


def test_tail_rows_longer_than_the_frame_returns_every_row():
    bars = bars_15m("ETHUSDT").iloc[:80]
    btc = bars_15m("BTCUSDT").loc[bars.index]
    full = compute_features(bars, btc, "ETHUSDT")
    pd.testing.assert_frame_equal(compute_features(bars, btc, "ETHUSDT", tail_rows=500), full)


def _ctx(sym: str, period: str, n: int | None = None, minutes: int = 15) -> Ctx:
    bars = resample(candles(sym, period), minutes)
    if n is not None:
        bars = bars.iloc[-n:]
    btc = resample(candles("BTCUSDT", period), minutes).reindex(bars.index)
    return Ctx(bars, btc, minutes)


def _close(ours: np.ndarray, theirs: pd.Series | None, n: int, exact: bool) -> None:
    ref = np.full(n, np.nan) if theirs is None else theirs.to_numpy(dtype=np.float64)
    if exact:  # only TA-Lib underneath on both sides: same calls, same bits
        np.testing.assert_array_equal(ours, ref)
    else:  # fixed-window sums vs pandas' running sums: rounding only
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


# a flat bar (high == low) turns on pandas-ta's epsilon quirk in cmf: DOGE's 1-minute bars have
# some; a 40-bar frame checks the "too short for the look-back" behaviour
CASES = [(s, "binance_spot_2025-01", None, 15) for s in SYMBOLS] + [
    ("DOGEUSDT", "bybit_linear_2025-06", 3000, 1),
    ("ETHUSDT", "binance_spot_2024-10", 40, 15),
]


@pytest.mark.parametrize(("sym", "period", "n", "minutes"), CASES)
def test_replaced_pandas_ta_calls_equal_pandas_ta_on_real_candles(sym, period, n, minutes):
    ctx = _ctx(sym, period, n, minutes)
    h, lo, c, v = (pd.Series(getattr(ctx, k)) for k in ("h", "l", "c", "v"))
    N = ctx.n

    ref = ta.tsi(c, fast=13, slow=25, signal=13)
    got = INDICATORS["tsi"](ctx, fast=13, slow=25, signal=13)
    _close(got["tsi"], None if ref is None else ref.iloc[:, 0], N, exact=True)
    _close(got["signal"], None if ref is None else ref.iloc[:, 1], N, exact=True)

    efi = ta.efi(c, v, length=13)
    sma = pd.Series(ctx.c * pd.Series(ctx.v).rolling(20).mean().to_numpy())
    got = INDICATORS["efi_rel"](ctx, n=13, norm=20)
    if efi is not None:
        want = np.where(sma.to_numpy() != 0, efi.to_numpy() / sma.to_numpy(), 0.0)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)

    ref = ta.kst(c)
    got = INDICATORS["kst"](ctx)
    _close(got["kst"], None if ref is None else ref.iloc[:, 0], N, exact=False)
    _close(got["signal"], None if ref is None else ref.iloc[:, 1], N, exact=False)

    ref = ta.vortex(h, lo, c, length=14)
    got = INDICATORS["vortex"](ctx, n=14)
    _close(got["plus"], None if ref is None else ref.iloc[:, 0], N, exact=False)
    _close(got["minus"], None if ref is None else ref.iloc[:, 1], N, exact=False)

    for length in (10, 20):
        _close(INDICATORS["cmf"](ctx, n=length), ta.cmf(h, lo, c, v, length=length), N, exact=False)
    for length in (10, 20, 50):
        _close(INDICATORS["efficiency"](ctx, n=length), ta.er(c, length=length), N, exact=False)


def test_the_cmf_epsilon_case_is_exercised():
    """On bars with a flat one (high == low) cmf takes pandas-ta's epsilon branch: its values
    equal pandas-ta's, where the plain formula (no epsilon) has no value at all."""
    ctx = _ctx(*CASES[len(SYMBOLS)])
    flat = ctx.h == ctx.l
    assert flat.any(), "no flat bar: pick candles that have one"
    h, lo, c, v = (pd.Series(a) for a in (ctx.h, ctx.l, ctx.c, ctx.v))
    got = INDICATORS["cmf"](ctx, n=20)
    _close(got, ta.cmf(h, lo, c, v, length=20), len(h), exact=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        plain = ((2 * c - (h + lo)) * (v / (h - lo))).rolling(20).sum() / v.rolling(20).sum()
    hit = np.isfinite(got) & ~np.isfinite(plain.to_numpy())  # rows the epsilon branch decided
    assert hit.sum() > 0


@pytest.mark.parametrize("minutes", [1, 5, 15, 60])
def test_resample_window_equals_candles_resample(minutes):
    rng = np.random.default_rng(minutes)
    for sym, period in (("ETHUSDT", "binance_spot_2025-01"), ("DOGEUSDT", "bybit_linear_2025-06")):
        df = candles(sym, period)
        for end in rng.integers(5000, len(df), 5):
            window = df.iloc[end - 40 * minutes - 3 : end]
            fast = resample_window(window, minutes, 40)
            ref = resample(window, minutes, window.index[-1]).iloc[-40:]
            assert fast.index.equals(ref.index) and fast.index.name == "timestamp"
            assert list(fast.columns) == list(ref.columns)
            cols = ["open", "high", "low", "close"]
            np.testing.assert_array_equal(fast[cols].to_numpy(), ref[cols].to_numpy())
            # pandas sums in another order: the last bit of a volume sum may differ
            np.testing.assert_allclose(fast["volume"].to_numpy(), ref["volume"].to_numpy(), rtol=1e-14, atol=0)


def test_resample_window_refuses_gaps_and_short_input():
    df = candles("ETHUSDT").iloc[:1000]
    assert resample_window(df, 15, 67) is None  # 1005 candles needed
    gappy = df.drop(df.index[-100])
    assert resample_window(gappy, 15, 60) is None
    assert resample_window(gappy, 15, 6) is not None  # the gap lies before the last 90 minutes


def test_calculator_falls_back_to_resample_when_the_window_has_a_gap():
    eth, btc = candles("ETHUSDT"), candles("BTCUSDT")
    calc = RealTimeIndicatorCalculator(bar_minutes=15, n_rows=1)
    a = eth.index[-1]
    gappy = eth.drop(eth.index[-3 * calc.required_minutes // 4])  # one missing minute mid-window
    batch = calc.compute({"ETHUSDT": gappy, "BTCUSDT": btc}, anchor=a)
    assert "ETHUSDT" in batch.errors and "needs" in batch.errors["ETHUSDT"]
    ok = calc.compute({"ETHUSDT": eth, "BTCUSDT": btc}, anchor=a)
    assert ok.errors == {} and ok.bar_times[0] == a - pd.Timedelta(minutes=14)
