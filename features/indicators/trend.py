"""Trend indicators: moving-average distances and slopes, MACD family, ADX/DMI, Aroon, PSAR,
Ichimoku, Vortex, linear regression. Every output is a % distance, a ratio or an oscillator."""

from __future__ import annotations

import numpy as np
import talib

from features.indicators.base import Ctx, indicator, pad, rsum, safe_div, shift, windows


def _dist(c: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Distance of close from a price level, as a fraction of that level."""
    return c / level - 1.0


@indicator("sma_dist")
def sma_dist(ctx: Ctx, n: int) -> np.ndarray:
    return _dist(ctx.c, talib.SMA(ctx.c, n))


@indicator("sma_slope")
def sma_slope(ctx: Ctx, n: int) -> np.ndarray:
    s = talib.SMA(ctx.c, n)
    return s / shift(s, 3) - 1.0


@indicator("ema_dist")
def ema_dist(ctx: Ctx, n: int) -> np.ndarray:
    return _dist(ctx.c, talib.EMA(ctx.c, n))


@indicator("ema_slope")
def ema_slope(ctx: Ctx, n: int) -> np.ndarray:
    e = talib.EMA(ctx.c, n)
    return e / shift(e, 3) - 1.0


@indicator("wma_dist")
def wma_dist(ctx: Ctx, n: int) -> np.ndarray:
    return _dist(ctx.c, talib.WMA(ctx.c, n))


@indicator("dema_dist")
def dema_dist(ctx: Ctx, n: int) -> np.ndarray:
    return _dist(ctx.c, talib.DEMA(ctx.c, n))


@indicator("tema_dist")
def tema_dist(ctx: Ctx, n: int) -> np.ndarray:
    return _dist(ctx.c, talib.TEMA(ctx.c, n))


@indicator("kama_dist")
def kama_dist(ctx: Ctx, n: int) -> np.ndarray:
    return _dist(ctx.c, talib.KAMA(ctx.c, n))


@indicator("sma_cross")
def sma_cross(ctx: Ctx, fast: int, slow: int) -> np.ndarray:
    return talib.SMA(ctx.c, fast) / talib.SMA(ctx.c, slow) - 1.0


@indicator("ema_cross")
def ema_cross(ctx: Ctx, fast: int, slow: int) -> np.ndarray:
    return talib.EMA(ctx.c, fast) / talib.EMA(ctx.c, slow) - 1.0


@indicator("macd")
def macd(ctx: Ctx, fast: int, slow: int, signal: int) -> dict[str, np.ndarray]:
    m, s, h = talib.MACD(ctx.c, fast, slow, signal)
    return {"macd": m / ctx.c, "signal": s / ctx.c, "hist": h / ctx.c}


@indicator("ppo")
def ppo(ctx: Ctx, fast: int, slow: int) -> np.ndarray:
    return talib.PPO(ctx.c, fast, slow, matype=0)


@indicator("adx")
def adx(ctx: Ctx, n: int) -> np.ndarray:
    return talib.ADX(ctx.h, ctx.l, ctx.c, n)


@indicator("adxr")
def adxr(ctx: Ctx, n: int) -> np.ndarray:
    return talib.ADXR(ctx.h, ctx.l, ctx.c, n)


@indicator("dx")
def dx(ctx: Ctx, n: int) -> np.ndarray:
    return talib.DX(ctx.h, ctx.l, ctx.c, n)


@indicator("plus_di")
def plus_di(ctx: Ctx, n: int) -> np.ndarray:
    return talib.PLUS_DI(ctx.h, ctx.l, ctx.c, n)


@indicator("minus_di")
def minus_di(ctx: Ctx, n: int) -> np.ndarray:
    return talib.MINUS_DI(ctx.h, ctx.l, ctx.c, n)


@indicator("aroon")
def aroon(ctx: Ctx, n: int) -> dict[str, np.ndarray]:
    down, up = talib.AROON(ctx.h, ctx.l, n)
    return {"up": up, "down": down, "osc": up - down}


@indicator("psar")
def psar(ctx: Ctx, af: float, max_af: float) -> dict[str, np.ndarray]:
    sar = talib.SAR(ctx.h, ctx.l, acceleration=af, maximum=max_af)
    return {"dist": (ctx.c - sar) / ctx.c, "dir": np.sign(ctx.c - sar)}


@indicator("ichimoku")
def ichimoku(ctx: Ctx, tenkan: int, kijun: int, senkou: int) -> dict[str, np.ndarray]:
    """Ichimoku lines are mid-prices (TA-Lib MIDPRICE). The cloud at t was plotted ``kijun`` bars
    ahead at t - kijun, i.e. it uses only past bars; the chikou span (a future close) is left out."""
    t = talib.MIDPRICE(ctx.h, ctx.l, tenkan)
    k = talib.MIDPRICE(ctx.h, ctx.l, kijun)
    a = shift((t + k) / 2.0, kijun)
    b = shift(talib.MIDPRICE(ctx.h, ctx.l, senkou), kijun)
    c = ctx.c
    return {
        "tenkan": _dist(c, t),
        "kijun": _dist(c, k),
        "tk_diff": (t - k) / c,
        "senkou_a": _dist(c, a),
        "senkou_b": _dist(c, b),
        "cloud_width": (a - b) / c,
    }


@indicator("vortex")
def vortex(ctx: Ctx, n: int) -> dict[str, np.ndarray]:
    """pandas-ta ``vortex`` (TA-Lib true range, n-bar sums of |high - previous low| and
    |low - previous high| over the true range's sum), with the sums over fixed windows so only
    the needed rows are evaluated; tests/features/test_feature_speed_parity.py checks it against
    pandas-ta's own output on real candles."""
    tr_sum = rsum(talib.TRANGE(ctx.h, ctx.l, ctx.c), n, ctx.start)
    p = rsum(np.abs(ctx.h - shift(ctx.l, 1)), n, ctx.start) / tr_sum
    m = rsum(np.abs(ctx.l - shift(ctx.h, 1)), n, ctx.start) / tr_sum
    return {"plus": p, "minus": m, "diff": p - m}


@indicator("linreg_slope")
def linreg_slope(ctx: Ctx, n: int) -> np.ndarray:
    """Least-squares slope of close over the last n bars, in fraction of close per bar."""
    return talib.LINEARREG_SLOPE(ctx.c, n) / ctx.c


@indicator("linreg_r2")
def linreg_r2(ctx: Ctx, n: int) -> np.ndarray:
    """R^2 of close regressed on time over the last n bars (how straight the trend is)."""
    w = windows(ctx.c, n, ctx.start)
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    dy = w - w.mean(axis=1, keepdims=True)
    sxy = dy @ x
    return pad(safe_div(sxy * sxy, (x @ x) * (dy * dy).sum(axis=1)), ctx.start)
