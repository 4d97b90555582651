"""Baseline strategies on the same candles, trade simulator and cost model as the model.

- always_flat: no trades (equity stays 1).
- buy_and_hold: one long per symbol from the first decided minute to the end.
- momentum: LONG/SHORT by the sign of the last ``horizon`` bars' return when it clears the
  model's FLAT band for that horizon.
- logistic / lightgbm: the evaluation's baselines stored in the bundle (``model.baselines``,
  fitted on the training split); a decision when P(LONG) - P(SHORT) clears a threshold. The
  horizon and threshold are chosen on the bundle's validation period (never the test period) by
  the best mean net trade return with at least ``MIN_VAL_TRADES`` trades.

Rule baselines have no model levels: SL/TP are the processor's ATR rule (``sl_atr_mult`` /
``tp_atr_mult`` times the bar ATR scaled by sqrt(horizon bars), clamped to [sl_min, sl_max] /
[tp_min, tp_max]) and expiry is the horizon, as for a signal of that horizon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.spec import FEATURE_NAMES
from mlsignals.backtest.decisions import Decisions, Market
from mlsignals.backtest.simulate import simulate
from mlsignals.pipeline import ATR_FEATURE
from model.contract import TargetSpec
from signals.config import SignalConfig
from signals.costs import CostModel

log = logging.getLogger(__name__)
MIN_VAL_TRADES = 30
_ATR = FEATURE_NAMES.index(ATR_FEATURE)


def atr_fraction(features: dict[str, np.ndarray], market: Market) -> np.ndarray:
    """[S, T] bar ATR as a fraction of close (from the NATR feature), NaN where unknown."""
    return np.stack([features[s][:, _ATR].astype(np.float64) / 100.0 for s in market.symbols])


def rule_decisions(side: np.ndarray, positions: np.ndarray, market: Market, atr_frac: np.ndarray,
                   config: SignalConfig, horizon_bars: int, bar_minutes: int,
                   confidence: np.ndarray | None = None) -> Decisions:
    """side [S, T] in {-1, 0, 1} evaluated at ``positions`` -> Decisions with ATR-rule levels."""
    S = len(market.symbols)
    pos = np.tile(positions, S)
    sym = np.repeat(np.arange(S), len(positions))
    sd = side[sym, pos].astype(np.int64)
    entry = market.close[sym, pos]
    a = np.nan_to_num(atr_frac[sym, pos], nan=0.0) * np.sqrt(horizon_bars)
    sl_f = np.clip(config.sl_atr_mult * a, config.sl_min, config.sl_max)
    tp_f = np.clip(config.tp_atr_mult * a, config.tp_min, config.tp_max)
    ok = (sd != 0) & np.isfinite(entry)
    sd = np.where(ok, sd, 0)
    conf = np.full(len(pos), np.nan) if confidence is None else confidence[sym, pos]
    return Decisions(pos, sym, sd, entry, entry * (1 - sd * sl_f), entry * (1 + sd * tp_f),
                     pos + horizon_bars * bar_minutes, conf).select(sd != 0)


def buy_and_hold(market: Market, first_pos: int) -> Decisions:
    S = len(market.symbols)
    n = np.full(S, np.nan)
    return Decisions(np.full(S, first_pos), np.arange(S), np.ones(S, dtype=np.int64), market.close[:, first_pos],
                     n, n, np.full(S, len(market.times) - 1), np.full(S, np.nan))


def momentum(market: Market, positions: np.ndarray, atr_frac: np.ndarray, config: SignalConfig,
             spec: TargetSpec, horizon_index: int = 1) -> Decisions:
    h = spec.horizons[horizon_index]
    lag = h * spec.bar_minutes
    c = market.close
    past = np.full_like(c, np.nan)
    past[:, lag:] = c[:, :-lag]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = c / past - 1
    band = spec.flat_bands[horizon_index]
    side = np.where(r > band, 1, np.where(r < -band, -1, 0))
    return rule_decisions(side, positions, market, atr_frac, config, h, spec.bar_minutes)


@dataclass
class ScoredBaseline:
    """P(LONG) - P(SHORT) per horizon of one learned baseline: score [S, T, 4] (NaN = no input)."""

    name: str
    score: np.ndarray


def learned_scores(baselines, market: Market, features: dict[str, np.ndarray], scaler,
                   positions: np.ndarray, bar_minutes: int) -> list[ScoredBaseline]:
    """Forecasts of the bundle's logistic and LightGBM baselines at ``positions``."""
    from model.baselines import BaselineInputs
    from model.series import VOL_COLUMNS, volatility_columns

    S, T = len(market.symbols), len(market.times)
    out = {n: np.full((S, T, 4), np.nan) for n in ("logistic", "lightgbm")}
    for i, s in enumerate(market.symbols):
        grid = pd.DataFrame({k: getattr(market, k)[i] for k in ("open", "high", "low", "close")}, index=market.times)
        vol = volatility_columns(grid, bar_minutes)
        feat = features[s][positions].astype(np.float64)
        v = vol.iloc[positions]
        ok = np.isfinite(feat).all(axis=1) & np.isfinite(v.to_numpy()).all(axis=1)
        rows = positions[ok]
        if rows.size == 0:
            continue
        inp = BaselineInputs(feat[ok], np.nan_to_num(scaler.transform(feat[ok]).astype(np.float64)),
                             v["last_ret"].to_numpy()[ok], v[list(VOL_COLUMNS)].to_numpy()[ok])
        fc = baselines.forecasts(inp)
        for name in out:
            p = fc[name].direction
            out[name][i, rows] = p[:, :, 0] - p[:, :, 1]  # LONG - SHORT (contract order)
    return [ScoredBaseline(n, sc) for n, sc in out.items()]


def score_decisions(sb: ScoredBaseline, horizon_index: int, threshold: float, positions: np.ndarray,
                    market: Market, atr_frac: np.ndarray, config: SignalConfig, spec: TargetSpec) -> Decisions:
    sc = sb.score[:, :, horizon_index]
    with np.errstate(invalid="ignore"):
        side = np.where(sc > threshold, 1, np.where(sc < -threshold, -1, 0))
    conf = np.abs(np.nan_to_num(sc))
    return rule_decisions(side, positions, market, atr_frac, config, spec.horizons[horizon_index],
                          spec.bar_minutes, confidence=conf)


def choose_threshold(sb: ScoredBaseline, positions: np.ndarray, market: Market, atr_frac: np.ndarray,
                     config: SignalConfig, spec: TargetSpec, costs: CostModel) -> dict:
    """(horizon, threshold) with the best mean net trade return on validation candles; a grid of
    |score| quantiles per horizon. Returns {horizon_index, threshold, val_trades, val_mean_trade}."""
    best = None
    for k in range(4):
        a = np.abs(sb.score[:, positions, k])
        a = a[np.isfinite(a)]
        if a.size == 0:
            continue
        for q in (0.5, 0.75, 0.9, 0.95, 0.98, 0.99):
            thr = float(np.quantile(a, q))
            sim = simulate(score_decisions(sb, k, thr, positions, market, atr_frac, config, spec), market, costs)
            r = sim.trades.array("ret")
            if r.size < MIN_VAL_TRADES:
                continue
            cand = {"horizon_index": k, "threshold": thr, "quantile": q, "val_trades": int(r.size),
                    "val_mean_trade": float(r.mean())}
            if best is None or cand["val_mean_trade"] > best["val_mean_trade"]:
                best = cand
    return best or {"horizon_index": 1, "threshold": float("inf"), "quantile": None, "val_trades": 0,
                    "val_mean_trade": None}
