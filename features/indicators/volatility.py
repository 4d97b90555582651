"""Volatility: ATR/NATR, Bollinger, Keltner, Donchian, and range-based estimators (realized,
Parkinson, Garman-Klass, Rogers-Satchell, Yang-Zhang) as per-bar standard deviations of log price."""

from __future__ import annotations

import math

import numpy as np
import talib

from features.indicators.base import Ctx, indicator, pad, rmean, safe_div, shift, windows


@indicator("natr")
def natr(ctx: Ctx, n: int) -> np.ndarray:
    return talib.NATR(ctx.h, ctx.l, ctx.c, n)


@indicator("atr_ratio")
def atr_ratio(ctx: Ctx, fast: int, slow: int) -> np.ndarray:
    return talib.ATR(ctx.h, ctx.l, ctx.c, fast) / talib.ATR(ctx.h, ctx.l, ctx.c, slow)


@indicator("trange_pct")
def trange_pct(ctx: Ctx) -> np.ndarray:
    return talib.TRANGE(ctx.h, ctx.l, ctx.c) / ctx.c


@indicator("bbands")
def bbands(ctx: Ctx, n: int, k: float) -> dict[str, np.ndarray]:
    up, mid, lo = talib.BBANDS(ctx.c, n, k, k)
    return {"width": (up - lo) / mid, "pctb": safe_div(ctx.c - lo, up - lo, 0.5)}


@indicator("keltner")
def keltner(ctx: Ctx, n: int, atr: int, k: float) -> dict[str, np.ndarray]:
    """Keltner channel: EMA(n) +- k * ATR(atr) (pandas-ta's kc wraps the same TA-Lib EMA/ATR)."""
    mid = talib.EMA(ctx.c, n)
    band = k * talib.ATR(ctx.h, ctx.l, ctx.c, atr)
    return {"width": 2.0 * band / mid, "pos": safe_div(ctx.c - (mid - band), 2.0 * band, 0.5)}


@indicator("donchian")
def donchian(ctx: Ctx, n: int) -> dict[str, np.ndarray]:
    hh, ll = talib.MAX(ctx.h, n), talib.MIN(ctx.l, n)
    return {"width": (hh - ll) / ctx.c, "pos": safe_div(ctx.c - ll, hh - ll, 0.5)}


def _sqrt_mean(x: np.ndarray, n: int, start: int) -> np.ndarray:
    return np.sqrt(np.maximum(rmean(x, n, start), 0.0))


@indicator("realized")
def realized(ctx: Ctx, n: int) -> np.ndarray:
    """Root mean square of the last n log returns (per bar, not annualised)."""
    return _sqrt_mean(ctx.logret**2, n, ctx.start)


@indicator("parkinson")
def parkinson(ctx: Ctx, n: int) -> np.ndarray:
    hl = np.log(ctx.h / ctx.l)
    return _sqrt_mean(hl * hl / (4.0 * math.log(2.0)), n, ctx.start)


@indicator("garman_klass")
def garman_klass(ctx: Ctx, n: int) -> np.ndarray:
    hl, co = np.log(ctx.h / ctx.l), np.log(ctx.c / ctx.o)
    return _sqrt_mean(0.5 * hl * hl - (2.0 * math.log(2.0) - 1.0) * co * co, n, ctx.start)


def _rs_term(ctx: Ctx) -> np.ndarray:
    return np.log(ctx.h / ctx.c) * np.log(ctx.h / ctx.o) + np.log(ctx.l / ctx.c) * np.log(ctx.l / ctx.o)


@indicator("rogers_satchell")
def rogers_satchell(ctx: Ctx, n: int) -> np.ndarray:
    return _sqrt_mean(_rs_term(ctx), n, ctx.start)


@indicator("yang_zhang")
def yang_zhang(ctx: Ctx, n: int) -> np.ndarray:
    """Yang-Zhang: overnight (open vs previous close) + open-to-close + Rogers-Satchell variances."""
    overnight = np.log(ctx.o / shift(ctx.c, 1))
    oc = np.log(ctx.c / ctx.o)
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    var_o = pad(windows(overnight, n, ctx.start).var(axis=1, ddof=1), ctx.start)
    var_c = pad(windows(oc, n, ctx.start).var(axis=1, ddof=1), ctx.start)
    var = var_o + k * var_c + (1.0 - k) * rmean(_rs_term(ctx), n, ctx.start)
    return np.sqrt(np.maximum(var, 0.0))


@indicator("vol_ratio")
def vol_ratio(ctx: Ctx, fast: int, slow: int) -> np.ndarray:
    return safe_div(realized(ctx, fast), realized(ctx, slow), 1.0)


@indicator("range_zscore")
def range_zscore(ctx: Ctx, n: int) -> np.ndarray:
    """How unusual this bar's high-low range (log) is against the last n bars."""
    r = np.log(ctx.h / ctx.l)
    w = windows(r, n, ctx.start)
    return pad(safe_div(r[ctx.start :] - w.mean(axis=1), w.std(axis=1)), ctx.start)
