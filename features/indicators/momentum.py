"""Momentum oscillators: RSI, Stochastic, StochRSI, CCI, Williams %R, ROC, TRIX, Ultimate, MFI,
TSI, KST, CMO, balance of power, APO in ATR units. Oscillators keep their native ranges."""

from __future__ import annotations

import numpy as np
import talib

from features.indicators.base import Ctx, indicator, rmean


@indicator("rsi")
def rsi(ctx: Ctx, n: int) -> np.ndarray:
    return talib.RSI(ctx.c, n)


@indicator("stoch")
def stoch(ctx: Ctx, k: int, smooth: int, d: int) -> dict[str, np.ndarray]:
    sk, sd = talib.STOCH(ctx.h, ctx.l, ctx.c, fastk_period=k, slowk_period=smooth, slowd_period=d)
    return {"k": sk, "d": sd}


@indicator("stochf")
def stochf(ctx: Ctx, n: int) -> np.ndarray:
    return talib.STOCHF(ctx.h, ctx.l, ctx.c, fastk_period=n, fastd_period=1)[0]


@indicator("stochrsi")
def stochrsi(ctx: Ctx, n: int, k: int, d: int) -> dict[str, np.ndarray]:
    fk, fd = talib.STOCHRSI(ctx.c, timeperiod=n, fastk_period=k, fastd_period=d)
    return {"k": fk, "d": fd}


@indicator("cci")
def cci(ctx: Ctx, n: int) -> np.ndarray:
    return talib.CCI(ctx.h, ctx.l, ctx.c, n)


@indicator("willr")
def willr(ctx: Ctx, n: int) -> np.ndarray:
    return talib.WILLR(ctx.h, ctx.l, ctx.c, n)


@indicator("roc")
def roc(ctx: Ctx, n: int) -> np.ndarray:
    return talib.ROC(ctx.c, n)


@indicator("trix")
def trix(ctx: Ctx, n: int) -> np.ndarray:
    return talib.TRIX(ctx.c, n)


@indicator("ultosc")
def ultosc(ctx: Ctx, fast: int, mid: int, slow: int) -> np.ndarray:
    return talib.ULTOSC(ctx.h, ctx.l, ctx.c, fast, mid, slow)


@indicator("mfi")
def mfi(ctx: Ctx, n: int) -> np.ndarray:
    return talib.MFI(ctx.h, ctx.l, ctx.c, ctx.v, n)


@indicator("tsi")
def tsi(ctx: Ctx, fast: int, slow: int, signal: int) -> dict[str, np.ndarray]:
    """True strength index. pandas-ta's ``tsi`` only chains TA-Lib EMAs (double-smoothed price
    change over double-smoothed |change|, EMA signal), so TA-Lib is called directly, in the same
    order (identical values, checked against pandas-ta in test_feature_speed_parity.py)."""
    diff = np.diff(ctx.c, prepend=np.nan)
    num = talib.EMA(talib.EMA(diff, slow), fast)
    den = talib.EMA(talib.EMA(np.abs(diff), slow), fast)
    t = 100.0 * num / den
    if np.isnan(t).all():  # too short for the EMAs (pandas-ta returns None): all NaN
        return {"tsi": t, "signal": t}
    return {"tsi": t, "signal": talib.EMA(t, signal)}


# pandas-ta kst defaults: ROC periods, their SMA lengths, signal SMA length
_KST_ROC, _KST_SMA, _KST_SIGNAL = (10, 15, 20, 30), (10, 10, 10, 15), 9


@indicator("kst")
def kst(ctx: Ctx) -> dict[str, np.ndarray]:
    """Know Sure Thing as pandas-ta computes it (TA-Lib ROCs, their rolling means weighted 1..4,
    rolling-mean signal), with the means over fixed windows evaluated only for needed rows (the
    signal needs the KST of its 8 preceding rows too). Checked against pandas-ta's output."""
    s0 = max(0, ctx.start - (_KST_SIGNAL - 1))
    m1, m2, m3, m4 = (rmean(talib.ROC(ctx.c, r), m, s0) for r, m in zip(_KST_ROC, _KST_SMA, strict=True))
    k = 100.0 * (m1 + 2 * m2 + 3 * m3 + 4 * m4)
    return {"kst": k, "signal": rmean(k, _KST_SIGNAL, ctx.start)}


@indicator("cmo")
def cmo(ctx: Ctx, n: int) -> np.ndarray:
    return talib.CMO(ctx.c, n)


@indicator("bop")
def bop(ctx: Ctx) -> np.ndarray:
    return talib.BOP(ctx.o, ctx.h, ctx.l, ctx.c)


@indicator("bop_sma")
def bop_sma(ctx: Ctx, n: int) -> np.ndarray:
    return talib.SMA(talib.BOP(ctx.o, ctx.h, ctx.l, ctx.c), n)


@indicator("apo_atr")
def apo_atr(ctx: Ctx, fast: int, slow: int) -> np.ndarray:
    """Absolute price oscillator in units of ATR(14): a scale-free MA spread."""
    return talib.APO(ctx.c, fast, slow, matype=0) / talib.ATR(ctx.h, ctx.l, ctx.c, 14)
