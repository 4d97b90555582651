"""The indicator registry, the per-frame context every indicator reads, and windowed numpy helpers.

An indicator is ``fn(ctx, **params) -> array | dict[output, array]``: arrays are float64, one
value per bar of ``ctx`` (NaN where the look-back is not filled yet). A multi-output indicator
returns a dict; the calculator computes it once per parameter set and picks the named output.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
import pandas as pd

IndicatorResult = np.ndarray | dict[str, np.ndarray]
Indicator = Callable[..., IndicatorResult]
INDICATORS: dict[str, Indicator] = {}


def indicator(name: str) -> Callable[[Indicator], Indicator]:
    """Register ``fn`` under ``name`` (the ``indicator`` field of a FeatureDef)."""

    def deco(fn: Indicator) -> Indicator:
        if name in INDICATORS:
            raise ValueError(f"indicator {name!r} registered twice")
        INDICATORS[name] = fn
        return fn

    return deco


class Ctx:
    """One symbol's bars as contiguous float64 arrays, plus BTC's aligned bars (or None).

    ``btc_*`` arrays have the same length and timestamps as the symbol's arrays; for BTC itself
    they are its own arrays (so cross-asset columns are degenerate for BTC: corr = beta = 1).

    ``start`` is the first row whose value the caller needs (0 = all rows; the live path needs only
    the last few). Windowed indicators evaluate their windows only for rows >= ``start`` and leave
    earlier rows NaN; recursive (TA-Lib) ones run over all rows, as their value depends on them.
    """

    def __init__(self, bars: pd.DataFrame, btc: pd.DataFrame, bar_minutes: int, start: int = 0) -> None:
        self.index: pd.DatetimeIndex = bars.index
        self.bar_minutes = bar_minutes
        self.o, self.h, self.l, self.c, self.v = (
            np.ascontiguousarray(bars[k].to_numpy(dtype=np.float64)) for k in ("open", "high", "low", "close", "volume")
        )
        self.btc_h, self.btc_l, self.btc_c = (
            np.ascontiguousarray(btc[k].to_numpy(dtype=np.float64)) for k in ("high", "low", "close")
        )
        self.n = len(self.c)
        self.start = min(max(0, start), self.n)

    def series(self, name: str) -> pd.Series:
        """A column as a Series on a RangeIndex (pandas-ta input)."""
        return pd.Series(getattr(self, name), copy=False)

    @cached_property
    def logret(self) -> np.ndarray:
        """Log return of each bar's close over the previous close; NaN for the first bar."""
        return np.diff(np.log(self.c), prepend=np.nan)

    @cached_property
    def btc_logret(self) -> np.ndarray:
        return np.diff(np.log(self.btc_c), prepend=np.nan)


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """x[t - k] at t (k >= 0), NaN-padded at the front: never a future value."""
    if k == 0:
        return x
    out = np.full_like(x, np.nan)
    out[k:] = x[:-k]
    return out


def windows(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """[len(x) - start, n] view of the trailing n values ending at each bar from ``start`` on (NaN
    where a window reaches before the first bar).

    Summing a fixed window in the same order at every bar makes a row independent of how much
    history precedes it, which is what live/training parity needs (no running totals). Every
    window has the same memory layout (strides) whatever ``start`` is, so a row's reduction does
    not change when only the last rows are asked for. Built with the ndarray constructor rather
    than ``sliding_window_view``: this runs ~140 times per symbol and tick.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    first = start - (n - 1)  # position in x of the oldest value of row ``start``'s window
    if first < 0:  # windows reaching before the first bar read NaN padding
        x = np.concatenate([np.full(-first, np.nan), x])
        first = 0
    item = x.itemsize
    return np.ndarray((len(x) - first - n + 1, n), np.float64, x, first * item, (item, item))


def pad(tail: np.ndarray, start: int) -> np.ndarray:
    """Values for rows ``start..`` back to full length, NaN before ``start``."""
    if start == 0:
        return tail
    out = np.full(start + len(tail), np.nan)
    out[start:] = tail
    return out


def rmean(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    return pad(windows(x, n, start).mean(axis=1), start)


def rsum(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    return pad(windows(x, n, start).sum(axis=1), start)


def rcov(x: np.ndarray, y: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Population covariance of the trailing n pairs (computed on demeaned windows)."""
    wx, wy = windows(x, n, start), windows(y, n, start)
    return pad(((wx - wx.mean(axis=1, keepdims=True)) * (wy - wy.mean(axis=1, keepdims=True))).mean(axis=1), start)


def rcorr(x: np.ndarray, y: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    wx, wy = windows(x, n, start), windows(y, n, start)
    dx = wx - wx.mean(axis=1, keepdims=True)
    dy = wy - wy.mean(axis=1, keepdims=True)
    den = np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (dx * dy).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0) * _nan_mask(den)
    return pad(r, start)


def _nan_mask(a: np.ndarray) -> np.ndarray:
    """1.0 where a is finite, NaN where it is not (keeps warm-up rows NaN after np.where)."""
    return np.where(np.isfinite(a), 1.0, np.nan)


def safe_div(a: np.ndarray, b: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """a / b, with ``fill`` where b == 0 (e.g. a flat candle's range) and NaN kept from inputs."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(b != 0, a / np.where(b != 0, b, 1.0), fill)
    return out * _nan_mask(a) * _nan_mask(b)


def from_ta(result: pd.Series | pd.DataFrame | None, n: int, col: int | None = None) -> np.ndarray:
    """A pandas-ta result as a float64 array; pandas-ta returns None when the input is shorter
    than its look-back, which becomes an all-NaN column."""
    if result is None:
        return np.full(n, np.nan)
    if col is not None:
        result = result.iloc[:, col]
    return result.to_numpy(dtype=np.float64)
