"""Choose a bundle's trading policy on validation candles with the backtest engine itself.

The model's outputs at every ``every``-th minute of the validation candles come from the live
path (full-history features sliced like ``replay``, ``InferenceEngine.predict``). Then, per
horizon and for a grid of margins (quantiles of |P(LONG) - P(SHORT)|), the real
``MLSignalProcessor`` with the ``validated`` strategy and a one-horizon policy turns them into
signals, ``simulate`` trades them with fees and slippage, and the margin with the best mean net
trade is kept - if it is positive with a t-statistic of at least ``min_t`` over at least
``MIN_VAL_TRADES`` trades; otherwise the horizon is disabled ("no validated edge"). Minutes in
the bundle's held-out test windows (plus the purge gap) are never used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from common.errors import MLSignalsError
from mlsignals.backtest.baselines import MIN_VAL_TRADES
from mlsignals.backtest.decisions import ONE_MIN, Decisions, Market, PrecomputedFeatures, decisions_from_signals
from mlsignals.backtest.runner import _features, prepare_frames
from mlsignals.backtest.simulate import simulate
from model.contract import N_HORIZONS, ModelOutput
from signals.config import SignalConfig
from signals.costs import CostModel
from signals.policy import HorizonPolicy, TradingPolicy
from signals.processor import MLSignalProcessor, horizon_label

log = logging.getLogger(__name__)
QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.98, 0.99)


@dataclass
class ValidationOutputs:
    """Model outputs on the validation minutes: one entry per (minute, symbol) with an output."""

    market: Market
    pos: np.ndarray  # [N] grid positions
    sym: list[str]  # [N]
    results: list  # FeatureResult per entry
    outputs: list[ModelOutput]
    margin: np.ndarray  # [N, 4] P(LONG) - P(SHORT)


def _usable_positions(market: Market, stage: PrecomputedFeatures, bundle_config: dict, every: int) -> np.ndarray:
    """Every ``every``-th minute from the bundle's validation start, outside its test windows."""
    data = bundle_config.get("train", {}).get("data", {})
    first = min(stage._first.values())
    pos = np.arange(first, len(market.times) - 1, max(1, every))
    t = market.times[pos]
    ok = np.ones(len(pos), dtype=bool)
    if data.get("val_start"):
        ok &= t >= pd.Timestamp(data["val_start"])
    gap = pd.Timedelta(minutes=int(data.get("purge_minutes", 0)) + int(data.get("embargo_minutes", 0)))
    for w in data.get("test_windows", []):
        ok &= (t < pd.Timestamp(w["start"]) - gap) | (t > pd.Timestamp(w["end"]) + gap)
    return pos[ok]


def validation_outputs(frames: dict[str, pd.DataFrame], model_dir: Path, every: int = 5,
                       progress: bool = True) -> tuple[ValidationOutputs, object]:
    from features.sources.base import FrameSource
    from mlsignals.factories import gap_policy, in_process_pipeline
    from mlsignals.settings import load_settings

    settings = load_settings(model={"path": str(model_dir), "compile": False, "device": "cpu"},
                             signals={"strategy": "validated"})
    frames = prepare_frames(frames, gap_policy(settings))
    live = in_process_pipeline(settings, FrameSource(frames), model_dir)
    engine = live.engine
    market = Market.from_frames(frames)
    stage = PrecomputedFeatures(market, _features(frames, market, engine.bar_minutes), engine.bar_minutes,
                                engine.context_length, live.features.required_minutes)
    bundle_config = json.loads((Path(model_dir) / "config.json").read_text())
    positions = _usable_positions(market, stage, bundle_config, every)
    if positions.size == 0:
        raise MLSignalsError("no validation minutes in these candles: they must lie after the bundle's "
                             "validation start and outside its test windows")
    pos, sym, results, outputs = [], [], [], []
    for k in tqdm(range(0, len(positions), 256), desc="validation outputs", disable=not progress):
        chunk = [(int(p), s, stage.result(s, int(p))) for p in positions[k : k + 256] for s in market.symbols]
        ready = [c for c in chunk if c[2].window is not None]
        if not ready:
            continue
        out, _ = engine.predict(np.stack([c[2].window for c in ready]), [str(i) for i in range(len(ready))])
        for i, (p, s, fr) in enumerate(ready):
            if str(i) in out:
                fr.window = fr.window[-1:].copy()  # the last row is all the processor reads (OOD gate)
                pos.append(p), sym.append(s), results.append(fr), outputs.append(out[str(i)])
    margin = np.array([o.direction_probs[:, 0] - o.direction_probs[:, 1] for o in outputs])
    return ValidationOutputs(market, np.asarray(pos), sym, results, outputs, margin), engine


def _decide(vo: ValidationOutputs, rows: np.ndarray, processor: MLSignalProcessor, engine) -> Decisions:
    signals = []
    for j in rows:
        fr = vo.results[j]
        signals.append(processor.process(
            fr.symbol, vo.outputs[j], entry=fr.entry, atr=fr.atr, bar_time=fr.bar_time.to_pydatetime(),
            model_version=engine.model_version, feature_spec_hash=engine.spec_hash,
            features_last_row=fr.window[-1], feature_stats=engine.feature_stats, now=(vo.market.times[vo.pos[j]] + ONE_MIN).to_pydatetime()))
    return decisions_from_signals(signals, vo.market)


def _trade_stats(ret: np.ndarray) -> tuple[float | None, float | None]:
    if ret.size < 2:
        return (float(ret.mean()) if ret.size else None), None
    sd = ret.std(ddof=1)
    return float(ret.mean()), (float(ret.mean() / sd * np.sqrt(ret.size)) if sd > 0 else None)


def _single(k: int, margin: float) -> tuple[HorizonPolicy, ...]:
    off = HorizonPolicy(enabled=False)
    return tuple(HorizonPolicy(enabled=True, min_margin=margin, val_mean_net=0.0, val_t=0.0) if i == k else off
                 for i in range(N_HORIZONS))


def _trades(vos: list[ValidationOutputs], proc: MLSignalProcessor, engine, costs: CostModel,
            k: int | None = None, thr: float = 0.0) -> np.ndarray:
    """Net returns of the processor's trades over every validation market (rows below ``thr``
    at horizon ``k`` are NEUTRAL by construction and skipped)."""
    out = []
    for vo in vos:
        rows = np.arange(len(vo.pos)) if k is None else np.flatnonzero(np.abs(vo.margin[:, k]) >= thr)
        out.append(simulate(_decide(vo, rows, proc, engine), vo.market, costs).trades.array("ret"))
    return np.concatenate(out) if out else np.zeros(0)


def fit_policy(vos: list[ValidationOutputs], engine, costs: CostModel, min_t: float = 1.5,
               config: SignalConfig | None = None) -> tuple[TradingPolicy, list[dict]]:
    """Per horizon the best validated margin (or disabled) over the validation markets ``vos``;
    returns the policy and every candidate."""
    config = config or SignalConfig.preset("validated")
    spec = engine.target_spec
    chosen, candidates = [], []
    for k in range(N_HORIZONS):
        a = np.abs(np.concatenate([vo.margin[:, k] for vo in vos]))
        best = None
        for q in QUANTILES:
            thr = float(np.quantile(a, q))
            pol = TradingPolicy(horizons=_single(k, thr), fee_bps=costs.fee_bps, slippage_bps=costs.slippage_bps)
            ret = _trades(vos, MLSignalProcessor(config, spec, pol), engine, costs, k, thr)
            mean, t = _trade_stats(ret)
            cand = {"horizon": horizon_label(spec.horizon_minutes(k)), "quantile": q, "min_margin": thr,
                    "trades": int(ret.size), "mean_net": mean, "t": t}
            candidates.append(cand)
            if ret.size >= MIN_VAL_TRADES and mean is not None and (best is None or mean > best["mean_net"]):
                best = cand
        if best and best["mean_net"] > 0 and best["t"] is not None and best["t"] >= min_t:
            chosen.append(HorizonPolicy(enabled=True, min_margin=best["min_margin"], val_trades=best["trades"],
                                        val_mean_net=best["mean_net"], val_t=best["t"],
                                        why=f"best of {len(QUANTILES)} margins, t >= {min_t}"))
        else:
            why = (f"fewer than {MIN_VAL_TRADES} validation trades at every margin" if best is None else
                   f"best margin {best['min_margin']:.4f}: mean net {best['mean_net']:+.5f}, t "
                   f"{best['t'] if best['t'] is not None else float('nan'):.2f} (needs > 0 and t >= {min_t})")
            chosen.append(HorizonPolicy(enabled=False, val_trades=best["trades"] if best else 0,
                                        val_mean_net=best["mean_net"] if best else None,
                                        val_t=best["t"] if best else None, why="no validated edge: " + why))
    markets = [{"start": vo.market.times[vo.pos].min().isoformat(), "end": vo.market.times[vo.pos].max().isoformat(),
                "symbols": sorted(set(vo.sym)), "decisions": int(len(vo.pos))} for vo in vos]
    policy = TradingPolicy(horizons=tuple(chosen), fee_bps=costs.fee_bps, slippage_bps=costs.slippage_bps,
                           validation={"markets": markets, "min_t": min_t, "quantiles": list(QUANTILES)})
    return policy, candidates


def evaluate_policy(vos: list[ValidationOutputs], engine, policy: TradingPolicy, costs: CostModel) -> dict:
    """The combined policy's trades on the same validation minutes (in-sample for the choice)."""
    proc = MLSignalProcessor(SignalConfig.preset("validated"), engine.target_spec, policy)
    ret = _trades(vos, proc, engine, costs)
    mean, t = _trade_stats(ret)
    return {"trades": int(ret.size), "mean_net": mean, "t": t}
