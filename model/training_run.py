"""One complete training run: candles -> features -> split -> scaler -> model -> baselines -> bundle.

Used by ``mlsignals train``; every random choice derives from ``TrainConfig.seed``.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.errors import MLSignalsError
from model.baselines import Baselines
from model.bundle import save_bundle
from model.config import ModelConfig, TrainConfig
from model.dataset import AnchorPool, Window, calendar_split
from model.evaluate import baseline_inputs, evaluate_pool, model_raw
from model.feature_volatility import FeatureVolatility, vol_columns
from model.scaler import FeatureScaler, FeatureStats
from model.series import Series, build_series, load_period_dir
from model.stacking import STACK_JSON, OutputStack, fit_stack
from model.targets import derive_target_spec
from model.train import FitResult, fit_model
from model.window_volatility import HISTORY_FEATURES

log = logging.getLogger(__name__)
SCALER_ROWS = 200_000


# Direction-blind inputs of the volatility base (model.patchtst.VolatilityBase): how active and
# how volatile the market is, and when - nothing that says which way it went.
BASE_FEATURES = (
    "volatility.natr_7", "volatility.natr_14", "volatility.natr_21", "volatility.atr_ratio_7_21",
    "volatility.trange_pct", "volatility.bbands_20_2.width", "volatility.bbands_50_2.width",
    "volatility.donchian_20.width", "volatility.donchian_55.width", "volatility.realized_10",
    "volatility.realized_20", "volatility.realized_50", "volatility.parkinson_10", "volatility.parkinson_50",
    "volatility.garman_klass_20", "volatility.yang_zhang_20", "volatility.vol_ratio_10_50",
    "volatility.range_zscore_50", "volume.vol_zscore_20", "volume.log_vol_ratio_20", "volume.log_vol_ratio_50",
    "candle.shape.range_pct", "micro.corwin_schultz_20", "micro.amihud_20", "stats.kurt_50",
    "cross.btc_natr_14", "cross.btc_realized_20", "cross.rv_ratio_btc_20",
    "time.cyclical.hour_sin", "time.cyclical.hour_cos", "time.cyclical.weekday_sin", "time.cyclical.weekday_cos",
)


class WorseThanBaselineError(MLSignalsError):
    """The trained model loses to the volatility-only baseline on validation."""


# the log-volatility base (``base_log_volatility``): indicators that are ratios, z-scores or
# time, so they keep their range in any volatility regime; the level comes from the window's
# log volatility (model.window_volatility)
BASE_SCALE_FREE_FEATURES = (
    "volatility.atr_ratio_7_21", "volatility.vol_ratio_10_50", "volatility.range_zscore_50",
    "volume.vol_zscore_20", "volume.log_vol_ratio_20", "volume.log_vol_ratio_50", "stats.kurt_50",
    "cross.rv_ratio_btc_20",
    "time.cyclical.hour_sin", "time.cyclical.hour_cos", "time.cyclical.weekday_sin", "time.cyclical.weekday_cos",
)


def base_input_indices(feature_names: list[str], log_volatility: bool = False) -> tuple[int, ...]:
    wanted = BASE_SCALE_FREE_FEATURES if log_volatility else BASE_FEATURES
    return tuple(feature_names.index(n) for n in wanted if n in feature_names)


def resolve_base(model_overrides: dict, feature_names: list[str] | None) -> dict:
    """``model_overrides`` with the volatility base's columns filled in for the full feature
    layout (a synthetic layout, ``feature_names`` None, gets no base unless given one)."""
    out = dict(model_overrides)
    if "base_inputs" in out or feature_names is None:
        return out
    log_vol = bool(out.get("base_log_volatility", False))
    out["base_inputs"] = base_input_indices(feature_names, log_vol)
    if log_vol:
        out["base_history"] = tuple(feature_names.index(n) for n in HISTORY_FEATURES)
    return out


def candle_dirs(cfg: TrainConfig, data_dir: Path | None) -> list[Path]:
    """The periods to train on: ``cfg.train_dirs`` (relative to ``data_dir`` when given), or
    every sub-folder of ``data_dir`` holding candle files when ``train_dirs`` is empty."""
    if data_dir is not None and not cfg.train_dirs:
        dirs = sorted(p for p in Path(data_dir).iterdir() if p.is_dir() and any(p.glob("*.csv*")))
    else:
        dirs = [Path(data_dir) / d if data_dir is not None and not Path(d).is_absolute() else Path(d)
                for d in cfg.train_dirs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing or not dirs:
        raise MLSignalsError(f"no candle folder(s): {', '.join(missing) or 'none given'}")
    return dirs


def load_training_series(cfg: TrainConfig, data_dir: Path | None = None) -> list[Series]:
    series: list[Series] = []
    for d in candle_dirs(cfg, data_dir):
        frames = load_period_dir(d)
        if cfg.max_minutes_per_file:
            frames = {s: f.iloc[: cfg.max_minutes_per_file] for s, f in frames.items()}
        series += build_series(frames, d.name, cfg.bar_minutes, tuple(cfg.horizons), alignments=cfg.alignments_1m)
    return series


def test_windows(cfg: TrainConfig) -> list[Window]:
    return [Window(pd.Timestamp(a, tz="UTC") if pd.Timestamp(a).tz is None else pd.Timestamp(a),
                   pd.Timestamp(b, tz="UTC") if pd.Timestamp(b).tz is None else pd.Timestamp(b))
            for a, b in cfg.test_windows]


def losses_vs_volatility(scores: dict) -> list[str]:
    """Each horizon/head where the model's validation loss (log-loss; RMSE for drawdown/rally) is
    above the volatility baseline's."""
    worse = []
    for h, per in scores.items():
        m, v = per["model"], per["volatility"]
        for key in ("log_loss", "long_hit_log_loss", "short_hit_log_loss", "drawdown_rmse", "rally_rmse"):
            if m.get(key) is not None and v.get(key) is not None and m[key] > v[key] + 1e-6:
                worse.append(f"{h} {key}: model {m[key]:.5f} > volatility {v[key]:.5f}")
    return worse


def fit_validation_stack(model, baselines: Baselines, pool: AnchorPool, train_rows: np.ndarray,
                         val_rows: np.ndarray, spec, cfg: TrainConfig, rng: np.random.Generator,
                         feature_names: list[str]) -> OutputStack:
    """Fit the stack (model.stacking): the feature-volatility forecast on training rows
    (``baseline_samples`` of them, as for the baselines), then the pooling weights on validation
    rows (``calibration_samples`` of them, as for the calibration). Feature layouts without the
    volatility columns (synthetic test series) stack the direction only."""
    columns = vol_columns(feature_names)
    volatility = None
    if columns is not None:
        fit_rows = np.sort(rng.choice(train_rows, min(cfg.baseline_samples, train_rows.size), replace=False))
        t = pool.labels(fit_rows, spec)
        volatility = FeatureVolatility.fit(pool.unscaled[fit_rows], pool.unscaled_windows(fit_rows, columns[1]),
                                           t.long_hit, t.short_hit, t.risk, columns, cfg.seed)
    rows = np.sort(rng.choice(val_rows, min(cfg.calibration_samples, val_rows.size), replace=False))
    history = None if columns is None else pool.unscaled_windows(rows, columns[1])
    stack = fit_stack(model_raw(model, pool, rows, None), pool.unscaled[rows], history, pool.labels(rows, spec),
                      baselines.boosters, volatility)
    log.info("stack weights per horizon: direction (model, lightgbm) %s; hits (model, volatility) %s",
             stack.weights.round(3).tolist(), None if stack.hit_weights is None else stack.hit_weights.round(3).tolist())
    return stack


def train_bundle(
    out: Path,
    cfg: TrainConfig,
    device: str = "cpu",
    progress: bool = True,
    series: list[Series] | None = None,
    data_dir: Path | None = None,
    allow_worse: bool = False,
) -> tuple[Path, FitResult, dict]:
    """Train and write the bundle to ``out``; returns (path, fit result, metrics).

    Raises ``WorseThanBaselineError`` (nothing written) when the model's validation log-loss is
    worse than the volatility-only baseline at any horizon or head, unless ``allow_worse``.
    """
    from features.spec import FEATURE_NAMES, SPEC_HASH

    t_start = time.perf_counter()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    series = series if series is not None else load_training_series(cfg, data_dir)
    width = series[0].features.shape[1]
    # synthetic series (tests) have their own width; their columns are named by position
    names = list(FEATURE_NAMES) if width == len(FEATURE_NAMES) else [f"f{i}" for i in range(width)]
    model_overrides = resolve_base(cfg.model, names if width == len(FEATURE_NAMES) else None)
    mcfg = ModelConfig(n_features=width, **model_overrides)
    pool = AnchorPool.build(series, mcfg.context_length, cfg.bar_minutes)
    longest = max(cfg.horizons) * cfg.bar_minutes
    train_rows, val_rows, split = calendar_split(pool, test_windows(cfg), cfg.val_fraction, longest, cfg.embargo_minutes)
    if train_rows.size < 1000 or val_rows.size < 100:
        raise MLSignalsError(f"too few complete rows to train (train {train_rows.size}, validation {val_rows.size})")
    spec = derive_target_spec(
        pool.raw.iloc[train_rows], cfg.bar_minutes, tuple(cfg.horizons), cfg.flat_quantile, cfg.level_quantile
    )
    rng = np.random.default_rng(cfg.seed)
    fit_rows = np.sort(rng.choice(train_rows, min(SCALER_ROWS, train_rows.size), replace=False))
    scaler = FeatureScaler.fit(pool.unscaled[fit_rows].astype(np.float64))
    stats = FeatureStats.from_matrix(pool.unscaled[fit_rows], names)
    pool.apply_scaler(scaler)
    log.info("split %s; target spec %s", split, spec)

    fit = fit_model(pool, train_rows, val_rows, spec, mcfg, cfg, device=device, progress=progress)

    t_base = time.perf_counter()
    base_rows = np.sort(rng.choice(train_rows, min(cfg.baseline_samples, train_rows.size), replace=False))
    baselines = Baselines.fit(baseline_inputs(pool, base_rows, scaler), pool.labels(base_rows, spec), cfg.seed)
    base_seconds = time.perf_counter() - t_base
    stack = (fit_validation_stack(fit.model, baselines, pool, train_rows, val_rows, spec, cfg, rng, names)
             if cfg.stack_lightgbm else None)

    val_eval = evaluate_pool(fit.model, scaler, spec, baselines, pool, val_rows[:: max(1, val_rows.size // 40_000)],
                             device="cpu", stack=stack)
    worse = losses_vs_volatility(val_eval.scores)
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
        "calibration": fit.calibration,
        "stack": None if stack is None else stack.report,
        "worse_than_volatility": worse,
    }
    if worse and not allow_worse:
        raise WorseThanBaselineError(
            "the model is worse than the volatility-only baseline on validation, bundle not written "
            "(--allow-worse writes it anyway): " + "; ".join(worse)
        )
    train_info = {
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "data": {"dirs": sorted({s.period for s in series}), "symbols": sorted({s.symbol for s in series}), **split},
        "device": device,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} threads={torch.get_num_threads()}".strip(),
    }
    files = baselines.files()
    if stack is not None:
        files[STACK_JSON] = stack.to_json()
    path = save_bundle(out, fit.model, spec, names, SPEC_HASH, scaler, stats, train_info, metrics, files)
    return path, fit, metrics


def stack_bundle(bundle_dir: Path, data_dir: Path, alignments_1m: int | None = None) -> OutputStack:
    """Fit and write the stack of an already trained bundle: the bundle's own recipe and split
    (its config.json) rebuild its training and validation rows from ``data_dir``; the bundle's
    scaler, network and LightGBM are used as they are. A volatility baseline saved before it
    forecast risk gets its risk regression, fitted on the same training rows, so evaluation
    can score the risk outputs against it. ``alignments_1m`` overrides how many bar alignments
    of 1-minute files are built (memory); the periods are the same."""
    from model.baselines import BASELINES_JSON, VOL_LOG_COLUMNS, fit_risk, risk_design
    from model.bundle import load_bundle, write_stack

    bundle = load_bundle(bundle_dir)
    cfg = TrainConfig.from_dict(bundle.config["train"]["config"])
    if alignments_1m is not None:
        cfg = cfg.replace(alignments_1m=alignments_1m)
    series = load_training_series(cfg, data_dir)
    pool = AnchorPool.build(series, bundle.context_length, cfg.bar_minutes)
    longest = max(cfg.horizons) * cfg.bar_minutes
    train_rows, val_rows, split = calendar_split(pool, test_windows(cfg), cfg.val_fraction, longest,
                                                 cfg.embargo_minutes)
    recorded = bundle.config["train"].get("data", {})
    if recorded.get("val_start"):  # the bundle's own periods: no training minute is validated on
        val_rows = val_rows[pool.times[val_rows] >= pd.Timestamp(recorded["val_start"])]
        train_rows = train_rows[pool.times[train_rows] < pd.Timestamp(recorded["val_start"])]
    if val_rows.size < 100 or train_rows.size < 1000:
        raise MLSignalsError(f"{data_dir}: too few rows to fit the stack (train {train_rows.size}, "
                             f"validation {val_rows.size})")
    pool.apply_scaler(bundle.scaler)
    log.info("stacking on the validation split %s", split)
    baselines = Baselines.load(bundle.path)
    rng = np.random.default_rng(cfg.seed)
    stack = fit_validation_stack(bundle.model, baselines, pool, train_rows, val_rows, bundle.target_spec, cfg, rng,
                                 bundle.feature_names)
    extra = {}
    vol = baselines.params["volatility"]
    if "risk" not in vol:
        rows = np.sort(rng.choice(train_rows, min(cfg.baseline_samples, train_rows.size), replace=False))
        vz = baselines.volatility_z(pool.vol_inputs(rows))
        vol["risk"] = fit_risk(risk_design(vz, VOL_LOG_COLUMNS), pool.labels(rows, bundle.target_spec).risk)
        extra[BASELINES_JSON] = baselines.params_json()
    write_stack(bundle.path, stack, extra)
    return stack
