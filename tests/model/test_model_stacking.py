"""The stack (model.stacking): LightGBM into the direction, a feature-volatility forecast into the
level hits and risks; fitted on validation rows, never worse than the model on them, applied
identically by serving and evaluation; signed in the bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import torch

from common.errors import ArtifactError
from model.bundle import load_bundle, save_bundle, write_policy, write_stack
from model.config import ModelConfig
from model.contract import N_HORIZONS, TargetSpec
from model.dataset import AnchorPool
from model.evaluate import forecast_from_raw, model_raw
from model.feature_volatility import HISTORY_FEATURES, VOL_FEATURES, FeatureVolatility, history_inputs, vol_columns
from model.inference import InferenceEngine
from model.patchtst import UnifiedPatchTST
from model.scaler import FeatureScaler, FeatureStats
from model.series import Series
from model.stacking import OutputStack, fit_binary_pool, fit_linear_pool, fit_pool

NAMES = [n for n, _ in VOL_FEATURES] + list(HISTORY_FEATURES) + ["grp.a"]  # the volatility columns and one other
F, C = len(NAMES), 32


def _labels(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per row drawn from p [N, 3]."""
    u = rng.random(len(p))[:, None]
    return (u > np.cumsum(p, axis=1)).sum(axis=1)


def test_pool_takes_lightgbm_where_it_knows_the_direction_and_not_where_it_is_noise() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    tilt = rng.normal(0.0, 0.15, n)  # the true LONG/SHORT tilt, which only "LightGBM" sees
    p_move = rng.uniform(0.4, 0.8, n)
    true = np.stack([p_move * (0.5 + tilt).clip(0.05, 0.95), p_move * (0.5 - tilt).clip(0.05, 0.95), 1 - p_move], 1)
    true /= true.sum(axis=1, keepdims=True)
    y = np.stack([_labels(true, rng) for _ in range(N_HORIZONS)], axis=1)
    blind = np.stack([p_move / 2, p_move / 2, 1 - p_move], 1)  # right about the move, blind to direction
    model = np.repeat(blind[:, None], N_HORIZONS, axis=1)
    skilled = np.repeat(true[:, None], N_HORIZONS, axis=1)
    noise = rng.dirichlet([5, 5, 5], size=(n, N_HORIZONS))
    w, rep = fit_pool(model, skilled, y)
    assert (w[:, 1] > 0.3).all()
    assert all(rep[f"h{i}"]["val_loss_stacked"] < rep[f"h{i}"]["val_loss_model"] - 1e-3 for i in range(N_HORIZONS))
    w, rep = fit_pool(model, noise, y)
    assert (w[:, 1] < 0.1).all()  # noise gets (almost) no weight ...
    # ... and the pool is never worse than the model on the rows it was fitted on
    assert all(rep[f"h{i}"]["val_loss_stacked"] <= rep[f"h{i}"]["val_loss_model"] for i in range(N_HORIZONS))


def test_hit_and_risk_pools_take_the_volatility_forecast_only_where_it_helps() -> None:
    """A network whose hit logits are too flat (under a regime it never saw) and a volatility
    forecast that knows the level: the pool leans on the forecast; a noise forecast gets no
    weight and the pool is never worse than the model on the rows it was fitted on."""
    rng = np.random.default_rng(5)
    n, k = 20_000, 8
    truth = rng.normal(-0.5, 1.5, size=(n, k))  # true hit logits
    y = (rng.random((n, k)) < 1 / (1 + np.exp(-truth))).astype(float)
    flat = 0.3 * truth  # right order, far too timid
    w, rep = fit_binary_pool(flat, truth, y)
    assert (w[:, 1] > 0.5).all()
    assert all(r["val_loss_stacked"] < r["val_loss_model"] - 1e-2 for r in rep)
    w, rep = fit_binary_pool(truth, rng.normal(0, 2, size=(n, k)), y)
    assert (w[:, 1] < 0.05).all()
    assert all(r["val_loss_stacked"] <= r["val_loss_model"] for r in rep)
    risk = rng.gamma(2.0, 0.01, size=(n, 4))
    observed = risk * rng.gamma(4.0, 0.25, size=(n, 4))  # noisy outcome whose mean is ``risk``
    w, rep = fit_linear_pool(np.full((n, 4), observed.mean()), risk, observed)
    assert (w[:, 1] > 0.8).all()
    assert all(r["val_mse_stacked"] < r["val_mse_model"] for r in rep)
    w, rep = fit_linear_pool(risk, rng.gamma(2.0, 0.01, size=(n, 4)), observed)
    assert all(r["val_mse_stacked"] <= r["val_mse_model"] for r in rep)


def _volatility(x: np.ndarray, rng: np.random.Generator) -> FeatureVolatility:
    """A feature-volatility forecast fitted on synthetic windows [N, C, F] whose targets grow
    with the first column."""
    level = np.abs(x[:, -1, 0]) / 100
    hits = (rng.random((len(x), 4)) < np.clip(level * 10, 0, 1)[:, None]).astype(float)
    risk = level[:, None] * rng.gamma(4.0, 0.25, size=(len(x), 4))
    cols = vol_columns(NAMES)
    return FeatureVolatility.fit(x[:, -1], x[:, :, cols[1]], hits, hits[:, ::-1], risk, cols)


def test_feature_volatility_round_trips_and_checks_its_columns() -> None:
    rng = np.random.default_rng(2)
    x = np.abs(rng.normal(5.0, 3.0, size=(1500, 6, F)))
    fv = _volatility(x, rng)
    h = x[:, :, fv.history_columns]
    again = FeatureVolatility.from_dict(json.loads(json.dumps(fv.to_dict())), NAMES)
    np.testing.assert_allclose(again.hit_logits(x[:50, -1], h[:50]), fv.hit_logits(x[:50, -1], h[:50]))
    np.testing.assert_allclose(again.risk_values(x[:50, -1], h[:50]), fv.risk_values(x[:50, -1], h[:50]))
    assert (fv.risk_values(x[:, -1], h) >= 0).all()
    lo, hi = np.argsort(np.abs(x[:, -1, 0]))[[0, -1]]  # the hit forecast rises with the volatility input
    assert (fv.hit_logits(x[[hi], -1], h[[hi]]) > fv.hit_logits(x[[lo], -1], h[[lo]])).all()
    with pytest.raises(ArtifactError, match="columns"):
        FeatureVolatility.from_dict(fv.to_dict(), NAMES[1:] + NAMES[:1])  # another feature layout
    assert vol_columns(["grp.a"]) is None  # a layout without them: no volatility part


@pytest.fixture(scope="module")
def btc_1m_pool() -> tuple[AnchorPool, np.ndarray, list[str]]:
    """Real features of two weeks of Binance BTC (15-minute bars)."""
    from features.candles import read_candles_csv, resample, validate_candles
    from features.spec import FEATURE_NAMES
    from model.series import build_series

    path = Path(__file__).resolve().parents[2] / "data" / "candles" / "binance_spot_2024-10" / "BTCUSDT_1m.csv.gz"
    frame = validate_candles(read_candles_csv(path), "BTCUSDT").iloc[:20000]
    series = build_series({"BTCUSDT": resample(frame, 15)}, "p", 15, (1, 4, 16, 48), cache=False)
    pool = AnchorPool.build(series, 96, 15)
    assert pool.valid.size > 500
    return pool, pool.valid, list(FEATURE_NAMES)


def test_window_volatility_is_the_volatility_baselines_own(btc_1m_pool) -> None:
    """The realized volatility the stack reads from the feature window equals the candle-based
    volatility baseline's log_rv4/16/96 on real candles (the same numbers, from the features)."""
    pool, rows, names = btc_1m_pool
    cols = vol_columns(names)
    got = history_inputs(pool.unscaled_windows(rows, cols[1]))
    want = pool.vol_inputs(rows)[:, :3]  # log_rv4, log_rv16, log_rv96
    np.testing.assert_allclose(got[:, :3], want, atol=1e-4)
    # the range reads the bar's (high - low) / open, the baseline divides by the close: close, not equal
    np.testing.assert_allclose(got[:, 3], pool.vol_inputs(rows)[:, 3], atol=0.05)


@pytest.fixture(scope="module")
def stacked_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(n_features=F, context_length=C, patch_len=8, stride=4, d_model=16, n_heads=2, n_layers=1,
                      base_inputs=(0, 1, 2))
    model = UnifiedPatchTST(cfg).eval()
    for head in (model.head_returns, model.head_direction, model.head_hits, model.head_risk):
        torch.nn.init.normal_(head.weight, std=0.3)
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, size=(600, F))
    y = (x[:, 0] > 5.0).astype(int) + (x[:, 1] > 7.0).astype(int)  # classes 0..2 from two features
    files = {}
    for i in range(N_HORIZONS):
        booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "min_data_in_leaf": 20,
                             "num_threads": 1, "deterministic": True}, lgb.Dataset(x, label=y), num_boost_round=5)
        files[f"baseline_lgbm_{i}.txt"] = booster.model_to_string()
    root = save_bundle(tmp_path_factory.mktemp("b") / "stk", model, TargetSpec(), NAMES, "spec-x",
                       FeatureScaler.fit(x), FeatureStats.from_matrix(x, NAMES), {}, {}, files)
    boosters = [lgb.Booster(model_str=files[f"baseline_lgbm_{i}.txt"]) for i in range(N_HORIZONS)]
    windows = np.abs(rng.normal(5.0, 3.0, size=(600, C, F)))
    write_stack(root, OutputStack(np.tile([0.7, 0.8], (N_HORIZONS, 1)), boosters, {}, _volatility(windows, rng),
                                  np.tile([0.6, 0.7], (2 * N_HORIZONS, 1)), np.tile([0.5, 0.5], (4, 1))))
    return root


def test_stack_is_the_same_in_serving_and_evaluation(stacked_bundle: Path) -> None:
    """Serving (and the backtest) call InferenceEngine.predict, evaluation and cross-validation
    model_raw on a pool: the same unscaled windows give the same stacked probabilities, hits and
    risks, and they differ from the network's alone (returns do not change)."""
    engine = InferenceEngine.from_bundle(stacked_bundle, device="cpu", compile=False, spec_hash="spec-x")
    assert engine.bundle.stack is not None
    n = 6
    feats = np.random.default_rng(3).normal(5.0, 3.0, size=(C + n, F)).astype(np.float32)
    idx = pd.date_range("2025-01-01", periods=C + n, freq="15min")
    series = Series("X", "p", idx, feats, pd.DataFrame(index=idx), pd.DataFrame(index=idx), step=1)
    pool = AnchorPool.build([series], C, 15)
    pool.apply_scaler(engine.bundle.scaler)
    rows = np.arange(C - 1, C + n - 1)
    eval_fc = forecast_from_raw(model_raw(engine.bundle.model, pool, rows, engine.bundle.stack))
    windows = np.stack([feats[r - C + 1 : r + 1] for r in rows])
    served, errors = engine.predict(windows, [str(i) for i in range(n)])
    assert not errors
    for i in range(n):
        out = served[str(i)]
        np.testing.assert_allclose(out.direction_probs, eval_fc.direction[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.long_hit, eval_fc.long_hit[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.short_hit, eval_fc.short_hit[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.risk, eval_fc.risk[i], rtol=1e-5, atol=1e-7)
    plain = forecast_from_raw(model_raw(engine.bundle.model, pool, rows, None))
    assert not np.allclose(plain.direction, eval_fc.direction, atol=1e-3)
    assert not np.allclose(plain.long_hit, eval_fc.long_hit, atol=1e-3)
    assert not np.allclose(plain.risk, eval_fc.risk, atol=1e-5)
    np.testing.assert_allclose(plain.returns, eval_fc.returns)


def test_stack_is_signed_versioned_and_drops_a_stale_policy(stacked_bundle: Path, tmp_path: Path) -> None:
    b = tmp_path / "stk"
    shutil.copytree(stacked_bundle, b)
    stacked = load_bundle(b, spec_hash="spec-x")
    assert "-s" in stacked.model_version
    write_policy(b, {"horizons": []})
    assert (b / "policy.json").exists()
    write_stack(b, OutputStack(np.tile([1.0, 0.0], (N_HORIZONS, 1)), stacked.stack.boosters))
    again = load_bundle(b, spec_hash="spec-x")
    assert again.model_version != stacked.model_version  # other weights, other signal ids
    assert stacked.stack.volatility is not None and again.stack.volatility is None  # direction-only stacks load
    assert not (b / "policy.json").exists()  # chosen for the old forecasts: no longer valid
    doc = json.loads((b / "stack.json").read_text())
    doc["weights"][0] = [0.0, 3.0]
    (b / "stack.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="sha256"):
        load_bundle(b, spec_hash="spec-x")
    (b / "manifest.json").write_text(json.dumps({"algorithm": "sha256", "files": {
        k: v for k, v in json.loads((b / "manifest.json").read_text())["files"].items() if k != "stack.json"}}))
    with pytest.raises(ArtifactError, match="not signed"):
        load_bundle(b, spec_hash="spec-x")
