"""`backtest --ray` / `evaluate --ray`: the work split into Ray tasks (symbols, then time chunks
with their warm-up) gives exactly the local result - every trade, every metric, every score."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from features.spec import FEATURE_NAMES, SPEC_HASH
from mlsignals.backtest.decisions import Market, PrecomputedFeatures, replay
from mlsignals.backtest.runner import BacktestConfig, run_backtest
from mlsignals.distributed import (
    RayOptions,
    evaluate_candles_ray,
    replay_chunks,
    run_backtest_ray,
    task_ranges,
    with_warmup,
)
from signals.costs import CostModel

LENIENT = (("min_confidence", 0.0), ("min_agreement", 0.0), ("min_quality", 0.0), ("max_entropy", 1.0),
           ("require_return_agreement", False), ("ood_max_fraction", 1.0))
SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MINUTES = 9200  # 15-minute bars: the live warm-up (8,580 minutes) plus ~600 decision minutes


def same(a, b, path: str = "") -> None:
    """Exact equality, NaN equal to NaN, with the path of the first difference."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: {set(a) ^ set(b)}"
        for k in a:
            same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.dtype == b.dtype, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), f"{path}: {np.flatnonzero(a != b)[:5]}"
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=path)
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def frames(shipped_candles) -> dict[str, pd.DataFrame]:
    return {s: shipped_candles[s].iloc[:MINUTES] for s in SYMS}


def _cfg(bundle: Path, **kw) -> BacktestConfig:
    return BacktestConfig(model_dir=bundle, strategy="aggressive", costs=CostModel(4, 1), lookahead_samples=2,
                          progress=False, signal_overrides=LENIENT, chunk_minutes=16, **kw)


# ----------------------------------------------------------------------------- chunking, no Ray
def test_bare_ray_option_means_a_local_ray() -> None:
    from mlsignals.cli import expand_multi_value_options as expand

    assert expand(["backtest", "--candles", "A", "B", "--ray"]) == [
        "backtest", "--candles", "A", "--candles", "B", "--ray", "local"]
    assert expand(["evaluate", "--ray", "--workers", "3"]) == ["evaluate", "--ray", "local", "--workers", "3"]
    assert expand(["backtest", "--ray", "ray://head:10001", "--json"]) == [
        "backtest", "--ray", "ray://head:10001", "--json"]


def test_task_ranges_cover_every_index_once_on_batch_boundaries() -> None:
    for n, per, align in [(1, 64, 16), (100, 64, 16), (128, 64, 16), (129, 10, 16), (1000, 256, 64), (0, 8, 4)]:
        r = task_ranges(n, per, align)
        covered = np.concatenate([np.arange(a, b) for a, b in r]) if r else np.zeros(0, int)
        assert np.array_equal(covered, np.arange(n)), (n, per, align)
        assert all(a % align == 0 for a, _ in r) and all((b - a) % align == 0 for a, b in r[:-1])
    assert with_warmup(1000, 1063, 225) == (775, 1063) and with_warmup(100, 163, 225) == (0, 163)


@pytest.mark.slow
def test_chunks_read_the_same_windows_and_decide_the_same(bundle15, frames) -> None:
    """Each chunk's slice (warm-up prepended) hands the model the full run's windows, and the
    chunks' decisions, concatenated, are the full replay's - checked without Ray."""
    from features.sources.base import FrameSource
    from mlsignals.backtest.runner import _features, decision_positions, prepare_frames
    from mlsignals.factories import gap_policy, in_process_pipeline
    from mlsignals.settings import load_settings

    cfg = _cfg(bundle15, every=3)
    settings = load_settings(model={"path": str(bundle15), "compile": False, "device": "cpu"},
                             signals={"strategy": cfg.strategy, **dict(cfg.signal_overrides)})
    fr = prepare_frames(frames, gap_policy(settings))
    live = in_process_pipeline(settings, FrameSource(fr), bundle15)
    market = Market.from_frames(fr)
    stage = PrecomputedFeatures(market, _features(fr, market, 15), 15, live.engine.context_length,
                                live.features.required_minutes)
    assert stage.warmup_minutes == 15 * (live.engine.context_length - 1)
    positions = decision_positions(market, stage, cfg)
    chunks = replay_chunks(stage, positions, task_minutes=40, chunk_minutes=cfg.chunk_minutes)
    assert len(chunks) >= 4
    assert np.array_equal(np.concatenate([c.positions + c.lo for c in chunks]), positions)  # every minute once
    for c in chunks:
        assert c.lo == max(0, int(c.positions[0]) + c.lo - stage.warmup_minutes)
        sub = PrecomputedFeatures(c.market, c.features, 15, c.context, c.required_minutes, first=c.first)
        for p in (c.positions[0], c.positions[-1]):
            for s in SYMS:
                a, b = stage.result(s, int(p) + c.lo), sub.result(s, int(p))
                assert a.error == b.error and a.entry == b.entry and a.atr == b.atr
                assert np.array_equal(a.window, b.window)
    whole, _ = replay(stage, live.engine, live.sink, positions, cfg.chunk_minutes, progress=False)
    from mlsignals.backtest.decisions import Decisions

    same(Decisions.concat([c.run(live.engine, live.sink) for c in chunks]), whole)


# ----------------------------------------------------------------------------- on Ray
@pytest.mark.ray
@pytest.mark.slow
def test_backtest_on_ray_equals_the_local_run(ray_session, bundle15, frames) -> None:
    cfg = _cfg(bundle15)
    local = run_backtest(frames, cfg)
    dist = run_backtest_ray(frames, cfg, RayOptions(task_minutes=64))
    info = dist.meta.pop("distributed")
    assert info["replay"]["tasks"] >= 8 and info["features"]["tasks"] == len(SYMS)
    same(dist.decisions, local.decisions, "decisions")
    for name in local.sims:
        same(dist.sims[name], local.sims[name], f"sims[{name}]")
    same(dist.summary, local.summary, "summary")
    same(dist.lookahead, local.lookahead, "lookahead")
    for m in (dist.meta, local.meta):
        m.pop("timing_s")
    same(dist.meta, local.meta, "meta")
    trades = local.sims["model"].trades
    assert len(trades) >= 6 and (local.decisions.side != 0).sum() > 50  # not vacuous
    # positions open across a task boundary: the sequential simulation ran on the merged decisions
    bounds = {int(dist.decisions.pos[k]) for k in range(0, len(dist.decisions), 64 * len(SYMS))}
    assert any(e < b <= x for b in bounds for e, x in zip(trades.entry_pos, trades.exit_pos, strict=True))


def _eval_bundle(out: Path) -> Path:
    """Random weights (residual heads too, so every context row counts), baselines fitted on
    random rows (as tests/model/test_model_evaluate.py) and their LightGBM stacked into the
    direction forecast (model.stacking)."""
    from model.baselines import BaselineInputs, Baselines
    from model.bundle import save_bundle, write_stack
    from model.config import ModelConfig
    from model.contract import TargetSpec
    from model.patchtst import UnifiedPatchTST
    from model.scaler import FeatureScaler, FeatureStats
    from model.series import VOL_COLUMNS
    from model.stacking import OutputStack
    from model.targets import LabelledTargets

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    F, n = len(FEATURE_NAMES), 600
    cfg = ModelConfig(n_features=F, context_length=16, patch_len=8, stride=8, d_model=16, n_heads=2, n_layers=1)
    x = rng.normal(size=(n, F))
    t = LabelledTargets(rng.normal(0, 0.01, (n, 4)), rng.integers(0, 3, (n, 4)), rng.integers(0, 2, (n, 4)) * 1.0,
                        rng.integers(0, 2, (n, 4)) * 1.0, np.abs(rng.normal(0, 0.01, (n, 4))))
    base = Baselines.fit(BaselineInputs(x, x, rng.normal(size=n), rng.normal(size=(n, len(VOL_COLUMNS)))), t,
                         seed=0, lgbm_rounds=5)
    model = UnifiedPatchTST(cfg).eval()
    for head in (model.head_returns, model.head_direction, model.head_hits, model.head_risk):
        torch.nn.init.normal_(head.weight, std=0.3)  # else the output is the base's: the last row only
        torch.nn.init.normal_(head.bias, std=0.3)
    root = save_bundle(out, model, TargetSpec(bar_minutes=15, horizons=(1, 2, 4, 8)),
                       list(FEATURE_NAMES), SPEC_HASH, FeatureScaler.fit(x), FeatureStats.from_matrix(x, FEATURE_NAMES),
                       {}, {}, base.files())
    write_stack(root, OutputStack(np.tile([0.7, 0.8], (4, 1)), base.boosters))  # LightGBM pooled in
    return root


@pytest.mark.ray
@pytest.mark.slow
def test_evaluate_on_ray_equals_the_local_run(ray_session, frames, tmp_path) -> None:
    from model.evaluate import evaluate_candles

    files = []
    for s, f in frames.items():
        files.append(tmp_path / f"{s}_1m.csv")
        f.reset_index().to_csv(files[-1], index=False)
    model = _eval_bundle(tmp_path / "ev")
    local, bundle = evaluate_candles(model, files, stride=1)
    assert bundle.stack is not None
    dist, _, info = evaluate_candles_ray(model, files, stride=1, opts=RayOptions(task_rows=1024))
    assert info["forward"]["tasks"] >= 2 and info["series"]["tasks"] == len(SYMS)
    assert local.n_rows > 1024 * 2
    same(dist, local, "eval")


@pytest.mark.ray
@pytest.mark.slow
def test_cli_ray_flag_gives_the_local_json(ray_session, bundle15, frames, tmp_path, capsys) -> None:
    """`--ray` alone (no address: the in-process runner reuses the session's Ray) on both commands."""
    import json

    from tests.conftest import run_cli

    files = []
    for s in ("BTCUSDT", "ETHUSDT"):
        files.append(str(tmp_path / f"{s}_1m.csv"))
        frames[s].reset_index().to_csv(files[-1], index=False)
    bt = ["backtest", "--model", str(bundle15), "--candles", *files, "--every", "10", "--no-progress",
          "--no-baselines", "--lookahead-samples", "1", "--strategy", "aggressive", "--json"]
    runs = [run_cli(capsys, *bt, "--out", str(tmp_path / "a")),
            run_cli(capsys, *bt, "--ray", "--out", str(tmp_path / "b"))]
    assert [code for code, _, _ in runs] == [0, 0], runs
    local, dist = (json.loads(out) for _, out, _ in runs)
    assert dist["meta"].pop("distributed")["replay"]["tasks"] >= 1
    for m in (local["meta"], dist["meta"]):
        m.pop("timing_s")
    assert dist == local
    ev = ["evaluate", "--model", str(_eval_bundle(tmp_path / "ev")), "--candles", *files, "--stride", "5", "--json"]
    runs = [run_cli(capsys, *ev), run_cli(capsys, *ev, "--ray", "--workers", "2")]
    assert [code for code, _, _ in runs] == [0, 0], runs
    assert json.loads(runs[0][1]) == json.loads(runs[1][1])
