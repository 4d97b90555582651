"""`mlsignals evaluate` end to end on real candles with a tiny bundle of the current feature spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss

from features.spec import FEATURE_NAMES, SPEC_HASH
from mlsignals.cli import main
from model.baselines import BaselineInputs, Baselines
from model.bundle import save_bundle
from model.config import ModelConfig
from model.contract import TargetSpec
from model.patchtst import UnifiedPatchTST
from model.scaler import FeatureScaler, FeatureStats
from model.series import VOL_COLUMNS
from model.targets import LabelledTargets

ROOT = Path(__file__).resolve().parents[2] / "data" / "candles" / "bybit_linear_2025-06"
F = len(FEATURE_NAMES)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights and baselines fitted on random rows: the path is under test, not skill."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = ModelConfig(n_features=F, context_length=32, patch_len=8, stride=8, d_model=16, n_heads=2, n_layers=1)
    x = rng.normal(size=(600, F))
    n, k = 600, len(VOL_COLUMNS)
    t = LabelledTargets(
        rng.normal(0, 0.01, (n, 4)),
        rng.integers(0, 3, (n, 4)),
        rng.integers(0, 2, (n, 4)) * 1.0,
        rng.integers(0, 2, (n, 4)) * 1.0,
        np.abs(rng.normal(0, 0.01, (n, 4))),
    )
    base = Baselines.fit(BaselineInputs(x, x, rng.normal(size=n), rng.normal(size=(n, k))), t, seed=0, lgbm_rounds=5)
    spec = TargetSpec(bar_minutes=15, horizons=(1, 2, 4, 8))
    return save_bundle(
        tmp_path_factory.mktemp("e") / "ev",
        UnifiedPatchTST(cfg).eval(),
        spec,
        list(FEATURE_NAMES),
        SPEC_HASH,
        FeatureScaler.fit(x),
        FeatureStats.from_matrix(x, FEATURE_NAMES),
        {},
        {},
        base.files(),
    )


def _slice(tmp_path: Path, symbol: str, minutes: int) -> Path:
    import pandas as pd

    df = pd.read_csv(ROOT / f"{symbol}_1m.csv.gz", nrows=minutes)
    p = tmp_path / f"{symbol}_1m.csv"
    df.to_csv(p, index=False)
    return p


def test_non_btc_without_btc_is_a_clear_error(bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    eth = _slice(tmp_path, "ETHUSDT", 200)
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--model", str(bundle_dir), "--candles", str(eth), "--json"])
    assert e.value.code == 2
    assert "BTCUSDT" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_writes_report_with_all_baselines(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [_slice(tmp_path, s, 10_500) for s in ("BTCUSDT", "ETHUSDT")]
    out = tmp_path / "report"
    args = ["evaluate", "--model", str(bundle_dir), "--out", str(out), "--stride", "11", "--json"]
    for f in files:
        args += ["--candles", str(f)]
    import model.evaluate as ev

    run, seen = ev.evaluate_candles, []  # the CLI's EvalResult, to recompute its scores independently

    def spy(*a, **k):
        seen.append(run(*a, **k))
        return seen[-1]

    monkeypatch.setattr(ev, "evaluate_candles", spy)
    main(args)
    data = json.loads(capsys.readouterr().out)
    ((result, _),) = seen
    assert data["rows"] == result.n_rows == len(result.targets.direction) > 50
    assert data["symbols"] == ["BTCUSDT", "ETHUSDT"]
    per = data["scores"]["h1"]
    assert set(per) == {"model", "majority", "last_return", "volatility", "logistic", "lightgbm"}
    # the reported model scores are those of its forecast on these rows (sklearn as the reference)
    p, y = result.model_fc.direction[:, 0, :], result.targets.direction[:, 0]
    assert per["model"]["log_loss"] == pytest.approx(sk_log_loss(y, p, labels=[0, 1, 2]), rel=1e-6)
    assert per["model"]["accuracy"] == pytest.approx(float(np.mean(p.argmax(axis=1) == y)), abs=1e-12)
    assert per["model"]["log_loss"] != per["majority"]["log_loss"]
    # a constant forecast cannot rank: AUC exactly 1/2, no IC
    assert per["majority"]["direction_auc"] == 0.5 and per["majority"]["ic"] is None
    assert per["volatility"]["long_hit_auc"] is not None
    for name in ("report.md", "evaluation.json", "calibration.png", "hit_calibration.png", "confusion.png"):
        assert (out / name).stat().st_size > 0
    assert "| log_loss |" in (out / "report.md").read_text()
