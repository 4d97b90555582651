"""Statistics of the return path: skew, kurtosis, autocorrelation, Hurst exponent, efficiency
ratio, permutation entropy, z-score, percentile rank, drawdown, share of up bars."""

from __future__ import annotations

import math

import numpy as np
import pandas_ta as ta
import talib

from features.indicators.base import Ctx, from_ta, indicator, pad, rcorr, rmean, rsum, safe_div, shift, windows


@indicator("skew")
def skew(ctx: Ctx, n: int) -> np.ndarray:
    # pandas' rolling skew/kurt keep running moments, so a row depends (at ~1e-12) on where the
    # input starts: always pass all rows, so the live tail equals the full frame's rows bit for bit
    return from_ta(ta.skew(ctx.series("logret"), length=n), ctx.n)


@indicator("kurt")
def kurt(ctx: Ctx, n: int) -> np.ndarray:
    return from_ta(ta.kurtosis(ctx.series("logret"), length=n), ctx.n)


@indicator("autocorr")
def autocorr(ctx: Ctx, n: int, lag: int) -> np.ndarray:
    return rcorr(ctx.logret, shift(ctx.logret, lag), n, ctx.start)


_HURST_LAGS = np.array([1, 2, 4, 8])


@indicator("hurst")
def hurst(ctx: Ctx, n: int) -> np.ndarray:
    """Hurst exponent from how the std of k-bar log-price changes grows with k (k = 1, 2, 4, 8),
    each std over the last n bars: the least-squares slope of log std on log k."""
    lp = np.log(ctx.c)
    logstd = np.stack([np.log(windows(lp - shift(lp, k), n, ctx.start).std(axis=1)) for k in _HURST_LAGS])
    x = np.log(_HURST_LAGS) - np.log(_HURST_LAGS).mean()
    h = (x @ (logstd - logstd.mean(axis=0))) / (x @ x)
    return pad(np.where(np.isfinite(h), h, np.where(np.isnan(logstd).any(axis=0), np.nan, 0.5)), ctx.start)


@indicator("efficiency")
def efficiency(ctx: Ctx, n: int) -> np.ndarray:
    """Kaufman efficiency ratio as pandas-ta's ``er`` computes it: |n-bar change| / sum of the
    n last |1-bar changes|, the sum over fixed windows evaluated only for needed rows (checked
    against pandas-ta's own output in test_feature_speed_parity.py)."""
    path = rsum(np.abs(np.diff(ctx.c, prepend=np.nan)), n, ctx.start)
    return np.abs(ctx.c - shift(ctx.c, n)) / path


@indicator("perm_entropy")
def perm_entropy(ctx: Ctx, n: int, order: int) -> np.ndarray:
    """Permutation entropy (Bandt & Pompe) of closes: Shannon entropy of the ordinal patterns of
    ``order`` consecutive closes over the last n bars, normalised to [0, 1]."""
    lag = np.stack([shift(ctx.c, order - 1 - i) for i in range(order)], axis=1)
    valid = ~np.isnan(lag).any(axis=1)
    ranks = np.argsort(np.argsort(np.nan_to_num(lag), axis=1, kind="stable"), axis=1)
    code = (ranks * (order ** np.arange(order))).sum(axis=1)
    codes = np.unique(code[valid]) if valid.any() else np.array([0])
    n_pat = math.factorial(order)
    ent = np.zeros(ctx.n)
    for pc in codes:
        p = rmean(np.where(valid, (code == pc).astype(np.float64), np.nan), n, ctx.start)
        ent -= np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0) * np.where(np.isnan(p), np.nan, 1.0)
    return ent / math.log(n_pat) + np.where(np.isnan(rmean(np.where(valid, 0.0, np.nan), n, ctx.start)), np.nan, 0.0)


@indicator("zscore")
def zscore(ctx: Ctx, n: int) -> np.ndarray:
    return safe_div(ctx.c - talib.SMA(ctx.c, n), talib.STDDEV(ctx.c, n))


@indicator("pct_rank")
def pct_rank(ctx: Ctx, n: int) -> np.ndarray:
    """Fraction of the last n closes at or below the current close."""
    w = windows(ctx.c, n, ctx.start)
    return pad((w <= ctx.c[ctx.start :, None]).mean(axis=1) * np.where(np.isnan(w[:, 0]), np.nan, 1.0), ctx.start)


@indicator("drawdown")
def drawdown(ctx: Ctx, n: int) -> np.ndarray:
    """Close below the highest close of the last n bars, as a fraction (<= 0)."""
    return ctx.c / talib.MAX(ctx.c, n) - 1.0


@indicator("up_share")
def up_share(ctx: Ctx, n: int) -> np.ndarray:
    r = ctx.logret
    return rmean(np.where(np.isnan(r), np.nan, (r > 0).astype(np.float64)), n, ctx.start)
