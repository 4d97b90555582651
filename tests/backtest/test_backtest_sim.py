"""Trade simulation and metrics on hand-made candles and trades (no model)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlsignals.backtest.decisions import Decisions, Market
from mlsignals.backtest.metrics import MINUTES_PER_YEAR, equity_stats, trade_stats
from mlsignals.backtest.simulate import net_return, simulate
from signals.costs import CostModel
from signals.paper import evaluate_signal
from signals.schema import Direction, Signal


def _market(o, h, lo, c) -> Market:
    t = pd.date_range("2025-06-01", periods=len(c), freq="1min", tz="UTC")
    return Market(["BTCUSDT"], t, *(np.asarray([x], dtype=np.float64) for x in (o, h, lo, c)))


def _one(pos, side, sl, tp, expiry) -> Decisions:
    a = lambda v, dt=np.float64: np.asarray([v], dtype=dt)  # noqa: E731
    return Decisions(a(pos, np.int64), a(0, np.int64), a(side, np.int64), a(100.0), a(sl), a(tp),
                     a(expiry, np.int64), a(0.6))


FLATC = [100.0] * 6


def test_long_take_profit_fills_next_open_with_costs() -> None:
    m = _market([100, 101, 101, 102, 102, 102], [100, 101, 103, 102, 102, 102], [100, 100.5, 101, 101, 101, 101],
                [100, 101, 102, 102, 102, 102])
    sim = simulate(_one(0, 1, 95.0, 102.5, 5), m, CostModel(fee_bps=4, slippage_bps=1))
    tr = sim.trades
    assert tr.outcome == ["TP"] and tr.entry_pos == [1] and tr.exit_pos == [2]
    p, x = 101 * 1.0001, 102.5 * 0.9999
    assert tr.ret[0] == pytest.approx(0.9996**2 * x / p - 1)
    assert sim.equity[0, -1] == pytest.approx(1 + tr.ret[0]) and sim.equity[0, 0] == 1.0
    assert sim.in_position[0].tolist() == [False, True, True, False, False, False]


def test_both_levels_in_one_candle_is_the_stop_and_agrees_with_paper() -> None:
    m = _market(FLATC, [100, 100, 106, 100, 100, 100], [100, 100, 94, 100, 100, 100], FLATC)
    sim = simulate(_one(0, 1, 95.0, 105.0, 5), m, CostModel(0, 0))
    assert sim.trades.outcome == ["SL"] and sim.trades.ret[0] == pytest.approx(95 / 100 - 1)
    sig = Signal(id="x", symbol="BTCUSDT", direction=Direction.LONG, confidence=0.6, strength=0.5, entry=100.0,
                 stop_loss=95.0, take_profit=105.0, horizon="5m", bar_time=m.times[0].to_pydatetime(),
                 created_at=m.times[1].to_pydatetime(), expires_at=(m.times[0] + pd.Timedelta(minutes=6)).to_pydatetime(),
                 model_version="v", feature_spec_hash="h", reasons=[])
    frame = pd.DataFrame({"open": m.open[0], "high": m.high[0], "low": m.low[0], "close": m.close[0]}, index=m.times)
    paper = evaluate_signal(sig, frame)
    assert paper.outcome == "SL" and paper.exit_price == 95.0
    assert pd.Timestamp(paper.exit_time) == m.times[2] + pd.Timedelta(minutes=1)


def test_short_expiry_and_gap_through_stop() -> None:
    m = _market([100, 100, 100, 100, 100, 100], [100, 100.5, 100.5, 100.5, 100.5, 100.5],
                [100, 99.5, 99.5, 99.5, 99.5, 99.5], [100, 100, 100, 99, 99, 99])
    sim = simulate(_one(0, -1, 105.0, 90.0, 3), m, CostModel(0, 0))
    assert sim.trades.outcome == ["EXPIRED"] and sim.trades.exit_pos == [3]
    assert sim.trades.ret[0] == pytest.approx(1 - 99 / 100)
    gap = _market([100, 100, 110, 110, 110, 110], [100, 100, 111, 110, 110, 110], [100, 100, 109, 110, 110, 110],
                  [100, 100, 110, 110, 110, 110])
    sim = simulate(_one(0, -1, 105.0, 90.0, 5), gap, CostModel(0, 0))
    assert sim.trades.outcome == ["SL"] and sim.trades.exit_fill == [110.0]  # opened beyond the stop: worse fill


def test_one_position_per_symbol_and_fees_both_sides() -> None:
    m = _market(FLATC, FLATC, FLATC, FLATC)
    d = Decisions.concat([_one(0, 1, 90.0, 110.0, 3), _one(1, 1, 90.0, 110.0, 3), _one(3, -1, 110.0, 90.0, 5)])
    sim = simulate(d, m, CostModel(fee_bps=10, slippage_bps=0))
    assert sim.trades.decision_pos == [0, 3]  # the decision at minute 1 is skipped (position open)
    assert sim.trades.ret[0] == pytest.approx(0.999**2 - 1)
    assert sim.trades.ret[1] == pytest.approx(0.999 * (2 - 1.001) - 1)
    assert net_return(1, 100.0, 100.0, 0.0) == 0.0


def test_always_flat_is_zero() -> None:
    m = _market(FLATC, FLATC, FLATC, [100, 101, 99, 100, 102, 98])
    sim = simulate(Decisions.empty(), m, CostModel())
    st = equity_stats(sim.portfolio, sim.in_position)
    assert len(sim.trades) == 0 and st["net_return"] == 0.0 and st["max_drawdown"] == 0.0 and st["exposure"] == 0


def test_trade_metrics_by_hand() -> None:
    s = trade_stats(np.array([0.02, -0.01, 0.03, -0.02]))
    assert s["trades"] == 4 and s["hit_rate"] == 0.5
    assert s["avg_win"] == pytest.approx(0.025) and s["avg_loss"] == pytest.approx(-0.015)
    assert s["profit_factor"] == pytest.approx(0.05 / 0.03)
    r = np.array([0.02, -0.01, 0.03, -0.02])
    assert s["t_stat"] == pytest.approx(r.mean() / (r.std(ddof=1) / 2))


def test_equity_metrics_by_hand() -> None:
    eq = np.array([1.0, 1.1, 0.99, 1.089])
    st = equity_stats(eq)
    r = np.diff(eq) / eq[:-1]
    assert st["net_return"] == pytest.approx(0.089)
    assert st["max_drawdown"] == pytest.approx(0.99 / 1.1 - 1)
    assert st["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(MINUTES_PER_YEAR))
    assert st["sortino"] == pytest.approx(r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(525600))


def test_summary_clusters_the_t_statistic_by_decision_day_and_the_verdict_reads_it() -> None:
    from mlsignals.backtest.metrics import day_clustered_t, summarize
    from mlsignals.backtest.report import verdict

    # two symbols moving together, one candle a day: each day's two trades are one draw
    t = pd.date_range("2025-06-01", periods=8, freq="1D", tz="UTC")
    c = np.array([100, 101, 100.5, 102, 101, 103.5, 102, 104.0])
    o = np.r_[c[0], c[:-1]]  # each candle opens at the previous close: a trade earns its candle's move
    hl = np.stack([np.maximum(o, c), 2 * np.maximum(o, c)]), np.stack([np.minimum(o, c), 2 * np.minimum(o, c)])
    m = Market(["BTCUSDT", "ETHUSDT"], t, np.stack([o, 2 * o]), *hl, np.stack([c, 2 * c]), step=pd.Timedelta(days=1))
    a = lambda v, dt=np.float64: np.asarray(v, dtype=dt)  # noqa: E731
    pos = [0, 2, 4, 0, 2, 4]
    d = Decisions(a(pos, np.int64), a([0, 0, 0, 1, 1, 1], np.int64), a([1] * 6, np.int64), a([np.nan] * 6),
                  a([np.nan] * 6), a([np.nan] * 6), a([p + 1 for p in pos], np.int64), a([0.6] * 6))
    sim = simulate(d, m, CostModel(0, 0))
    total = summarize(sim, m)["total"]
    ret, when = sim.trades.array("ret"), m.times_ns(sim.trades.array("decision_pos"))
    assert len(ret) == 6 and len(np.unique(when)) == 3
    assert total["t_days"] == pytest.approx(day_clustered_t(ret, when))
    assert total["t_days"] < total["t_stat"]  # six trades, three independent days
    summary = {"model": {"total": {**total, "t_stat": 5.0, "t_days": 1.0, "net_return": 0.05}},
               "always_flat": {"total": {"net_return": 0.0}}}
    assert "not significantly" in verdict(summary) and "t = 1.0" in verdict(summary)
