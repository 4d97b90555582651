"""Training on a tiny config: reproducible with a seed, walk-forward split purged, no leak."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from features.candles import read_candles_csv, validate_candles
from model.config import ModelConfig, TrainConfig
from model.dataset import AnchorPool, walk_forward_split
from model.scaler import FeatureScaler
from model.series import Series, minute_grid, volatility_columns
from model.targets import derive_target_spec, raw_targets_all_anchors, target_columns
from model.train import fit_model

ROOT = Path(__file__).resolve().parents[2] / "data" / "candles"
BAR, HZ, CTX, F = 5, (1, 2, 3, 4), 16, 6


def _series(period: str, n: int) -> Series:
    """Real candles for the targets, synthetic features (the spec is tested elsewhere):
    features at t are a function of candles up to t only (past returns), plus noise."""
    c = validate_candles(read_candles_csv(ROOT / period / "SOLUSDT_1m.csv.gz"), "SOLUSDT").iloc[:n]
    grid = minute_grid(c)
    close = grid["close"]
    feats = np.stack([np.log(close / close.shift(k)).to_numpy() for k in (1, 5, 10, 20, 40, 60)], axis=1)
    return Series(
        "SOLUSDT",
        period,
        grid.index,
        feats.astype(np.float32),
        raw_targets_all_anchors(c, BAR, HZ),
        volatility_columns(grid, BAR),
    )


@pytest.fixture(scope="module")
def pool_split() -> tuple[AnchorPool, np.ndarray, np.ndarray, dict]:
    series = [_series("binance_spot_2024-10", 2500), _series("binance_spot_2025-01", 2500)]
    pool = AnchorPool.build(series, CTX, BAR)
    train, val, info = walk_forward_split(pool, 0.3, max(HZ) * BAR, 0)
    return pool, train, val, info


def test_split_is_chronological_and_purged(pool_split: tuple) -> None:
    pool, train, val, info = pool_split
    gap = pool.times[val].min() - pool.times[train].max()
    # purge (longest horizon) + embargo (defaults to the longest horizon)
    assert gap >= pd.Timedelta(minutes=2 * max(HZ) * BAR)
    assert info["val_anchors"] == val.size > 100 and train.size > 1000
    # every training target window ends before validation starts
    assert (pool.times[train] + pd.Timedelta(minutes=max(HZ) * BAR)).max() < pool.times[val].min()


def test_model_inputs_never_contain_targets(pool_split: tuple) -> None:
    """The input window of anchor t holds feature rows <= t of the same series only."""
    pool, train, _, _ = pool_split
    rows = train[:50]
    w = pool.windows(rows)
    assert w.shape == (50, CTX, F)
    np.testing.assert_array_equal(w[:, -1, :], pool.scaled(rows))
    assert not set(target_columns(HZ)) & {f"f{i}" for i in range(F)}
    # the window's rows lie in the past, on the same bar alignment
    offs = rows[:, None] - BAR * np.arange(CTX - 1, -1, -1)[None, :]
    assert (pool.series_id[offs] == pool.series_id[rows][:, None]).all()
    assert (pool.times.asi8[offs] <= pool.times.asi8[rows][:, None]).all()


def _fit(pool_split: tuple, seed: int) -> dict[str, torch.Tensor]:
    pool, train, val, _ = pool_split
    cfg = TrainConfig(samples_per_epoch=512, val_samples=200, epochs=2, batch_size=64, seed=seed, patience=5)
    spec = derive_target_spec(pool.raw.iloc[train], BAR, HZ, 0.33, 0.5)
    p = dataclasses.replace(pool)
    p.apply_scaler(FeatureScaler.fit(pool.unscaled[train].astype(np.float64)))
    mcfg = ModelConfig(n_features=F, context_length=CTX, patch_len=4, stride=2, d_model=16, n_heads=2, n_layers=1)
    res = fit_model(p, train, val, spec, mcfg, cfg, progress=False)
    # step 0 (the base alone) is scored first, then the end of each epoch
    assert [h["step"] for h in res.history][0] == 0 and len(res.history) == 3
    return res.model.state_dict()


def test_training_is_reproducible(pool_split: tuple) -> None:
    a, b, c = _fit(pool_split, 3), _fit(pool_split, 3), _fit(pool_split, 4)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
