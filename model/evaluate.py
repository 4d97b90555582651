"""Evaluation of a bundle on any candles, next to the baselines on the same rows.

``compare`` scores the model and every baseline per horizon (see ``model.metrics``);
``evaluate_candles`` runs the whole path for ``mlsignals evaluate``: verified bundle -> features
of every anchor -> targets with the bundle's TargetSpec -> one forecast per row -> scores and
a report (``model.report``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.errors import MLSignalsError
from model.baselines import BaselineInputs, Baselines
from model.bundle import Bundle, load_bundle
from model.contract import RawOutputs, TargetSpec
from model.dataset import AnchorPool
from model.metrics import Forecast, log_loss_difference, score_all
from model.patchtst import UnifiedPatchTST
from model.scaler import FeatureScaler
from model.series import build_series
from model.stacking import OutputStack
from model.targets import LabelledTargets
from model.train import predict_raw

log = logging.getLogger(__name__)


def forecast_from_raw(raw: np.ndarray) -> Forecast:
    """raw [N, 28] -> Forecast (the contract's reader; returns as the IC score)."""
    r = RawOutputs.read(raw)
    return Forecast(r.direction_probs, returns=r.returns, long_hit=r.long_hit, short_hit=r.short_hit, risk=r.risk)


def model_raw(model: UnifiedPatchTST, pool: AnchorPool, rows: np.ndarray, stack: OutputStack | None,
              device: str = "cpu") -> np.ndarray:
    """Raw contract rows of pool rows as ``InferenceEngine`` serves them: network, then stack."""
    raw = predict_raw(model, pool, rows, torch.device(device))
    return raw if stack is None else stack.apply_on_pool(raw, pool, rows)


def baseline_inputs(pool: AnchorPool, rows: np.ndarray, scaler: FeatureScaler) -> BaselineInputs:
    feat = pool.unscaled[rows].astype(np.float64)
    scaled = np.nan_to_num(scaler.transform(feat).astype(np.float64))
    return BaselineInputs(feat, scaled, pool.last_return(rows), pool.vol_inputs(rows))


def compare(
    model_fc: Forecast, baseline_fc: dict[str, Forecast], t: LabelledTargets, horizons: tuple[int, ...]
) -> dict[str, dict[str, dict]]:
    """{"h1": {"model": scores, "majority": scores, ...}, ...} on the same rows."""
    per = {"model": score_all(model_fc, t, horizons)}
    for name, fc in baseline_fc.items():
        per[name] = score_all(fc, t, horizons)
    return {f"h{h}": {name: per[name][f"h{h}"] for name in per} for h in horizons}


@dataclass
class EvalResult:
    scores: dict
    n_rows: int
    symbols: list[str]
    period: dict
    class_shares: dict
    model_fc: Forecast
    targets: LabelledTargets
    # per horizon: model minus volatility-only direction log-loss, 95 % day-block bootstrap interval
    vs_volatility: dict | None = None


def evaluate_pool(
    model: UnifiedPatchTST,
    scaler: FeatureScaler,
    spec: TargetSpec,
    baselines: Baselines,
    pool: AnchorPool,
    rows: np.ndarray,
    device: str = "cpu",
    stack: OutputStack | None = None,
) -> EvalResult:
    """Model (with the bundle's ``stack``, as served) and baselines on ``rows`` of a scaled pool."""
    model.to(torch.device(device))
    raw = model_raw(model, pool, rows, stack, device)
    model.cpu()
    return result_from_raw(raw, scaler, spec, baselines, pool, rows)


def result_from_raw(raw: np.ndarray, scaler: FeatureScaler, spec: TargetSpec, baselines: Baselines,
                    pool: AnchorPool, rows: np.ndarray) -> EvalResult:
    """Scores of the model's raw outputs on ``rows`` (computed here or on a cluster) next to
    the baselines on the same rows."""
    t = pool.labels(rows, spec)
    fc = forecast_from_raw(raw)
    bfc = baselines.forecasts(baseline_inputs(pool, rows, scaler))
    times = pool.times[rows]
    vs_vol = log_loss_difference(fc, bfc["volatility"], t, times.floor("D").asi8, spec.horizons)
    shares = {
        f"h{h}": (np.bincount(t.direction[:, i], minlength=3) / max(len(t), 1)).round(4).tolist()
        for i, h in enumerate(spec.horizons)
    }
    return EvalResult(
        compare(fc, bfc, t, spec.horizons),
        int(len(rows)),
        sorted(set(pool.symbols)),
        {"start": times.min().isoformat(), "end": times.max().isoformat()},
        shares,
        fc,
        t,
        vs_vol,
    )


def load_eval_frames(paths: list[Path]) -> dict[str, pd.DataFrame]:
    """Candle files -> validated frames cut to their common minutes; BTC required for others."""
    from features.candle_files import common_minutes, load_candle_files, require_btc

    frames = load_candle_files(paths)
    require_btc(frames)
    return common_minutes(frames)


def scored_rows(series: list, bundle: Bundle, stride: int) -> tuple[AnchorPool, np.ndarray]:
    """The scaled pool of ``series`` and every ``stride``-th complete row of it (local and Ray
    evaluation alike); no complete row is a clear error."""
    pool = AnchorPool.build(series, bundle.context_length, bundle.bar_minutes)
    pool.apply_scaler(bundle.scaler)
    if pool.valid.size == 0:
        raise MLSignalsError(
            f"no complete rows to evaluate: need at least warm-up + {bundle.context_length} bars of "
            f"{bundle.bar_minutes} min plus the longest horizon"
        )
    return pool, pool.valid[:: max(1, stride)]


def evaluate_candles(
    model_dir: Path, candle_files: list[Path], stride: int = 7, device: str = "cpu", spec_hash: str | None = None
) -> tuple[EvalResult, Bundle]:
    """Score a bundle on candle files. ``stride``: every stride-th valid anchor (7 is coprime
    with 15, so every bar alignment is represented)."""
    bundle = load_bundle(model_dir, spec_hash=spec_hash)
    baselines = Baselines.load(bundle.path)
    frames = load_eval_frames(candle_files)
    series = build_series(frames, "eval", bundle.bar_minutes, bundle.target_spec.horizons)
    pool, rows = scored_rows(series, bundle, stride)
    return evaluate_pool(bundle.model, bundle.scaler, bundle.target_spec, baselines, pool, rows, device,
                         bundle.stack), bundle
