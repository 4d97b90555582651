"""Walk-forward choice among candidate thresholds, and trade statistics clustered by day.

Why walk-forward: the best of several margins on one period is biased upwards (its t-statistic is
the maximum of several noisy ones), and a policy validated that way lost on the held-out month.
Here the validation decisions are cut into calendar blocks; for every block after the first the
candidate with the best t-statistic on the *earlier* blocks (trades whose outcome was known by
then: decided at least ``purge`` before the block starts) is traded in that block. The trades so
collected are out of sample for the choice, so their mean and t-statistic measure the selection
procedure itself, not its luckiest candidate.

The t-statistics are clustered by day (``metrics.day_clustered_t``): trades of different symbols
on the same day share one market, so they are not independent draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from mlsignals.backtest.metrics import NS_PER_DAY, day_clustered_t
from model.contract import N_HORIZONS

N_BLOCKS = 6  # calendar blocks: 5 traded out of sample
MIN_T = round(NormalDist().inv_cdf(1 - 0.05 / N_HORIZONS), 2)  # 2.24: one-sided 5 %, Bonferroni over horizons


@dataclass(frozen=True)
class CandidateTrades:
    """One candidate's trades: ret [N] net returns (fractions), time [N] decision times (int64 ns)."""

    ret: np.ndarray
    time: np.ndarray

    def where(self, mask: np.ndarray) -> CandidateTrades:
        return CandidateTrades(self.ret[mask], self.time[mask])


def trade_summary(trades: CandidateTrades) -> dict:
    """trades, mean net trade, its day-clustered t and the number of days traded."""
    n = int(trades.ret.size)
    return {"trades": n, "mean_net": float(trades.ret.mean()) if n else None,
            "t": day_clustered_t(trades.ret, trades.time),
            "days": int(np.unique(trades.time // NS_PER_DAY).size) if n else 0}


def block_edges(times_ns: np.ndarray, n_blocks: int) -> np.ndarray:
    """``n_blocks`` + 1 edges splitting [first, last] decision time into equal calendar spans (the
    last edge lies just after the last decision, so every decision falls in a block)."""
    lo, hi = int(np.min(times_ns)), int(np.max(times_ns)) + 1
    return np.linspace(lo, hi, n_blocks + 1).astype(np.int64)


def best_candidate(cands: list[CandidateTrades], min_trades: int, before: int | None = None) -> int | None:
    """Index of the candidate with the highest day-clustered t among those with at least
    ``min_trades`` trades decided before ``before`` (all when None); None if none qualifies.
    By t, not by mean: the highest mean is mostly the candidate with the fewest trades (the
    tightest margin), i.e. the noisiest one - the winner's curse."""
    best, best_t = None, -np.inf
    for i, c in enumerate(cands):
        past = c if before is None else c.where(c.time < before)
        t = day_clustered_t(past.ret, past.time) if past.ret.size >= min_trades else None
        if t is not None and t > best_t:
            best, best_t = i, t
    return best


@dataclass(frozen=True)
class WalkForward:
    """The out-of-sample trades and, per block after the first, the candidate chosen for it
    (None: no candidate had enough earlier trades, so the block was not traded)."""

    trades: CandidateTrades
    picks: list[int | None]

    @property
    def summary(self) -> dict:
        return trade_summary(self.trades)


def walk_forward(cands: list[CandidateTrades], edges: np.ndarray, min_trades: int, purge_ns: int) -> WalkForward:
    """Trade every block after the first with the candidate that was best before it (see module doc)."""
    rets, times, picks = [], [], []
    for b in range(1, len(edges) - 1):
        pick = best_candidate(cands, min_trades, before=int(edges[b]) - purge_ns)
        picks.append(pick)
        if pick is None:
            continue
        c = cands[pick]
        inside = (c.time >= edges[b]) & (c.time < edges[b + 1])
        rets.append(c.ret[inside]), times.append(c.time[inside])
    if not rets:
        return WalkForward(CandidateTrades(np.zeros(0), np.zeros(0, dtype=np.int64)), picks)
    return WalkForward(CandidateTrades(np.concatenate(rets), np.concatenate(times)), picks)
