"""Backtest statistics from trades and per-minute equity.

Sharpe and Sortino use simple per-minute returns of the equity curve, annualised with
sqrt(525,600) (crypto trades every minute of the year: 365 * 24 * 60), and a zero risk-free rate.
Sortino's downside deviation is sqrt(mean(min(r, 0)^2)) over all minutes. The t-statistic tests
the mean net trade return against zero: mean / (std / sqrt(n)). ``t_days`` is the same test with a
standard error clustered by UTC day of the decision: trades of different symbols on one day share
one market (crypto moves together), so they are not independent draws, and the plain t overstates
the evidence (Liang-Zeger cluster-robust error, small-sample factor G/(G-1)).
"""

from __future__ import annotations

import math

import numpy as np

MINUTES_PER_YEAR = 365 * 24 * 60
NS_PER_DAY = 86_400 * 10**9


def day_clustered_t(ret: np.ndarray, time_ns: np.ndarray) -> float | None:
    """Mean / cluster-robust standard error, clusters = UTC days; None with < 2 days or no spread."""
    ret = np.asarray(ret, dtype=np.float64)
    if ret.size < 2:
        return None
    _, day = np.unique(np.asarray(time_ns) // NS_PER_DAY, return_inverse=True)
    g = int(day.max()) + 1
    if g < 2:
        return None
    m = float(ret.mean())
    score = np.bincount(day, weights=ret - m, minlength=g)
    var = g / (g - 1) * float((score**2).sum()) / ret.size**2
    return m / np.sqrt(var) if var > 0 else None


def trade_stats(ret: np.ndarray, time_ns: np.ndarray | None = None) -> dict[str, float | int | None]:
    """ret [N] net trade returns (fractions); time_ns [N] decision times (for ``t_days``)."""
    ret = np.asarray(ret, dtype=np.float64)
    n = int(ret.size)
    wins, losses = ret[ret > 0], ret[ret <= 0]
    std = float(ret.std(ddof=1)) if n > 1 else float("nan")
    loss_sum = float(-losses.sum())
    return {
        "trades": n,
        "hit_rate": float(wins.size / n) if n else None,
        "avg_win": float(wins.mean()) if wins.size else None,
        "avg_loss": float(losses.mean()) if losses.size else None,
        "mean_trade": float(ret.mean()) if n else None,
        "profit_factor": (float(wins.sum() / loss_sum) if loss_sum > 0 else (math.inf if wins.size else None)),
        "t_stat": float(ret.mean() / (std / math.sqrt(n))) if n > 1 and std > 0 else None,
        "t_days": day_clustered_t(ret, time_ns) if time_ns is not None else None,
    }


def equity_stats(equity: np.ndarray, in_position: np.ndarray | None = None) -> dict[str, float | None]:
    """equity [T] (starts near 1); in_position [T] or [S, T] bool (exposure = mean)."""
    eq = np.asarray(equity, dtype=np.float64)
    r = np.diff(eq) / eq[:-1] if eq.size > 1 else np.zeros(0)
    sd = float(r.std(ddof=1)) if r.size > 1 else 0.0
    down = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))) if r.size else 0.0
    ann = math.sqrt(MINUTES_PER_YEAR)
    return {
        "net_return": float(eq[-1] / 1.0 - 1.0) if eq.size else 0.0,
        "max_drawdown": float((eq / np.maximum.accumulate(eq) - 1.0).min()) if eq.size else 0.0,
        "sharpe": float(r.mean() / sd * ann) if sd > 0 else None,
        "sortino": float(r.mean() / down * ann) if down > 0 else None,
        "exposure": float(np.mean(in_position)) if in_position is not None and np.size(in_position) else 0.0,
    }


def drawdown(equity: np.ndarray) -> np.ndarray:
    eq = np.asarray(equity, dtype=np.float64)
    return eq / np.maximum.accumulate(eq) - 1.0


def summarize(sim, market) -> dict:
    """{"total": {...}, "per_symbol": {sym: {...}}} from a SimResult on ``market``."""
    ret = sim.trades.array("ret")
    sym = sim.trades.array("sym")
    when = market.times_ns(sim.trades.array("decision_pos"))
    total = {**trade_stats(ret, when), **equity_stats(sim.portfolio, sim.in_position)}
    per = {}
    for i, s in enumerate(market.symbols):
        mine = sym == i
        per[s] = {**trade_stats(ret[mine], when[mine]),
                  **equity_stats(sim.equity[i], sim.in_position[i])}
    return {"total": total, "per_symbol": per}


def calibration(confidence: np.ndarray, won: np.ndarray, bins: int = 8) -> list[dict]:
    """Confidence bins (equal counts) vs realised hit rate: [{lo, hi, mean_conf, hit_rate, n}]."""
    confidence, won = np.asarray(confidence, dtype=np.float64), np.asarray(won, dtype=bool)
    if confidence.size == 0:
        return []
    edges = np.unique(np.quantile(confidence, np.linspace(0, 1, bins + 1)))
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (confidence >= a) & ((confidence <= b) if b == edges[-1] else (confidence < b))
        if m.any():
            out.append({"lo": float(a), "hi": float(b), "mean_conf": float(confidence[m].mean()),
                        "hit_rate": float(won[m].mean()), "n": int(m.sum())})
    return out
