"""``run_backtest``: candles + bundle -> decisions, trades, metrics of the model and baselines,
and the look-ahead check (the report is written by ``mlsignals.backtest.report``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import MLSignalsError
from features.calculator import find_btc
from features.candle_files import common_minutes, load_candle_files, require_btc
from features.candles import GapPolicy, fill_gaps
from mlsignals.backtest import baselines as bl
from mlsignals.backtest.decisions import ONE_MIN, Decisions, Market, PrecomputedFeatures, replay
from mlsignals.backtest.lookahead import LookaheadReport, check_decisions, sample_positions
from mlsignals.backtest.metrics import calibration, summarize
from mlsignals.backtest.simulate import SimResult, simulate
from signals.costs import CostModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BacktestConfig:
    """start/end: first/last decision minute (UTC, inclusive; None = as early / late as the data
    allow); every: decide every N-th minute; lookahead_samples: minutes rerun on truncated candles."""

    model_dir: Path
    strategy: str = "validated"
    costs: CostModel = CostModel()
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    every: int = 1
    max_minutes: int | None = None  # decide at most this many minutes (benchmarks, smoke runs)
    chunk_minutes: int = 64
    lookahead_samples: int = 12
    baselines: bool = True
    progress: bool = True
    torch_threads: int = 1  # one thread is fastest on a shared 2-core machine (measured)
    signal_overrides: tuple[tuple[str, object], ...] = ()  # SignalConfig keys over the preset (tests)
    # 1-minute candles of the bundle's validation period, where the learned baselines choose their
    # thresholds (default: the bundle's training folders, when they are in the project)
    validation_files: tuple[Path, ...] = ()


@dataclass
class BacktestResult:
    market: Market
    decisions: Decisions
    sims: dict[str, SimResult]
    summary: dict
    lookahead: LookaheadReport
    meta: dict = field(default_factory=dict)


def prepare_frames(frames: dict[str, pd.DataFrame], policy: GapPolicy, common: bool = True) -> dict[str, pd.DataFrame]:
    """Cut to the common minutes (unless ``common`` is False: each symbol keeps its own stretch) and
    fill short gaps once (what the live stage does per window), counted in the candles' timeframe."""
    from features.calculator import infer_bar_minutes

    require_btc(frames)
    frames = common_minutes(frames) if common else frames
    return {s: fill_gaps(f, policy, infer_bar_minutes(f.index))[0] for s, f in frames.items()}


def _features(frames: dict[str, pd.DataFrame], market: Market, bar_minutes: int) -> dict[str, np.ndarray]:
    """Full-history features on the market grid, per symbol (cached by model.series)."""
    from model.series import anchor_feature_matrix

    btc = frames[find_btc(list(frames))]
    return {s: on_grid(anchor_feature_matrix(frames[s], btc, s, bar_minutes), frames[s], market)
            for s in market.symbols}


def on_grid(x: np.ndarray, candles: pd.DataFrame, market: Market) -> np.ndarray:
    """A symbol's anchor feature rows (from its first candle on) placed on the market grid."""
    off = market.pos(candles.index[0])
    full = np.full((len(market.times), x.shape[1]), np.nan, dtype=np.float32)
    full[off : off + len(x)] = x
    return full


def decision_positions(market: Market, stage: PrecomputedFeatures, cfg: BacktestConfig) -> np.ndarray:
    first = min(stage._first.values())
    lo = first if cfg.start is None else max(first, market.pos(max(cfg.start, market.times[0])))
    last = len(market.times) - 2  # the last candle cannot be traded after
    hi = last if cfg.end is None else min(last, market.pos(min(cfg.end, market.times[-1])))
    if hi < lo:
        raise MLSignalsError(
            f"no minute to decide: the model needs {stage.required_minutes} minutes of history, first possible "
            f"decision {market.times[min(first, len(market.times) - 1)].isoformat()}, data ends "
            f"{market.times[-1].isoformat()}")
    pos = np.arange(lo, hi + 1, max(1, cfg.every))
    return pos if cfg.max_minutes is None else pos[: cfg.max_minutes]


def run_backtest(frames: dict[str, pd.DataFrame], cfg: BacktestConfig, executor=None) -> BacktestResult:
    """``executor``: where the expensive part runs - per-symbol features and the replay (model +
    signal per minute). None: here, in this process. ``mlsignals.distributed.RayBacktest``: as Ray
    tasks (symbols, then time chunks with their warm-up), merged into the same arrays; the
    simulation, baselines and look-ahead check always run here on the merged decisions."""
    import torch

    from features.sources.base import FrameSource
    from mlsignals.factories import gap_policy, in_process_pipeline
    from mlsignals.settings import load_settings

    torch.set_num_threads(max(1, cfg.torch_threads))
    t0 = time.perf_counter()
    settings = load_settings(model={"path": str(cfg.model_dir), "compile": False, "device": "cpu"},
                             signals={"strategy": cfg.strategy, **dict(cfg.signal_overrides)})
    policy = gap_policy(settings)
    frames = prepare_frames(frames, policy)
    live = in_process_pipeline(settings, FrameSource(frames), cfg.model_dir)
    engine, sink = live.engine, live.sink
    market = Market.from_frames(frames)
    if market.step != ONE_MIN:
        # per-minute Sharpe, the look-ahead check and the baselines' exits are defined on minutes
        raise MLSignalsError(f"backtest needs 1-minute candles, got {market.step_minutes}-minute ones "
                             "(15-minute spans serve `mlsignals policy` and `evaluate`)")
    bm, ctx = engine.bar_minutes, engine.context_length
    feats = _features(frames, market, bm) if executor is None else executor.features(frames, market, bm)
    t_feat = time.perf_counter()
    stage = PrecomputedFeatures(market, feats, bm, ctx, live.features.required_minutes)
    positions = decision_positions(market, stage, cfg)
    if executor is None:
        decisions, _ = replay(stage, engine, sink, positions, cfg.chunk_minutes, cfg.progress)
    else:
        decisions = executor.replay(stage, engine, sink, positions, cfg)
    t_replay = time.perf_counter()

    sims = {"model": simulate(decisions, market, cfg.costs)}
    meta_baselines = {}
    if cfg.baselines:
        sims.update(_baselines(cfg, market, feats, positions, sink.config, engine, meta_baselines))
    look = check_decisions(frames, market, decisions, live.features, engine, sink,
                           sample_positions(decisions, cfg.lookahead_samples))
    summary = {name: summarize(sim, market) for name, sim in sims.items()}
    tr = sims["model"].trades
    meta = {
        "model_version": engine.model_version, "strategy": cfg.strategy,
        "fee_bps": cfg.costs.fee_bps, "slippage_bps": cfg.costs.slippage_bps,
        "symbols": market.symbols, "every": cfg.every,
        "first_decision": market.times[positions[0]].isoformat(),
        "last_decision": market.times[positions[-1]].isoformat(),
        "minutes_decided": int(len(positions)), "decisions": int(len(decisions)),
        "signals": int((decisions.side != 0).sum()),
        "calibration": calibration(tr.array("confidence"), tr.array("ret") > 0),
        "baselines": meta_baselines,
        "lookahead": {"checked": look.checked, "identical": look.identical_direction,
                      "max_conf_diff": look.max_conf_diff, "max_level_rel_diff": look.max_level_rel_diff,
                      "mismatches": look.mismatches[:10], "line": look.line()},
        "timing_s": {"features": t_feat - t0, "replay": t_replay - t_feat,
                     "total": time.perf_counter() - t0},
    }
    if executor is not None:
        meta["distributed"] = executor.report()
    return BacktestResult(market, decisions, sims, summary, look, meta)


def _baselines(cfg, market, feats, positions, config, engine, meta: dict) -> dict[str, SimResult]:
    spec = engine.target_spec
    atr = bl.atr_fraction(feats, market)
    out = {
        "buy_and_hold": simulate(bl.buy_and_hold(market, int(positions[0])), market, cfg.costs),
        "always_flat": simulate(Decisions.empty(), market, cfg.costs),
        "momentum": simulate(bl.momentum(market, positions, atr, config, spec), market, cfg.costs),
    }
    meta["momentum"] = {"rule": f"sign of the last {spec.horizon_minutes(1)} min return beyond "
                                f"{spec.flat_bands[1]:.4f}", "every": cfg.every}
    bundle_dir = Path(cfg.model_dir)
    if not (bundle_dir / "baselines.json").exists():
        meta["learned"] = "bundle has no baselines.json: logistic/LightGBM baselines skipped"
        return out
    from model.baselines import Baselines

    learned = Baselines.load(bundle_dir)
    val = _validation_market(bundle_dir, engine, cfg.validation_files)
    if val is None:
        meta["learned"] = "bundle names no validation period: logistic/LightGBM baselines skipped"
        return out
    vmarket, vfeats, vpos = val
    vatr = bl.atr_fraction(vfeats, vmarket)
    test_scores = bl.learned_scores(learned, market, feats, engine.bundle.scaler, positions, spec.bar_minutes)
    val_scores = {s.name: s for s in bl.learned_scores(learned, vmarket, vfeats, engine.bundle.scaler, vpos,
                                                      spec.bar_minutes)}
    for sb in test_scores:
        choice = bl.choose_threshold(val_scores[sb.name], vpos, vmarket, vatr, config, spec, cfg.costs)
        meta[sb.name] = {**choice, "validation": f"{vmarket.times[vpos[0]].isoformat()} .. "
                                                 f"{vmarket.times[vpos[-1]].isoformat()}"}
        d = bl.score_decisions(sb, choice["horizon_index"], choice["threshold"], positions, market, atr, config, spec)
        out[sb.name] = simulate(d, market, cfg.costs)
    return out


def _validation_market(bundle_dir: Path, engine, files: tuple[Path, ...] = ()):
    """The bundle's validation period (train info: val_start, outside its test windows) as a
    Market, features and decision positions (every 5th minute: threshold choice needs counts,
    not every minute), from ``files`` or else the bundle's training folders found in the project."""
    from mlsignals.backtest.policy import _usable_positions
    from mlsignals.settings import project_path

    config = json.loads((bundle_dir / "config.json").read_text())
    info = config.get("train", {}).get("data", {})
    if "val_start" not in info:
        return None
    val_start = pd.Timestamp(info["val_start"])
    groups = [list(files)] if files else [
        sorted(project_path(d).glob("*_1m.csv*")) for d in info.get("dirs", []) if project_path(d).is_dir()]
    for group in groups:
        if not group:
            continue
        frames = load_candle_files(group)
        if min(f.index[-1] for f in frames.values()) <= val_start:
            continue
        frames = prepare_frames(frames, GapPolicy())
        market = Market.from_frames(frames)
        feats = _features(frames, market, engine.bar_minutes)
        stage = PrecomputedFeatures(market, feats, engine.bar_minutes, engine.context_length,
                                    engine.context_length * engine.bar_minutes)
        pos = _usable_positions(market, stage, config, 5)
        if pos.size:
            return market, feats, pos
    return None
