"""`mlsignals policy` on real candles with the tiny test bundle: the backtest engine chooses the
policy, it is signed into the bundle, and the validated strategy trades exactly what it allows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsignals.backtest.policy import evaluate_policy, fit_policy, validation_outputs
from mlsignals.cli import main
from model.bundle import load_bundle
from signals.costs import CostModel
from signals.policy import TradingPolicy

SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
LENIENT = (("min_confidence", 0.0), ("min_agreement", 0.0), ("min_quality", 0.0), ("max_entropy", 1.0),
           ("require_return_agreement", False), ("ood_max_fraction", 1.0))


@pytest.fixture(scope="module")
def frames(shipped_candles) -> dict[str, pd.DataFrame]:
    return {s: shipped_candles[s].iloc[:2500] for s in SYMS}


@pytest.mark.slow
def test_policy_is_chosen_by_simulated_trades_and_respects_costs(bundle, frames) -> None:
    vo, engine = validation_outputs(frames, bundle, every=3, progress=False)
    assert len(vo.pos) > 1000 and vo.margin.shape == (len(vo.pos), 4)
    free, cand_free = fit_policy([vo], engine, CostModel(0, 0), min_t=-1e9)
    costly, cand_costly = fit_policy([vo], engine, CostModel(200, 100), min_t=-1e9)
    # the same margins and trades, only the costs differ: every candidate's mean drops by 6 %
    for a, b in zip(cand_free, cand_costly, strict=True):
        if a["trades"] and b["trades"] == a["trades"]:
            assert b["mean_net"] < a["mean_net"] - 0.05
    assert not costly.any_enabled  # nothing survives 3 % per round trip
    walks = free.validation["walk_forward"]
    for h, c, walk in zip(free.horizons, range(4), walks, strict=True):
        cands = [x for x in cand_free[c * 6 : c * 6 + 6] if x["trades"] >= 30 and x["t"] is not None]
        best = max(cands, key=lambda x: x["t"], default=None)  # by t over the whole period
        out_of_sample = walk["trades"] >= 30 and (walk["mean_net"] or 0) > 0
        assert h.enabled == (best is not None and best["mean_net"] > 0 and out_of_sample)
        assert (h.val_trades, h.val_mean_net, h.val_t) == (walk["trades"], walk["mean_net"], walk["t"])
        if h.enabled:
            assert h.min_margin == best["min_margin"]
    assert any(w["trades"] for w in walks)  # the walk-forward traded: the checks above are not vacuous
    combined = evaluate_policy([vo], engine, free, CostModel(0, 0))
    assert (combined["trades"] > 0) == free.any_enabled


@pytest.mark.slow
def test_policy_cli_signs_the_policy_into_the_bundle(bundle, frames, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    before = load_bundle(b).model_version
    files = []
    for s, f in frames.items():
        p = tmp_path / f"{s}_1m.csv"
        f.reset_index().to_csv(p, index=False)
        files.append(str(p))
    main(["policy", "--model", str(b), "--candles", *files, "--every", "5", "--min-t", "1.5", "--no-progress",
          "--json"])
    stored = json.loads((b / "policy.json").read_text())
    policy = TradingPolicy.from_dict(stored)
    loaded = load_bundle(b)
    assert loaded.policy == stored and loaded.model_version != before
    assert np.isfinite([c["min_margin"] for c in stored["validation"]["candidates"]]).all()
    assert all((h.val_t or 0) >= 1.5 and (h.val_mean_net or 0) > 0 for h in policy.horizons if h.enabled)


# ----------------------------------------------------------------------------- 15-minute spans
def _whole_bars(f: pd.DataFrame) -> pd.DataFrame:
    """Real 1-minute candles aggregated into the 15-minute bars a 15-minute file holds."""
    agg = f.resample("15min").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    return agg[f["close"].resample("15min").count() == 15]


@pytest.mark.slow
def test_a_15_minute_span_decides_what_the_service_decides_at_bar_closes(bundle15, shipped_candles) -> None:
    from features.calculator import RealTimeIndicatorCalculator
    from mlsignals.backtest.decisions import Market, PrecomputedFeatures
    from mlsignals.backtest.policy import _decide, _single
    from mlsignals.backtest.runner import _features
    from model.bundle import load_bundle
    from signals.config import SignalConfig
    from signals.processor import MLSignalProcessor

    minutes = {s: shipped_candles[s].iloc[:11000] for s in SYMS}
    bars = {s: _whole_bars(f) for s, f in minutes.items()}
    vo, engine = validation_outputs(bars, bundle15, every=1, progress=False)
    m15 = vo.market
    assert m15.step == pd.Timedelta(minutes=15) and len(vo.pos) > 3 * 100
    # the service at the minute each bar closes: same entry, bar time, ATR and feature window
    m1 = Market.from_frames(minutes)
    ctx, required = engine.context_length, RealTimeIndicatorCalculator(bar_minutes=15).required_minutes
    s1 = PrecomputedFeatures(m1, _features(minutes, m1, 15), 15, ctx, required)
    s15 = PrecomputedFeatures(m15, _features(bars, m15, 15), 15, ctx, required)
    checked = 0
    for p in np.unique(vo.pos)[::7]:
        for s in SYMS:
            a, b = s15.result(s, int(p)), s1.result(s, m1.pos(m15.last_minute(int(p))))
            assert (a.window is None) == (b.window is None) and a.entry == b.entry and a.bar_time == b.bar_time
            if a.window is not None:
                np.testing.assert_allclose(a.window, b.window, rtol=2e-5, atol=2e-5)
                assert a.atr == pytest.approx(b.atr, rel=1e-5)
                checked += 1
    assert checked > 30
    # a trade decided on bar p may use bars p+1 .. p + horizon/15 (the one closing at expiry)
    spec = load_bundle(bundle15).target_spec
    for k in range(4):
        pol = TradingPolicy(horizons=_single(k, 0.0), fee_bps=0, slippage_bps=0)
        config = SignalConfig.preset("validated", **dict(LENIENT))
        d = _decide(vo, np.arange(len(vo.pos)), MLSignalProcessor(config, spec, pol), engine)
        traded = d.side != 0
        assert traded.any()
        assert (d.expiry_pos[traded] - d.pos[traded] == spec.horizon_minutes(k) // 15).all()

