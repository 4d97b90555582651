"""Feature spec and calculator on the real shipped candles: parity live vs full history, no
look-ahead, no NaN after warm-up, clear errors, cross-asset features live, scale-free."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.errors import MissingCrossAssetError
from features import spec
from features.calculator import (
    RealTimeIndicatorCalculator,
    compute_features,
    compute_features_all_anchors,
)
from features.candles import read_candles_csv, resample, validate_candles

DATA = Path(__file__).resolve().parents[2] / "data" / "candles" / "binance_spot_2025-01"
# Relative 1e-6; the absolute floor only matters for values crossing zero (e.g. a MACD histogram).
RTOL, ATOL = 1e-6, 1e-9


@cache
def candles(symbol: str) -> pd.DataFrame:
    return validate_candles(read_candles_csv(DATA / f"{symbol}_1m.csv.gz"), symbol)


@cache
def full_15m(symbol: str) -> pd.DataFrame:
    return compute_features(resample(candles(symbol), 15), resample(candles("BTCUSDT"), 15), symbol)


def test_spec_has_240_unique_named_features_in_all_groups():
    assert len(spec.FEATURES) >= 240
    assert len(set(spec.FEATURE_NAMES)) == len(spec.FEATURE_NAMES)
    assert set(spec.GROUPS) >= {
        "returns",
        "trend",
        "momentum",
        "volatility",
        "volume",
        "candle",
        "micro",
        "stats",
        "time",
        "cross",
    }
    assert max(f.warmup for f in spec.FEATURES) == spec.WARMUP
    assert spec.live_window(96) == spec.live_window(1) + 95


def test_spec_hash_is_stable_and_changes_with_the_spec():
    assert spec.spec_hash(spec.FEATURES) == spec.SPEC_HASH
    assert len(spec.SPEC_HASH) == 16 and int(spec.SPEC_HASH, 16) >= 0
    assert hashlib.sha256(spec.spec_json().encode()).hexdigest()[:16] == spec.SPEC_HASH
    # the same in a fresh interpreter (no dependence on dict order, hash seeds or ids)
    code = "from features.spec import SPEC_HASH; print(SPEC_HASH)"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert other.stdout.strip() == spec.SPEC_HASH
    changed = list(spec.FEATURES)
    changed[0] = dataclasses.replace(changed[0], params={**changed[0].params, "lag": 2})
    assert spec.spec_hash(tuple(changed)) != spec.SPEC_HASH
    assert spec.spec_hash(tuple(reversed(spec.FEATURES))) != spec.SPEC_HASH  # column order matters


def test_no_nan_or_inf_after_warmup_on_every_symbol():
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"):
        f = full_15m(sym).iloc[spec.WARMUP :]
        bad = [c for c in f.columns if not np.isfinite(f[c].to_numpy()).all()]
        assert not bad, f"{sym}: non-finite after warm-up in {bad[:5]}"


def test_parity_live_window_equals_full_history_at_50_random_times():
    full = full_15m("ETHUSDT")
    eth, btc = candles("ETHUSDT"), candles("BTCUSDT")
    calc = RealTimeIndicatorCalculator(bar_minutes=15, n_rows=1)
    rng = np.random.default_rng(7)
    # 50 random bars of the full-history frame (epoch-aligned); serving anchors on their last minute
    first = calc.window_bars + 1
    picks = rng.choice(np.arange(first, len(full)), 50, replace=False)
    for bar_open in full.index[picks]:
        a = bar_open + pd.Timedelta(minutes=14)
        window_1m = eth.loc[:a].iloc[-calc.required_minutes :]
        bars = resample(window_1m, 15, a)
        btcb = resample(btc.loc[:a].iloc[-calc.required_minutes :], 15, a)
        assert len(bars) == calc.window_bars and bars.index[-1] == bar_open
        live = compute_features(bars, btcb, "ETHUSDT").iloc[-1].to_numpy()
        ref = full.loc[bar_open].to_numpy()
        np.testing.assert_allclose(live, ref, rtol=RTOL, atol=ATOL, err_msg=f"bar {bar_open}")
        # the calculator returns the same row (as float32)
        batch = calc.compute({"ETHUSDT": eth.loc[:a], "BTCUSDT": btc.loc[:a]}, anchor=a)
        i = batch.symbols.index("ETHUSDT")
        assert batch.bar_times[i] == bar_open
        np.testing.assert_allclose(batch.values[i, 0], ref.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_live_window_of_96_rows_matches_full_history():
    full = full_15m("SOLUSDT")
    sol, btc = candles("SOLUSDT"), candles("BTCUSDT")
    calc = RealTimeIndicatorCalculator(bar_minutes=15, n_rows=96)
    a = full.index[-5] + pd.Timedelta(minutes=14)  # the last minute of an epoch-aligned bar
    batch = calc.compute({"SOLUSDT": sol, "BTCUSDT": btc}, anchor=a)
    assert batch.errors == {}
    assert batch.values.shape == (2, 96, len(spec.FEATURE_NAMES)) and batch.values.dtype == np.float32
    i = batch.symbols.index("SOLUSDT")
    ref = full.loc[: batch.bar_times[i]].iloc[-96:].to_numpy()
    np.testing.assert_allclose(batch.values[i], ref.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_no_look_ahead_perturbing_candles_after_t_changes_nothing_up_to_t():
    eth, btc = candles("ETHUSDT").iloc[:20_000], candles("BTCUSDT").iloc[:20_000]
    t = eth.index[15_000 - 1]
    bars, btcb = resample(eth, 15), resample(btc, 15)
    base = compute_features(bars, btcb, "ETHUSDT")
    rng = np.random.default_rng(3)
    after = eth.index > t
    noisy = eth.copy()
    k = rng.uniform(0.5, 2.0, after.sum())
    for col in ("open", "high", "low", "close"):
        noisy.loc[after, col] = noisy.loc[after, col] * k
    noisy.loc[after, "high"] = noisy.loc[after, ["open", "high", "low", "close"]].max(axis=1)
    noisy.loc[after, "low"] = noisy.loc[after, ["open", "high", "low", "close"]].min(axis=1)
    noisy.loc[after, "volume"] = noisy.loc[after, "volume"] * rng.uniform(0, 5, after.sum())
    btc_noisy = btc.copy()
    btc_noisy.loc[btc.index > t, "close"] *= 1.3
    btc_noisy.loc[btc.index > t, "high"] *= 1.3
    pert = compute_features(resample(noisy, 15), resample(btc_noisy, 15), "ETHUSDT")
    upto = base.index + pd.Timedelta(minutes=15) <= t + pd.Timedelta(minutes=1)  # bars closed by t
    pd.testing.assert_frame_equal(base[upto], pert[upto])
    assert not np.allclose(base[~upto].fillna(0).to_numpy(), pert[~upto].fillna(0).to_numpy())


def test_too_few_candles_gives_needs_n_got_m():
    calc = RealTimeIndicatorCalculator(bar_minutes=15, n_rows=1)
    short = candles("ETHUSDT").iloc[: calc.required_minutes - 10]
    batch = calc.compute({"ETHUSDT": short, "BTCUSDT": candles("BTCUSDT")})
    assert batch.symbols == ["BTCUSDT"]
    assert batch.errors["ETHUSDT"] == f"ETHUSDT: needs {calc.required_minutes} candles, got {len(short)}"


def test_missing_btc_is_an_error_not_a_silent_zero():
    eth = candles("ETHUSDT")
    bars = resample(eth.iloc[:5000], 15)
    with pytest.raises(MissingCrossAssetError):
        compute_features(bars, None, "ETHUSDT")
    with pytest.raises(MissingCrossAssetError):
        compute_features(bars, resample(candles("BTCUSDT").iloc[:3000], 15), "ETHUSDT")
    calc = RealTimeIndicatorCalculator(bar_minutes=15)
    batch = calc.compute({"ETHUSDT": eth})
    assert batch.symbols == [] and "BTC" in batch.errors["ETHUSDT"]


def test_cross_asset_features_vary_in_serving_for_a_non_btc_symbol():
    eth, btc = candles("ETHUSDT"), candles("BTCUSDT")
    calc = RealTimeIndicatorCalculator(bar_minutes=15, n_rows=1)
    cross = [j for j, f in enumerate(spec.FEATURES) if f.group == "cross"]
    rows = []
    for end in range(calc.required_minutes + 100, len(eth), 4000):
        b = calc.compute({"ETHUSDT": eth.iloc[:end], "BTCUSDT": btc.iloc[:end]})
        rows.append(b.values[b.symbols.index("ETHUSDT"), 0, cross])
    rows = np.array(rows)
    assert np.isfinite(rows).all()
    assert (rows.std(axis=0) > 0).all(), [spec.FEATURE_NAMES[cross[j]] for j in np.flatnonzero(rows.std(0) == 0)]
    assert (np.abs(rows) > 0).any(axis=0).all()


def test_scale_free_prices_times_1000_change_nothing():
    eth, btc = candles("ETHUSDT").iloc[:12_000], candles("BTCUSDT").iloc[:12_000]
    base = compute_features(resample(eth, 15), resample(btc, 15), "ETHUSDT").iloc[spec.WARMUP :]
    scaled = eth.copy()
    scaled[["open", "high", "low", "close"]] *= 1000.0
    scaled["volume"] *= 0.001  # contracts vs coins: volume features are relative too
    out = compute_features(resample(scaled, 15), resample(btc, 15), "ETHUSDT").iloc[spec.WARMUP :]
    np.testing.assert_allclose(out.to_numpy(), base.to_numpy(), rtol=1e-6, atol=1e-8)


def test_all_anchors_rows_match_the_calculator_and_cover_every_minute():
    eth, btc = candles("ETHUSDT").iloc[:15_000], candles("BTCUSDT").iloc[:15_000]
    allf = compute_features_all_anchors(eth, btc, "ETHUSDT", 15)
    assert allf.index.is_unique and allf.index.is_monotonic_increasing
    tail = allf.index[-200:]
    assert (np.diff(tail.asi8) == 60_000_000_000).all()  # one row per 1-minute anchor
    calc = RealTimeIndicatorCalculator(bar_minutes=15, n_rows=1)
    for a in (eth.index[-1], eth.index[-7], eth.index[-300]):
        b = calc.compute({"ETHUSDT": eth.loc[:a], "BTCUSDT": btc.loc[:a]}, anchor=a)
        bar_open = a - pd.Timedelta(minutes=14)
        assert b.bar_times[b.symbols.index("ETHUSDT")] == bar_open
        np.testing.assert_allclose(
            b.values[b.symbols.index("ETHUSDT"), 0],
            allf.loc[bar_open].to_numpy().astype(np.float32),
            rtol=1e-5,
            atol=1e-6,
        )


def test_one_minute_bars_are_supported():
    eth, btc = candles("ETHUSDT"), candles("BTCUSDT")
    calc = RealTimeIndicatorCalculator(bar_minutes=1, n_rows=4)
    b = calc.compute({"ETHUSDT": eth.iloc[:3000], "BTCUSDT": btc.iloc[:3000]})
    assert b.errors == {} and b.values.shape == (2, 4, len(spec.FEATURE_NAMES))
    full = compute_features(eth.iloc[:3000], btc.iloc[:3000], "ETHUSDT")
    np.testing.assert_allclose(b.values[0], full.iloc[-4:].to_numpy().astype(np.float32), rtol=1e-5, atol=1e-6)
