"""Microstructure proxies from OHLCV bars (no order book): Amihud illiquidity, Corwin-Schultz and
Abdi-Ranaldo spreads, Roll's spread, a Kyle-lambda proxy. Made scale-free: returns instead of price
changes, volume relative to its own window mean."""

from __future__ import annotations

import math

import numpy as np

from features.indicators.base import Ctx, indicator, pad, rcov, rmean, safe_div, shift, windows


@indicator("amihud")
def amihud(ctx: Ctx, n: int) -> np.ndarray:
    """mean(|r| / v) * mean(v) over n bars: price impact per unit of *relative* volume."""
    r = np.abs(ctx.logret)
    impact = np.where(ctx.v > 0, r / np.where(ctx.v > 0, ctx.v, 1.0), 0.0) * np.where(np.isnan(r), np.nan, 1.0)
    return rmean(impact, n, ctx.start) * rmean(ctx.v, n, ctx.start)


@indicator("corwin_schultz")
def corwin_schultz(ctx: Ctx, n: int) -> np.ndarray:
    """Corwin & Schultz (2012) high-low spread from two consecutive bars, floored at 0, mean of n."""
    hl = np.log(ctx.h / ctx.l) ** 2
    beta = hl + shift(hl, 1)
    gamma = np.log(np.maximum(ctx.h, shift(ctx.h, 1)) / np.minimum(ctx.l, shift(ctx.l, 1))) ** 2
    k = 3.0 - 2.0 * math.sqrt(2.0)
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    s = 2.0 * (np.exp(alpha) - 1.0) / (1.0 + np.exp(alpha))
    return rmean(np.maximum(s, 0.0) * np.where(np.isnan(s), np.nan, 1.0), n, ctx.start)


@indicator("abdi_ranaldo")
def abdi_ranaldo(ctx: Ctx, n: int) -> np.ndarray:
    """Abdi & Ranaldo (2017) close-high-low spread, written with the previous bar's close so that
    bar t uses only bars t-1 and t."""
    eta = (np.log(ctx.h) + np.log(ctx.l)) / 2.0
    lc = np.log(ctx.c)
    s2 = 4.0 * (shift(lc, 1) - shift(eta, 1)) * (shift(lc, 1) - eta)
    return np.sqrt(np.maximum(rmean(s2, n, ctx.start), 0.0))


@indicator("roll")
def roll(ctx: Ctx, n: int) -> np.ndarray:
    """Roll (1984) spread from the serial covariance of returns, as a fraction of price."""
    cov = rcov(ctx.logret, shift(ctx.logret, 1), n, ctx.start)
    return 2.0 * np.sqrt(np.maximum(-cov, 0.0))


@indicator("kyle_lambda")
def kyle_lambda(ctx: Ctx, n: int) -> np.ndarray:
    """Slope of return on signed volume over n bars, times the window's mean volume."""
    sv = np.sign(ctx.logret) * ctx.v
    wr, ws = windows(ctx.logret, n, ctx.start), windows(sv, n, ctx.start)
    ds = ws - ws.mean(axis=1, keepdims=True)
    slope = safe_div(((wr - wr.mean(axis=1, keepdims=True)) * ds).sum(axis=1), (ds * ds).sum(axis=1))
    return pad(slope, ctx.start) * rmean(ctx.v, n, ctx.start)
