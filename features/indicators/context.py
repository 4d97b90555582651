"""Returns, time of day / week, and cross-asset features against BTC."""

from __future__ import annotations

import numpy as np
import talib

from features.indicators.base import Ctx, indicator, pad, rcorr, rcov, rsum, safe_div, shift, windows


@indicator("logret")
def logret(ctx: Ctx, lag: int) -> np.ndarray:
    lc = np.log(ctx.c)
    return lc - shift(lc, lag)


@indicator("pctret")
def pctret(ctx: Ctx, lag: int) -> np.ndarray:
    return ctx.c / shift(ctx.c, lag) - 1.0


@indicator("logret_shift")
def logret_shift(ctx: Ctx, k: int) -> np.ndarray:
    """The single-bar log return of k bars ago."""
    return shift(ctx.logret, k)


@indicator("cyclical")
def cyclical(ctx: Ctx) -> dict[str, np.ndarray]:
    """Time of the bar's *close* (open + bar length) as sin/cos pairs: minute of hour, hour of day
    (with minutes as a fraction), weekday (with hours as a fraction). UTC."""
    close = ctx.index[ctx.start :] + np.timedelta64(ctx.bar_minutes, "m")
    minute = close.minute.to_numpy(dtype=np.float64)
    hour = close.hour.to_numpy(dtype=np.float64) + minute / 60.0
    wday = close.weekday.to_numpy(dtype=np.float64) + hour / 24.0
    out = {}
    for unit, value, period in (("minute", minute, 60.0), ("hour", hour, 24.0), ("weekday", wday, 7.0)):
        out[f"{unit}_sin"] = pad(np.sin(2 * np.pi * value / period), ctx.start)
        out[f"{unit}_cos"] = pad(np.cos(2 * np.pi * value / period), ctx.start)
    return out


@indicator("btc_corr")
def btc_corr(ctx: Ctx, n: int) -> np.ndarray:
    return rcorr(ctx.logret, ctx.btc_logret, n, ctx.start)


@indicator("btc_beta")
def btc_beta(ctx: Ctx, n: int) -> np.ndarray:
    var = pad(windows(ctx.btc_logret, n, ctx.start).var(axis=1), ctx.start)
    return safe_div(rcov(ctx.logret, ctx.btc_logret, n, ctx.start), var)


@indicator("rel_strength")
def rel_strength(ctx: Ctx, n: int) -> np.ndarray:
    """Log return over n bars minus BTC's over the same bars."""
    return rsum(ctx.logret, n, ctx.start) - rsum(ctx.btc_logret, n, ctx.start)


@indicator("btc_logret")
def btc_logret(ctx: Ctx, lag: int) -> np.ndarray:
    lc = np.log(ctx.btc_c)
    return lc - shift(lc, lag)


@indicator("btc_rsi")
def btc_rsi(ctx: Ctx, n: int) -> np.ndarray:
    return talib.RSI(ctx.btc_c, n)


@indicator("btc_natr")
def btc_natr(ctx: Ctx, n: int) -> np.ndarray:
    return talib.NATR(ctx.btc_h, ctx.btc_l, ctx.btc_c, n)


def _rv(r: np.ndarray, n: int, start: int) -> np.ndarray:
    return pad(np.sqrt(windows(r * r, n, start).mean(axis=1)), start)


@indicator("btc_realized")
def btc_realized(ctx: Ctx, n: int) -> np.ndarray:
    return _rv(ctx.btc_logret, n, ctx.start)


@indicator("rv_ratio_btc")
def rv_ratio_btc(ctx: Ctx, n: int) -> np.ndarray:
    """log(own realized vol / BTC's) over n bars."""
    return np.log(safe_div(_rv(ctx.logret, n, ctx.start), _rv(ctx.btc_logret, n, ctx.start), 1.0))


@indicator("residual_ret")
def residual_ret(ctx: Ctx, n: int) -> np.ndarray:
    """This bar's log return minus beta(n) times BTC's: the idiosyncratic part."""
    return ctx.logret - btc_beta(ctx, n) * ctx.btc_logret
