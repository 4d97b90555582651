"""Candle shape (body and wicks as fractions of the range) and TA-Lib candlestick patterns
(scaled from -100/0/100 to -1/0/1)."""

from __future__ import annotations

import numpy as np
import talib

from features.indicators.base import Ctx, indicator, rmean, safe_div, shift


def _shape(ctx: Ctx) -> dict[str, np.ndarray]:
    o, h, lo, c = ctx.o, ctx.h, ctx.l, ctx.c
    rng = h - lo  # a flat candle (rng == 0) has no body, no wicks, close in the middle
    return {
        "body": safe_div(c - o, rng),
        "upper_wick": safe_div(h - np.maximum(o, c), rng),
        "lower_wick": safe_div(np.minimum(o, c) - lo, rng),
        "body_pct": c / o - 1.0,
        "range_pct": rng / o,
        "close_pos": safe_div(c - lo, rng, 0.5),
        "gap": o / shift(c, 1) - 1.0,
    }


@indicator("shape")
def shape(ctx: Ctx) -> dict[str, np.ndarray]:
    return _shape(ctx)


@indicator("shape_mean")
def shape_mean(ctx: Ctx, n: int) -> dict[str, np.ndarray]:
    s = _shape(ctx)
    return {"body": rmean(s["body"], n, ctx.start), "close_pos": rmean(s["close_pos"], n, ctx.start)}


@indicator("pattern")
def pattern(ctx: Ctx, pattern: str) -> np.ndarray:
    out = getattr(talib, pattern)(ctx.o, ctx.h, ctx.l, ctx.c).astype(np.float64) / 100.0
    return out
