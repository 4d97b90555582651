"""Volume: flows and oscillators normalised by the volume itself, so that neither the price unit
nor the volume unit (coins vs contracts) changes a value."""

from __future__ import annotations

import numpy as np
import talib

from features.indicators.base import Ctx, indicator, rcorr, rsum, safe_div, shift


@indicator("obv_flow")
def obv_flow(ctx: Ctx, n: int) -> np.ndarray:
    """OBV change over n bars / volume over those bars, in [-1, 1]. The difference cancels OBV's
    arbitrary starting level, so the value does not depend on where history begins."""
    obv = talib.OBV(ctx.c, ctx.v)
    return safe_div(obv - shift(obv, n), rsum(ctx.v, n, ctx.start))


@indicator("ad_flow")
def ad_flow(ctx: Ctx, n: int) -> np.ndarray:
    ad = talib.AD(ctx.h, ctx.l, ctx.c, ctx.v)
    return safe_div(ad - shift(ad, n), rsum(ctx.v, n, ctx.start))


@indicator("adosc_rel")
def adosc_rel(ctx: Ctx, fast: int, slow: int) -> np.ndarray:
    """Chaikin A/D oscillator in units of the mean volume over ``slow`` bars."""
    return safe_div(talib.ADOSC(ctx.h, ctx.l, ctx.c, ctx.v, fast, slow), talib.SMA(ctx.v, slow))


@indicator("cmf")
def cmf(ctx: Ctx, n: int) -> np.ndarray:
    """Chaikin money flow as pandas-ta's ``cmf`` computes it, with its sums over fixed windows
    evaluated only for needed rows. pandas-ta adds machine epsilon to every bar's range when any
    bar of the input has high == low; that is kept so the values stay identical (checked against
    pandas-ta's own output in test_feature_speed_parity.py)."""
    rng = ctx.h - ctx.l
    if (rng == 0).any():
        rng = rng + np.finfo(float).eps
    ad = (2 * ctx.c - (ctx.h + ctx.l)) * (ctx.v / rng)
    return rsum(ad, n, ctx.start) / rsum(ctx.v, n, ctx.start)


@indicator("efi_rel")
def efi_rel(ctx: Ctx, n: int, norm: int) -> np.ndarray:
    """Elder force index / (close * mean volume): a volume-weighted return. pandas-ta's ``efi`` is
    TA-Lib's EMA of (close change * volume), so TA-Lib is called directly (identical values)."""
    efi = talib.EMA(np.diff(ctx.c, prepend=np.nan) * ctx.v, n)
    return safe_div(efi, ctx.c * talib.SMA(ctx.v, norm))


@indicator("vol_zscore")
def vol_zscore(ctx: Ctx, n: int) -> np.ndarray:
    return safe_div(ctx.v - talib.SMA(ctx.v, n), talib.STDDEV(ctx.v, n))


@indicator("log_vol_ratio")
def log_vol_ratio(ctx: Ctx, n: int) -> np.ndarray:
    """log(1 + volume / mean volume of n bars): finite for zero-volume bars too."""
    return np.log1p(safe_div(ctx.v, talib.SMA(ctx.v, n)))


@indicator("vol_ema_ratio")
def vol_ema_ratio(ctx: Ctx, fast: int, slow: int) -> np.ndarray:
    return safe_div(talib.EMA(ctx.v, fast), talib.EMA(ctx.v, slow), 1.0) - 1.0


@indicator("vwap_dist")
def vwap_dist(ctx: Ctx, n: int) -> np.ndarray:
    """Close vs the rolling n-bar VWAP of typical price (pandas-ta's vwap is session-anchored)."""
    tp = (ctx.h + ctx.l + ctx.c) / 3.0
    vwap = safe_div(rsum(tp * ctx.v, n, ctx.start), rsum(ctx.v, n, ctx.start), np.nan)
    vwap = np.where(np.isnan(vwap), talib.SMA(tp, n), vwap)  # a window without volume: plain mean
    return ctx.c / vwap - 1.0


@indicator("up_vol_share")
def up_vol_share(ctx: Ctx, n: int) -> np.ndarray:
    up = np.where(ctx.logret > 0, ctx.v, 0.0) * np.where(np.isnan(ctx.logret), np.nan, 1.0)
    return safe_div(rsum(up, n, ctx.start), rsum(ctx.v, n, ctx.start), 0.5)


@indicator("ret_vol_corr")
def ret_vol_corr(ctx: Ctx, n: int) -> np.ndarray:
    """Correlation of |log return| with volume over n bars."""
    return rcorr(np.abs(ctx.logret), ctx.v, n, ctx.start)
