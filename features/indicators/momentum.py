"""Momentum oscillators: RSI, Stochastic, StochRSI, CCI, Williams %R, ROC, TRIX, Ultimate, MFI,
TSI, KST, CMO, balance of power, APO in ATR units. Oscillators keep their native ranges."""

from __future__ import annotations

import numpy as np
import pandas_ta as ta
import talib

from features.indicators.base import Ctx, from_ta, indicator


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
    df = ta.tsi(ctx.series("c"), fast=fast, slow=slow, signal=signal)
    return {"tsi": from_ta(df, ctx.n, 0), "signal": from_ta(df, ctx.n, 1)}


@indicator("kst")
def kst(ctx: Ctx) -> dict[str, np.ndarray]:
    df = ta.kst(ctx.series("c"))
    return {"kst": from_ta(df, ctx.n, 0), "signal": from_ta(df, ctx.n, 1)}


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
