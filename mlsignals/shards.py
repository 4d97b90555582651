"""How the scheduler splits a tick's symbols over FeatureCalculator calls (pure logic, no Ray).

A shard is one FeatureCalculator call; the shards of a tick run concurrently, and Serve spreads
them over the replicas (and nodes) it has. Cross-asset features need BTC's candles beside every
symbol's: ``FeatureStage.load_candles`` adds BTC to each shard's load by itself and computes it
as the reference without reporting it, so BTC is *named* in one shard only and no symbol gets
two signals. A shard that fails (its replica killed mid-tick, a timeout) costs only its own
symbols: they become NEUTRAL-with-reason signals, the other shards' symbols are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from mlsignals.pipeline import FeatureResult


def shard_symbols(symbols: Sequence[str], size: int) -> list[list[str]]:
    """``symbols`` in order, cut into ``ceil(n / size)`` shards of at most ``size`` symbols.

    Balanced: 205 symbols at size 25 make 9 shards of 22-23, not 8 of 25 and a straggler of 5,
    so the tick waits on no shard much larger than the others. Raises ValueError on a size
    below 1 or a symbol named twice (it would get two signals)."""
    if size < 1:
        raise ValueError(f"shard size must be at least 1, got {size}")
    if len(set(symbols)) != len(symbols):
        twice = sorted({s for s in symbols if symbols.count(s) > 1})
        raise ValueError(f"symbols named twice: {twice}")
    if not symbols:
        return []
    k = math.ceil(len(symbols) / size)
    base, extra = divmod(len(symbols), k)
    out, start = [], 0
    for j in range(k):
        stop = start + base + (1 if j < extra else 0)
        out.append(list(symbols[start:stop]))
        start = stop
    return out


def failed_shard(symbols: Sequence[str], minute: pd.Timestamp, reason: str) -> dict[str, FeatureResult]:
    """The feature results of a shard whose call failed: no window, ``reason`` as each symbol's
    error, so the signal stage emits a NEUTRAL-with-reason signal for the tick's bar minute."""
    return {s: FeatureResult(s, bar_time=pd.Timestamp(minute), error=f"{s}: {reason}") for s in symbols}
