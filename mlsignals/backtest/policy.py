"""Choose a bundle's trading policy on validation candles with the backtest engine itself.

The model's outputs at every ``every``-th candle of the validation candles (1-minute candles, or
15-minute spans whose bars are the model's own) come from the live path (full-history features
sliced like ``replay``, ``InferenceEngine.predict``). Then, per horizon and for a grid of margins
(quantiles of |P(LONG) - P(SHORT)|), the real ``MLSignalProcessor`` with the ``validated``
strategy and a one-horizon policy turns them into signals and ``simulate`` trades them with fees
and slippage (on 15-minute candles a bar touching both stop and target counts as the stop).

The bundle keeps the margin with the best (day-clustered) t over the whole validation period, but
a horizon is enabled only if choosing that way *walk-forward* (``walk_forward``: each calendar
block traded with the margin that was best on the blocks before it) made money out of sample:
at least ``MIN_VAL_TRADES`` trades, mean net > 0 and a day-clustered t of at least ``min_t``
(default: one-sided 5 % after a Bonferroni correction over the four horizons). Otherwise the
horizon publishes NEUTRAL with "no validated edge". The figures stored with a horizon are the
walk-forward ones - the honest estimate of what its trades earn. Minutes in the bundle's
held-out test windows (plus the purge gap) are never used.
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
from mlsignals.backtest.decisions import Decisions, Market, PrecomputedFeatures, decisions_from_signals
from mlsignals.backtest.runner import _features, prepare_frames
from mlsignals.backtest.simulate import simulate
from mlsignals.backtest.walk_forward import (
    MIN_T,
    N_BLOCKS,
    CandidateTrades,
    best_candidate,
    block_edges,
    trade_summary,
    walk_forward,
)
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
    """Every ``every``-th grid candle from the bundle's validation start, outside its test windows."""
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
    # symbols keep their own stretch (a 15-minute span where some coins' files end earlier)
    frames = prepare_frames(frames, gap_policy(settings), common=False)
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
            features_last_row=fr.window[-1], feature_stats=engine.feature_stats, now=vo.market.decided_at(vo.pos[j]).to_pydatetime()))
    return decisions_from_signals(signals, vo.market)


def _single(k: int, margin: float) -> tuple[HorizonPolicy, ...]:
    off = HorizonPolicy(enabled=False)
    return tuple(HorizonPolicy(enabled=True, min_margin=margin, val_mean_net=0.0, val_t=0.0) if i == k else off
                 for i in range(N_HORIZONS))


def _trades(vos: list[ValidationOutputs], proc: MLSignalProcessor, engine, costs: CostModel,
            k: int | None = None, thr: float = 0.0) -> CandidateTrades:
    """Net returns and decision times of the processor's trades over every validation market (rows
    below ``thr`` at horizon ``k`` are NEUTRAL by construction and skipped)."""
    rets, times = [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    for vo in vos:
        rows = np.arange(len(vo.pos)) if k is None else np.flatnonzero(np.abs(vo.margin[:, k]) >= thr)
        trades = simulate(_decide(vo, rows, proc, engine), vo.market, costs).trades
        rets.append(trades.array("ret"))
        times.append(vo.market.times_ns(trades.array("decision_pos")))
    return CandidateTrades(np.concatenate(rets), np.concatenate(times))


def fit_policy(vos: list[ValidationOutputs], engine, costs: CostModel, min_t: float = MIN_T,
               config: SignalConfig | None = None, n_blocks: int = N_BLOCKS) -> tuple[TradingPolicy, list[dict]]:
    """Per horizon: the margin with the best t over all validation markets ``vos``,
    enabled only if the walk-forward over ``n_blocks`` calendar blocks (``walk_forward``) made
    money out of sample with a day-clustered t of at least ``min_t``. Returns the policy and every
    candidate with its per-block figures."""
    config = config or SignalConfig.preset("validated")
    spec = engine.target_spec
    times = np.concatenate([vo.market.times_ns(vo.pos) for vo in vos])
    edges = block_edges(times, n_blocks)
    chosen, candidates, walks = [], [], []
    for k in range(N_HORIZONS):
        label = horizon_label(spec.horizon_minutes(k))
        a = np.abs(np.concatenate([vo.margin[:, k] for vo in vos]))
        thresholds = [float(np.quantile(a, q)) for q in QUANTILES]
        cands = []
        for q, thr in zip(QUANTILES, thresholds, strict=True):
            pol = TradingPolicy(horizons=_single(k, thr), fee_bps=costs.fee_bps, slippage_bps=costs.slippage_bps)
            trades = _trades(vos, MLSignalProcessor(config, spec, pol), engine, costs, k, thr)
            cands.append(trades)
            blocks = [trade_summary(trades.where((trades.time >= lo) & (trades.time < hi)))
                      for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
            candidates.append({"horizon": label, "quantile": q, "min_margin": thr, **trade_summary(trades),
                               "blocks": [{"trades": b["trades"], "mean_net": b["mean_net"]} for b in blocks]})
        purge = spec.horizon_minutes(k) * 60 * 10**9  # a trade's outcome is known once its horizon passed
        walk = walk_forward(cands, edges, MIN_VAL_TRADES, purge)
        oos = walk.summary
        final = best_candidate(cands, MIN_VAL_TRADES)
        walks.append({"horizon": label, **oos, "picks": [None if i is None else QUANTILES[i] for i in walk.picks]})
        passed = (final is not None and cands[final].ret.mean() > 0 and oos["trades"] >= MIN_VAL_TRADES
                  and oos["mean_net"] > 0 and oos["t"] is not None and oos["t"] >= min_t)
        figures = dict(val_trades=oos["trades"], val_mean_net=oos["mean_net"], val_t=oos["t"])
        if passed:
            chosen.append(HorizonPolicy(enabled=True, min_margin=thresholds[final], **figures,
                                        why=f"walk-forward over {n_blocks} blocks: out-of-sample t >= {min_t}"))
            continue
        if final is None:
            why = f"fewer than {MIN_VAL_TRADES} validation trades at every margin"
        else:
            t = oos["t"] if oos["t"] is not None else float("nan")
            mean = oos["mean_net"] if oos["mean_net"] is not None else float("nan")
            why = (f"walk-forward out of sample: {oos['trades']} trades, mean net {mean:+.5f}, t {t:.2f} "
                   f"(needs >= {MIN_VAL_TRADES}, > 0 and t >= {min_t}); best margin in sample "
                   f"{thresholds[final]:.4f}: mean net {cands[final].ret.mean():+.5f}")
        chosen.append(HorizonPolicy(enabled=False, **figures, why="no validated edge: " + why))
    markets = [{"start": vo.market.times[vo.pos].min().isoformat(), "end": vo.market.times[vo.pos].max().isoformat(),
                "symbols": sorted(set(vo.sym)), "decisions": int(len(vo.pos)),
                "candle_minutes": vo.market.step_minutes} for vo in vos]
    blocks = [pd.Timestamp(int(e), tz="UTC").isoformat() for e in edges]
    policy = TradingPolicy(horizons=tuple(chosen), fee_bps=costs.fee_bps, slippage_bps=costs.slippage_bps,
                           validation={"markets": markets, "min_t": min_t, "quantiles": list(QUANTILES),
                                       "protocol": "walk-forward", "block_edges": blocks, "walk_forward": walks})
    return policy, candidates


def evaluate_policy(vos: list[ValidationOutputs], engine, policy: TradingPolicy, costs: CostModel) -> dict:
    """The combined policy's trades on the same validation minutes (in sample for the margins)."""
    proc = MLSignalProcessor(SignalConfig.preset("validated"), engine.target_spec, policy)
    return trade_summary(_trades(vos, proc, engine, costs))
