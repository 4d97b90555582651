"""Trade simulation: one position per symbol, filled at the next minute's open, closed at take
profit, stop loss or expiry from later candles, with fees and slippage on both sides.

Fill rule (why): a signal is decided once candle t has closed; its ``entry`` is that close, but
the earliest realistic fill is the open of candle t+1, worsened by the slippage. The signal's
absolute SL/TP prices are kept (a consumer places them as orders). Resolution follows
``signals.paper.evaluate_signal``: candles t+1 .. the one closing at ``expires_at``; a candle that
touches both levels counts as the stop (the worse case). One refinement: a candle that *opens*
beyond a level exits at that open (a stop fills worse, a take-profit limit better) - this
matters only when price gaps through a level. No hit: exit at the last candle's close (EXPIRED);
data ending first: exit at the last close (END).

Returns of a slot (the capital of one symbol, fully invested per trade, no leverage), with fee f
per side and fill prices P (entry) and X (exit): long (1-f)^2 X/P - 1; short (1-f)(2 - (1+f) X/P) - 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlsignals.backtest.decisions import Decisions, Market
from signals.costs import CostModel


@dataclass
class Trades:
    """Closed trades, one row each (all arrays [N]). Positions index the market grid;
    ret: net return of the slot (fraction) after fees and slippage; gross: side*(X/P - 1) at the
    fill prices before fees; outcome: TP | SL | EXPIRED | END."""

    sym: list[int] = field(default_factory=list)
    side: list[int] = field(default_factory=list)
    decision_pos: list[int] = field(default_factory=list)
    entry_pos: list[int] = field(default_factory=list)
    exit_pos: list[int] = field(default_factory=list)
    entry_fill: list[float] = field(default_factory=list)
    exit_fill: list[float] = field(default_factory=list)
    ret: list[float] = field(default_factory=list)
    gross: list[float] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ret)

    def array(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name))


@dataclass
class SimResult:
    """trades; equity [S, T]: each symbol slot's equity (starts at 1) marked at every minute's
    close; in_position [S, T] bool; portfolio [T]: equal-capital portfolio (mean of slots)."""

    trades: Trades
    equity: np.ndarray
    in_position: np.ndarray

    @property
    def portfolio(self) -> np.ndarray:
        return self.equity.mean(axis=0)


def net_return(side: int, entry_fill: float, exit_price: np.ndarray | float, fee: float):
    """Slot value ratio - 1 for a position closed (or marked) at ``exit_price`` (see module doc)."""
    x = np.asarray(exit_price, dtype=np.float64) / entry_fill
    if side > 0:
        return (1 - fee) ** 2 * x - 1
    return (1 - fee) * (2 - (1 + fee) * x) - 1


def resolve(side: int, sl: float, tp: float, q: int, e: int, o: np.ndarray, h: np.ndarray, lo: np.ndarray,
            c: np.ndarray) -> tuple[int, float, str]:
    """(exit position, exit price before slippage, outcome) of a position opened at candle q's
    open and allowed to live through candle e (inclusive). NaN levels never trigger."""
    hh, ll, oo = h[q : e + 1], lo[q : e + 1], o[q : e + 1]
    with np.errstate(invalid="ignore"):
        sl_hit = (ll <= sl) if side > 0 else (hh >= sl)
        tp_hit = (hh >= tp) if side > 0 else (ll <= tp)
    hit = np.flatnonzero(sl_hit | tp_hit)
    if hit.size:
        j = int(hit[0])
        level, outcome = (sl, "SL") if sl_hit[j] else (tp, "TP")
        beyond = (oo[j] <= level) if (side > 0) == (outcome == "SL") else (oo[j] >= level)
        return q + j, float(oo[j]) if beyond else float(level), outcome
    closes = c[q : e + 1]
    last = np.flatnonzero(np.isfinite(closes))
    k = q + int(last[-1]) if last.size else q
    return k, float(c[k]), "EXPIRED"


def simulate(decisions: Decisions, market: Market, costs: CostModel) -> SimResult:
    """Walk each symbol's decisions in time order; a LONG/SHORT decision opens a position only
    when that symbol is flat. Positions still open at the end of the data close at the last close."""
    S, T = len(market.symbols), len(market.times)
    equity = np.ones((S, T))
    in_pos = np.zeros((S, T), dtype=bool)
    trades = Trades()
    f, s = costs.fee, costs.slip
    for i in range(S):
        o, h, lo, c = market.open[i], market.high[i], market.low[i], market.close[i]
        c_mark = _ffill(c)
        mask = (decisions.sym == i) & (decisions.side != 0)
        d = decisions.select(mask)
        order = np.argsort(d.pos, kind="stable")
        eq, last_end, free_from = 1.0, 0, 0
        for j in order:
            p = int(d.pos[j])
            q = p + 1
            if p < free_from or q >= T or not np.isfinite(o[q]):
                continue
            side = int(d.side[j])
            e = min(int(d.expiry_pos[j]), T - 1)
            if e < q:
                continue
            k, x, outcome = resolve(side, d.sl[j], d.tp[j], q, e, o, h, lo, c)
            if outcome == "EXPIRED" and int(d.expiry_pos[j]) > T - 1:
                outcome = "END"
            entry_fill = o[q] * (1 + side * s)
            exit_fill = x * (1 - side * s)
            ret = float(net_return(side, entry_fill, exit_fill, f))
            equity[i, last_end:q] = eq
            path = net_return(side, entry_fill, c_mark[q : k + 1], f)
            path[-1] = ret
            equity[i, q : k + 1] = eq * (1 + path)
            in_pos[i, q : k + 1] = True
            eq *= 1 + ret
            last_end, free_from = k + 1, k
            for name, v in (("sym", i), ("side", side), ("decision_pos", p), ("entry_pos", q), ("exit_pos", k),
                            ("entry_fill", entry_fill), ("exit_fill", exit_fill), ("ret", ret),
                            ("gross", side * (exit_fill / entry_fill - 1)), ("outcome", outcome),
                            ("confidence", float(d.confidence[j]))):
                getattr(trades, name).append(v)
        equity[i, last_end:] = eq
    return SimResult(trades, equity, in_pos)


def _ffill(x: np.ndarray) -> np.ndarray:
    """Forward-fill NaN (marks a position through a missing candle at the last known close)."""
    idx = np.where(np.isfinite(x), np.arange(len(x)), 0)
    np.maximum.accumulate(idx, out=idx)
    return x[idx]
