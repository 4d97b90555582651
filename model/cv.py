"""Purged cross-validation over calendar time: the numbers every modelling choice is made on.

The pool of every period (all venues, 1-minute blocks and 15-minute spans) is cut into ``k``
calendar blocks. Fold i tests on every anchor of block i, on every venue (BTC on two exchanges
in the same minute is the same market), and trains on the rest with the block purged and
embargoed (``model.dataset.calendar_split``: gap = longest horizon + embargo on both sides);
its validation split (early stopping, calibration) is carved from the remaining time the same
way. Each fold refits everything that sees targets - target bands, scaler, base, network,
calibration and the volatility-only baseline - on its own training rows.

Per fold and horizon it reports the model's direction log-loss minus the volatility-only
baseline's with a day-block bootstrap interval, Brier, ECE, direction AUC, IC, the
level-hit log-losses and the drawdown/rally RMSE of both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from model.baselines import Baselines
from model.config import ModelConfig, TrainConfig
from model.dataset import AnchorPool, Window, calendar_folds, calendar_split
from model.evaluate import baseline_inputs, forecast_from_raw
from model.metrics import log_loss_difference, score_all
from model.scaler import FeatureScaler
from model.targets import derive_target_spec
from model.train import fit_model, predict_raw
from model.training_run import fit_validation_stack, resolve_base

log = logging.getLogger(__name__)
# forecasters scored per fold: the recipe's model, the volatility-only baseline, and - when the
# recipe stacks LightGBM - LightGBM alone and the model without the stack
FORECASTERS = ("model", "volatility", "lightgbm", "unstacked")
KEYS = ("log_loss", "brier", "ece", "direction_auc", "ic", "long_hit_log_loss", "short_hit_log_loss",
        "drawdown_rmse", "rally_rmse")


def run_fold(pool: AnchorPool, fold: Window, mcfg: ModelConfig, cfg: TrainConfig, max_test_rows: int,
             progress: bool = False, feature_names: list[str] | None = None) -> dict:
    """Train on everything but ``fold`` (purged), score on ``fold``."""
    import torch

    t0 = time.perf_counter()
    longest = max(cfg.horizons) * cfg.bar_minutes
    train, val, split = calendar_split(pool, [fold], cfg.val_fraction, longest, cfg.embargo_minutes)
    tv = pool.times[pool.valid]
    test = pool.valid[(tv >= fold.start) & (tv <= fold.end)]
    test = test[:: max(1, test.size // max_test_rows)]
    spec = derive_target_spec(pool.raw.iloc[train], cfg.bar_minutes, tuple(cfg.horizons), cfg.flat_quantile,
                              cfg.level_quantile)
    rng = np.random.default_rng(cfg.seed)
    fit_rows = np.sort(rng.choice(train, min(200_000, train.size), replace=False))
    scaler = FeatureScaler.fit(pool.unscaled[fit_rows].astype(np.float64))
    pool.apply_scaler(scaler)
    fit = fit_model(pool, train, val, spec, mcfg, cfg, progress=progress)
    base_rows = np.sort(rng.choice(train, min(cfg.baseline_samples, train.size), replace=False))
    # LightGBM only where the recipe stacks it (the logistic baseline is never needed here)
    baselines = Baselines.fit(baseline_inputs(pool, base_rows, scaler), pool.labels(base_rows, spec), cfg.seed,
                              only_volatility=not cfg.stack_lightgbm, logistic_regression=False)
    names = feature_names or [f"f{i}" for i in range(pool.unscaled.shape[1])]
    stack = (fit_validation_stack(fit.model, baselines, pool, train, val, spec, cfg, rng, names)
             if cfg.stack_lightgbm else None)
    t = pool.labels(test, spec)
    raw = predict_raw(fit.model, pool, test, torch.device("cpu"))
    model_fc = forecast_from_raw(raw if stack is None else stack.apply_on_pool(raw, pool, test))
    fcs = {"model": model_fc, **baselines.forecasts(baseline_inputs(pool, test, scaler))}
    if stack is not None:  # what the stack adds: the same network without it
        fcs["unstacked"] = forecast_from_raw(raw)
    vol_fc = fcs["volatility"]
    scores = {name: score_all(fcs[name], t, spec.horizons) for name in FORECASTERS if name in fcs}
    days = pool.times[test].floor("D").asi8
    diff = log_loss_difference(model_fc, vol_fc, t, days, spec.horizons)
    return {
        "fold": fold.to_dict(),
        "train_anchors": int(train.size),
        "val_anchors": int(val.size),
        "test_rows": int(test.size),
        "test_days": int(np.unique(days).size),
        "symbols": sorted({pool.symbols[i] for i in np.unique(pool.series_id[test])}),
        "split": split,
        "scores": {h: {name: {k: scores[name][h][k] for k in KEYS} for name in scores} for h in scores["model"]},
        "log_loss_diff": diff,
        "best_step": fit.best_step,
        "stack": None if stack is None else stack.report,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summarise(folds: list[dict]) -> dict:
    """Mean and sd over folds of every score and of the log-loss difference."""
    out: dict = {}
    for h in folds[0]["scores"]:
        per: dict = {"log_loss_diff": {}}
        d = np.array([f["log_loss_diff"][h]["diff"] for f in folds])
        per["log_loss_diff"] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                                "folds_model_better": int((d < 0).sum()), "folds": len(d)}
        for name in (n for n in FORECASTERS if n in folds[0]["scores"][h]):
            per[name] = {}
            for k in KEYS:
                v = [f["scores"][h][name][k] for f in folds if f["scores"][h][name][k] is not None]
                per[name][k] = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0} \
                    if v else None
        out[h] = per
    return out


def cross_validate(series: list, cfg: TrainConfig, k: int, max_test_rows: int = 30_000,
                   progress: bool = False, on_fold: Callable[[dict], None] | None = None) -> dict:
    """Every fold in turn; ``on_fold`` gets the result so far after each (a long run leaves
    its finished folds behind)."""
    from features.spec import FEATURE_NAMES

    names = list(FEATURE_NAMES) if series[0].features.shape[1] == len(FEATURE_NAMES) else None
    overrides = resolve_base(cfg.model, names)
    mcfg = ModelConfig(n_features=series[0].features.shape[1], **overrides)
    pool = AnchorPool.build(series, mcfg.context_length, cfg.bar_minutes)
    folds = []
    for i, fold in enumerate(calendar_folds(pool, k)):
        log.info("fold %d/%d: %s .. %s", i + 1, k, fold.start, fold.end)
        folds.append(run_fold(pool, fold, mcfg, cfg, max_test_rows, progress, names))
        if on_fold is not None:
            on_fold({"config": cfg.to_dict(), "k": k, "folds": folds, "summary": summarise(folds)})
    return {"config": cfg.to_dict(), "k": k, "folds": folds, "summary": summarise(folds)}


def with_budget(cfg: TrainConfig, steps: int | None) -> TrainConfig:
    """A cheaper copy of the recipe for CV: at most ``steps`` network steps in one epoch."""
    if not steps:
        return cfg
    return cfg.replace(epochs=1, samples_per_epoch=steps * cfg.batch_size,
                      eval_every_steps=max(10, steps // 4))


def markdown(result: dict) -> str:
    done = len(result["folds"])
    partial = "" if done == result["k"] else f", {done} finished so far"
    lines = [f"# Purged calendar cross-validation ({result['k']} folds{partial})", "",
             "Direction log-loss of the model minus the volatility-only baseline (negative = model better), "
             "95 % day-block bootstrap interval per fold; both refitted on each fold's training rows.", ""]
    hs = list(result["summary"])
    lines += ["| fold | test period | rows | " + " | ".join(hs) + " |", "|---|---|---|" + "---|" * len(hs)]
    for i, f in enumerate(result["folds"]):
        cells = [f"{f['log_loss_diff'][h]['diff']:+.4f} [{f['log_loss_diff'][h]['ci_low']:+.4f}, "
                 f"{f['log_loss_diff'][h]['ci_high']:+.4f}]" for h in hs]
        lines.append(f"| {i + 1} | {f['fold']['start'][:10]} .. {f['fold']['end'][:10]} | {f['test_rows']} | "
                     + " | ".join(cells) + " |")
    s = result["summary"]
    lines.append("| mean ± sd | | | " + " | ".join(
        f"{s[h]['log_loss_diff']['mean']:+.4f} ± {s[h]['log_loss_diff']['sd']:.4f}" for h in hs) + " |")
    lines += ["", "Mean ± sd over folds:", "", "| horizon | forecaster | " + " | ".join(KEYS) + " |",
              "|---|---|" + "---|" * len(KEYS)]
    for h in hs:
        for name in (n for n in FORECASTERS if n in s[h]):
            cells = [("—" if s[h][name][k] is None else f"{s[h][name][k]['mean']:.4f} ± {s[h][name][k]['sd']:.4f}")
                     for k in KEYS]
            lines.append(f"| {h} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
