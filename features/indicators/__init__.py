"""Indicator implementations, one module per group, all registered in ``INDICATORS``.

Importing this package registers every indicator; ``features.spec`` refers to them by name.
"""

from features.indicators import candle, context, micro, momentum, stats, trend, volatility, volume
from features.indicators.base import INDICATORS, Ctx

__all__ = ["INDICATORS", "Ctx", "candle", "context", "micro", "momentum", "stats", "trend", "volatility", "volume"]
