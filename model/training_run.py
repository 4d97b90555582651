"""One complete training run: candles -> features -> split -> scaler -> model -> baselines -> bundle.

Used by ``mlsignals train``; every random choice derives from ``TrainConfig.seed``.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from common.errors import MLSignalsError
from model.baselines import Baselines
from model.bundle import save_bundle
from model.config import ModelConfig, TrainConfig
from model.dataset import AnchorPool, walk_forward_split
from model.evaluate import baseline_inputs, evaluate_pool
from model.scaler import FeatureScaler, FeatureStats
from model.series import Series, build_series
from model.targets import derive_target_spec
from model.train import FitResult, fit_model

log = logging.getLogger(__name__)
SCALER_ROWS = 200_000


def load_training_series(cfg: TrainConfig) -> list[Series]:
    from features.candle_files import load_candle_dir

    series: list[Series] = []
    for d in cfg.train_dirs:
        frames = load_candle_dir(Path(d))
        if cfg.max_minutes_per_file:
            frames = {s: f.iloc[: cfg.max_minutes_per_file] for s, f in frames.items()}
        series += build_series(frames, Path(d).name, cfg.bar_minutes, tuple(cfg.horizons))
    return series


def train_bundle(
    out: Path, cfg: TrainConfig, device: str = "cpu", progress: bool = True, series: list[Series] | None = None
) -> tuple[Path, FitResult, dict]:
    """Train and write the bundle to ``out``; returns (path, fit result, metrics)."""
    from features.spec import FEATURE_NAMES, SPEC_HASH

    t_start = time.perf_counter()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    series = series if series is not None else load_training_series(cfg)
    mcfg = ModelConfig(n_features=len(FEATURE_NAMES), **cfg.model)
    pool = AnchorPool.build(series, mcfg.context_length, cfg.bar_minutes)
    longest = max(cfg.horizons) * cfg.bar_minutes
    train_rows, val_rows, split = walk_forward_split(pool, cfg.val_fraction, longest, cfg.embargo_minutes)
    if train_rows.size < 1000 or val_rows.size < 100:
        raise MLSignalsError(f"too few complete rows to train (train {train_rows.size}, validation {val_rows.size})")
    spec = derive_target_spec(
        pool.raw.iloc[train_rows], cfg.bar_minutes, tuple(cfg.horizons), cfg.flat_quantile, cfg.level_quantile
    )
    rng = np.random.default_rng(cfg.seed)
    fit_rows = np.sort(rng.choice(train_rows, min(SCALER_ROWS, train_rows.size), replace=False))
    scaler = FeatureScaler.fit(pool.unscaled[fit_rows].astype(np.float64))
    stats = FeatureStats.from_matrix(pool.unscaled[fit_rows], FEATURE_NAMES)
    pool.apply_scaler(scaler)
    log.info("split %s; target spec %s", split, spec)

    fit = fit_model(pool, train_rows, val_rows, spec, mcfg, cfg, device=device, progress=progress)

    t_base = time.perf_counter()
    base_rows = np.sort(rng.choice(train_rows, min(cfg.baseline_samples, train_rows.size), replace=False))
    baselines = Baselines.fit(baseline_inputs(pool, base_rows, scaler), pool.labels(base_rows, spec), cfg.seed)
    base_seconds = time.perf_counter() - t_base

    val_eval = evaluate_pool(fit.model, scaler, spec, baselines, pool, val_rows[::7], device="cpu")
    metrics = {
        "validation": {
            "rows": val_eval.n_rows,
            "period": val_eval.period,
            "class_shares": val_eval.class_shares,
            "scores": val_eval.scores,
        },
        "history": fit.history,
        "best_epoch": fit.best_epoch,
        "best_step": fit.best_step,
        "train_seconds": round(fit.seconds, 1),
        "baseline_seconds": round(base_seconds, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "n_parameters": fit.model.n_parameters(),
    }
    train_info = {
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "data": {"dirs": list(cfg.train_dirs), "symbols": sorted({s.symbol for s in series}), **split},
        "device": device,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} threads={torch.get_num_threads()}".strip(),
    }
    path = save_bundle(
        out, fit.model, spec, list(FEATURE_NAMES), SPEC_HASH, scaler, stats, train_info, metrics, baselines.files()
    )
    return path, fit, metrics
