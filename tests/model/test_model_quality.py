"""Signal-quality machinery: calibration never loses to the base on its rows, candle files of
any timeframe that divides the bar, purged calendar folds, and `train` refusing a model that
loses to the volatility-only baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.candles import read_candles_csv, resample, validate_candles
from model.baselines import Baselines
from model.bundle import write_manifest
from model.calibration import fit_calibration
from model.config import TrainConfig
from model.contract import DIRECTION_LOGITS, LONG_HIT_LOGITS, RAW_SIZE
from model.dataset import AnchorPool, Window, calendar_folds, calendar_split
from model.series import Series, anchor_feature_matrix, minute_grid, volatility_columns
from model.targets import FLAT, LabelledTargets, raw_targets_all_anchors
from model.training_run import WorseThanBaselineError, train_bundle

ROOT = Path(__file__).resolve().parents[2] / "data" / "candles"


def _targets(n: int, rng: np.random.Generator, signal: np.ndarray | None = None) -> LabelledTargets:
    z = rng.normal(size=(n, 4)) + (0 if signal is None else signal[:, None])
    direction = np.where(z > 0.5, 0, np.where(z < -0.5, 1, FLAT))
    hits = (rng.random((n, 4)) < 0.4).astype(float)
    return LabelledTargets(z * 1e-3, direction, hits, hits[:, ::-1].copy(), np.abs(z[:, :4]) * 1e-3)


def test_calibration_drops_a_useless_network_and_keeps_a_useful_one() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    signal = rng.normal(size=n)
    t = _targets(n, rng, signal)
    base = np.zeros((n, RAW_SIZE))
    scales = np.ones(4)
    noise = rng.normal(size=(n, RAW_SIZE)) * 3.0  # a network that learned nothing but is confident
    cal = fit_calibration(base, noise, t, scales, scales)
    d = DIRECTION_LOGITS
    assert (cal.residual_weight[d] == 0).all()  # shrunk to the base: noise only hurts
    for i in range(4):
        r = cal.report[f"direction_h{i}"]
        assert r["val_loss"] <= r["base"] + 1e-12 < r["network"]
    useful = np.zeros((n, RAW_SIZE))
    useful[:, d.start : d.stop : 3] = signal[:, None] * 0.8  # LONG logit rises with the signal
    useful[:, d.start + 1 : d.stop : 3] = -signal[:, None] * 0.8
    cal = fit_calibration(base, useful, t, scales, scales)
    assert (cal.residual_weight[d] > 0).all()
    assert all(cal.report[f"direction_h{i}"]["val_loss"] < cal.report[f"direction_h{i}"]["base"] - 0.01
               for i in range(4))
    # level hits are noise here: their residual must be dropped again
    assert (cal.residual_weight[LONG_HIT_LOGITS] == 0).all() or all(
        cal.report[f"long_hit_h{i}"]["val_loss"] <= cal.report[f"long_hit_h{i}"]["base"] for i in range(4))


def test_temperature_undoes_overconfidence() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    signal = rng.normal(size=n)
    t = _targets(n, rng, signal)
    logits = np.zeros((n, RAW_SIZE))
    d = DIRECTION_LOGITS
    logits[:, d.start : d.stop : 3] = signal[:, None] * 4.0  # right direction, far too sure
    logits[:, d.start + 1 : d.stop : 3] = -signal[:, None] * 4.0
    cal = fit_calibration(logits, np.zeros_like(logits), t, np.ones(4), np.ones(4))
    temps = [cal.report[f"direction_h{i}"]["temperature"] for i in range(4)]
    assert min(temps) > 1.5  # softened
    assert all(cal.report[f"direction_h{i}"]["val_loss"] < cal.report[f"direction_h{i}"]["base"] for i in range(4))


@pytest.fixture(scope="module")
def btc_1m() -> pd.DataFrame:
    return validate_candles(read_candles_csv(ROOT / "binance_spot_2024-10" / "BTCUSDT_1m.csv.gz"), "BTCUSDT").iloc[
        :20000]


def test_fifteen_minute_files_give_the_rows_of_their_one_alignment(btc_1m: pd.DataFrame) -> None:
    """A 15-minute file is the epoch-aligned bars of the 1-minute file: its targets and features
    equal the 1-minute pipeline's at the anchors of that alignment (whole-bar windows are exact)."""
    bars = resample(btc_1m, 15)
    t15 = raw_targets_all_anchors(bars, 15, (1, 4), timeframe=15)
    t1 = raw_targets_all_anchors(btc_1m, 15, (1, 4))
    anchors = t15.index + pd.Timedelta(minutes=14)  # last 1-minute candle of each bar
    both = t1.reindex(anchors).to_numpy()
    ok = np.isfinite(both).all(axis=1) & np.isfinite(t15.to_numpy()).all(axis=1)
    assert ok.sum() > 400
    np.testing.assert_allclose(t15.to_numpy()[ok], both[ok], rtol=1e-12)
    f15 = anchor_feature_matrix(bars, None, "BTCUSDT", 15, cache=False)
    f1 = anchor_feature_matrix(btc_1m, None, "BTCUSDT", 15, cache=False)
    grid1 = minute_grid(btc_1m).index
    rows1 = grid1.get_indexer(anchors)
    sel = (rows1 >= 0) & np.isfinite(f15).all(axis=1)
    sel &= np.isfinite(f1[np.where(rows1 >= 0, rows1, 0)]).all(axis=1)
    assert sel.sum() > 300
    np.testing.assert_allclose(f15[sel], f1[rows1[sel]], rtol=2e-4, atol=1e-6)


def _series(symbol: str, period: str, frame: pd.DataFrame, step_minutes: int) -> Series:
    grid = minute_grid(frame, step_minutes)
    feats = np.random.default_rng(0).normal(size=(len(grid), 3)).astype(np.float32)
    return Series(symbol, period, grid.index, feats, raw_targets_all_anchors(frame, 15, (1, 2, 3, 4), step_minutes),
                  volatility_columns(grid, 15, step_minutes), step=15 // step_minutes)


def test_calendar_folds_never_share_minutes_with_training(btc_1m: pd.DataFrame) -> None:
    """Two venues over the same minutes (a 1-minute and a 15-minute series): each fold's
    training anchors, target windows included, stay an embargo away from the fold on both."""
    series = [_series("BTCUSDT", "a", btc_1m, 1), _series("BTCUSDT", "b", resample(btc_1m, 15), 15)]
    pool = AnchorPool.build(series, 8, 15)
    horizon = 4 * 15
    folds = calendar_folds(pool, 3)
    assert len(folds) == 3
    for fold in folds:
        train, val, info = calendar_split(pool, [fold], 0.2, horizon, 0)
        tt, tv = pool.times[train], pool.times[val]
        gap = pd.Timedelta(minutes=2 * horizon)  # purge (horizon) + embargo (defaults to it)
        assert ((tt < fold.start - gap) | (tt > fold.end + gap)).all()
        assert ((tv < fold.start - gap) | (tv > fold.end + gap)).all()
        # both venues are held out: no training row from either series inside the fold
        assert not ((tt >= fold.start) & (tt <= fold.end)).any()
        # validation is after training in time, separated by the gap
        before = tt[tt < tv.min()]
        assert (before + pd.Timedelta(minutes=horizon) <= tv.min() - pd.Timedelta(minutes=horizon)).all()
        assert info["train_anchors"] == train.size > 0 and val.size > 0


def test_held_out_window_is_purged_from_training(btc_1m: pd.DataFrame) -> None:
    pool = AnchorPool.build([_series("BTCUSDT", "a", btc_1m, 1)], 8, 15)
    t = pool.times[pool.valid]
    w = Window(t[len(t) // 3], t[len(t) // 2])
    train, val, _ = calendar_split(pool, [w], 0.2, 60, 30)
    for rows in (train, val):
        tt = pool.times[rows]
        assert ((tt < w.start - pd.Timedelta(minutes=90)) | (tt > w.end + pd.Timedelta(minutes=90))).all()


@pytest.mark.slow
def test_train_refuses_a_model_worse_than_the_volatility_baseline(btc_1m: pd.DataFrame, tmp_path: Path) -> None:
    """Features that are pure noise (the model's base sees only them) against a volatility
    baseline that sees the real candles: the model loses, and no bundle is written."""
    frame = btc_1m.iloc[:8000]
    grid = minute_grid(frame)
    rng = np.random.default_rng(0)
    s = Series("BTCUSDT", "p", grid.index, rng.normal(size=(len(grid), 4)).astype(np.float32),
               raw_targets_all_anchors(frame, 5, (1, 2, 3, 4)), volatility_columns(grid, 5))
    cfg = TrainConfig(bar_minutes=5, horizons=(1, 2, 3, 4), samples_per_epoch=512, val_samples=300, epochs=1,
                      batch_size=64, eval_every_steps=4, base_steps=40, baseline_samples=2000,
                      calibration_samples=1000, model={"context_length": 8, "patch_len": 4, "stride": 2,
                                                       "d_model": 8, "n_heads": 2, "n_layers": 1,
                                                       "base_inputs": [0, 1, 2, 3]})
    out = tmp_path / "worse"
    with pytest.raises(WorseThanBaselineError, match=r"h\d+ log_loss: model .* > volatility"):
        train_bundle(out, cfg, series=[s], progress=False)
    assert not out.exists()
    path, _, metrics = train_bundle(out, cfg, series=[s], progress=False, allow_worse=True)
    assert (path / "manifest.json").exists() and metrics["worse_than_volatility"]


@pytest.mark.slow
def test_log_volatility_base_learns_from_the_window(btc_1m: pd.DataFrame, tmp_path: Path) -> None:
    """A base whose last-bar input is noise, with and without the window's log volatility of
    real candles (``base_history`` = the log-return and range columns): the window makes its
    level-hit forecast better on validation at every horizon, and the bundle carries the
    standardization it was fitted with."""
    frame = btc_1m.iloc[:12000]
    grid = minute_grid(frame)
    close = grid["close"].to_numpy()
    feats = np.stack([np.log(close / np.roll(close, 1)),
                      ((grid["high"] - grid["low"]) / grid["open"]).to_numpy(),
                      np.random.default_rng(2).normal(size=len(grid))], axis=1).astype(np.float32)
    feats[0, 0] = 0.0
    s = Series("BTCUSDT", "p", grid.index, feats, raw_targets_all_anchors(frame, 5, (1, 2, 3, 4)),
               volatility_columns(grid, 5))
    base_loss = {}
    for name, extra in (("noise", {}), ("window", {"base_history": [0, 1]})):
        cfg = TrainConfig(bar_minutes=5, horizons=(1, 2, 3, 4), samples_per_epoch=256, val_samples=300, epochs=1,
                          batch_size=64, eval_every_steps=4, base_steps=150, baseline_samples=2000,
                          calibration_samples=2000, model={"context_length": 32, "patch_len": 8, "stride": 4,
                                                           "d_model": 8, "n_heads": 2, "n_layers": 1,
                                                           "base_inputs": [2], **extra})
        _, fit, metrics = train_bundle(tmp_path / name, cfg, series=[s], progress=False, allow_worse=True)
        base_loss[name] = [metrics["calibration"][f"long_hit_h{i}"]["base"] for i in range(4)]
    assert all(w < n - 0.005 for w, n in zip(base_loss["window"], base_loss["noise"], strict=True)), base_loss
    # standardized on training windows: 1-minute log volatility of BTC is about e^-7
    base = fit.model.base
    assert -9.0 < float(base.log_vol_mean[1]) < -5.0 and (base.log_vol_std > 0.05).all()


def test_kept_alignments_give_the_same_windows_and_targets(btc_1m: pd.DataFrame) -> None:
    from model.series import split_alignments

    frame = btc_1m.iloc[:3000]
    full = _series("BTCUSDT", "a", frame, 1)
    parts = split_alignments(full, 15, 3)
    assert len(parts) == 3 and all(p.step == 1 for p in parts)
    pool_full = AnchorPool.build([full], 8, 15)
    pool_parts = AnchorPool.build(parts, 8, 15)
    # every kept anchor has the window and targets it has in the full minute grid
    pos_full = pd.Index(pool_full.times).get_indexer(pool_parts.times[pool_parts.valid])
    assert (pos_full >= 0).all() and np.isin(pos_full, pool_full.valid).all()
    np.testing.assert_array_equal(pool_parts.windows(pool_parts.valid), pool_full.windows(pos_full))
    np.testing.assert_array_equal(pool_parts.raw.iloc[pool_parts.valid].to_numpy(),
                                  pool_full.raw.iloc[pos_full].to_numpy())
    assert abs(len(pool_parts.valid) * 5 - len(pool_full.valid)) < 0.02 * len(pool_full.valid)


@pytest.mark.slow
def test_cross_validation_scores_the_stacked_model_per_fold(btc_1m: pd.DataFrame) -> None:
    """Each fold refits the LightGBM stack on its own validation rows and scores the stacked
    model next to the volatility baseline, LightGBM alone and the model without the stack;
    finished folds are handed out as they end."""
    from model.cv import cross_validate, markdown

    frame = btc_1m.iloc[:9000]
    grid = minute_grid(frame)
    rng = np.random.default_rng(1)
    s = Series("BTCUSDT", "p", grid.index, rng.normal(size=(len(grid), 4)).astype(np.float32),
               raw_targets_all_anchors(frame, 5, (1, 2, 3, 4)), volatility_columns(grid, 5))
    cfg = TrainConfig(bar_minutes=5, horizons=(1, 2, 3, 4), samples_per_epoch=256, val_samples=200, epochs=1,
                      batch_size=64, eval_every_steps=2, base_steps=20, baseline_samples=1500,
                      calibration_samples=800, model={"context_length": 8, "patch_len": 4, "stride": 2,
                                                      "d_model": 8, "n_heads": 2, "n_layers": 1,
                                                      "base_inputs": [0, 1, 2, 3]})
    seen: list[int] = []
    result = cross_validate([s], cfg, 2, max_test_rows=500, on_fold=lambda r: seen.append(len(r["folds"])))
    assert seen == [1, 2]
    for fold in result["folds"]:
        assert set(fold["scores"]["h1"]) == {"model", "volatility", "lightgbm", "unstacked"}
        # drawdown/rally (the two longest horizons) scored for the model and the volatility baseline
        for name in ("model", "volatility"):
            assert fold["scores"]["h3"][name]["rally_rmse"] > 0 and fold["scores"]["h1"][name]["rally_rmse"] is None
        assert len(fold["stack"]["direction"]) == 4 and all(v["val_loss_stacked"] <= v["val_loss_model"]
                                                            for v in fold["stack"]["direction"].values())
    assert "| h1 | lightgbm |" in markdown(result)


@pytest.mark.slow
def test_stack_of_a_trained_bundle_is_fitted_on_its_own_validation_period(tmp_path: Path) -> None:
    """`mlsignals stack` on a bundle trained without the stack: the bundle's recorded split is
    rebuilt from the data directory, the stack is fitted on validation rows only (none of the
    bundle's training minutes) and signed into the bundle, which then serves another version."""
    from model.bundle import load_bundle
    from model.training_run import stack_bundle

    cfg = TrainConfig(train_dirs=("binance_spot_2025-01",), bar_minutes=5, horizons=(1, 2, 3, 4),
                      max_minutes_per_file=5000, alignments_1m=2, samples_per_epoch=256, val_samples=200, epochs=1,
                      batch_size=64, eval_every_steps=2, base_steps=20, baseline_samples=1500,
                      calibration_samples=600, stack_lightgbm=False,
                      model={"context_length": 8, "patch_len": 4, "stride": 2, "d_model": 8, "n_heads": 2,
                             "n_layers": 1})
    path, _, _ = train_bundle(tmp_path / "b", cfg, data_dir=ROOT, progress=False, allow_worse=True)
    before = load_bundle(path)
    assert before.stack is None
    # a bundle saved before the volatility baseline forecast risk gets it, from training rows
    doc = json.loads((path / "baselines.json").read_text())
    del doc["volatility"]["risk"]
    (path / "baselines.json").write_text(json.dumps(doc))
    write_manifest(path)
    stack = stack_bundle(path, ROOT)
    assert len(Baselines.load(path).params["volatility"]["risk"]) == 4
    after = load_bundle(path)
    assert after.stack is not None and after.model_version != before.model_version
    np.testing.assert_allclose(after.stack.weights, stack.weights)
    val_start = pd.Timestamp(before.config["train"]["data"]["val_start"])
    rows = [v["rows"] for v in stack.report["direction"].values()]
    # real feature columns: the level hits and risks are pooled with the volatility forecast too
    assert after.stack.volatility is not None and len(stack.report["hits"]) == 8 and len(stack.report["risk"]) == 4
    assert all(h["val_loss_stacked"] <= h["val_loss_model"] for h in stack.report["hits"])
    assert rows[0] == min(cfg.calibration_samples, rows[0]) > 100
    assert pd.Timestamp(before.config["train"]["data"]["train_end"]) < val_start
