"""The validated policy: stored and signed in the bundle, used by the processor as stored;
calibration applied identically by serving, evaluation and the backtest (one forward)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from common.errors import ArtifactError
from mlsignals.pipeline import ModelMeta, SignalSink
from model.bundle import load_bundle, save_bundle, write_policy
from model.config import ModelConfig
from model.contract import DIRECTION_LOGITS, RAW_SIZE, ModelOutput, TargetSpec
from model.dataset import AnchorPool
from model.evaluate import forecast_from_raw
from model.inference import InferenceEngine
from model.patchtst import UnifiedPatchTST
from model.scaler import FeatureScaler, FeatureStats
from model.series import Series
from model.train import predict_raw
from signals.config import SignalConfig
from signals.policy import HorizonPolicy, TradingPolicy
from signals.processor import MLSignalProcessor
from signals.schema import Direction

F, C = 9, 32
NAMES = [f"grp.f{i}" for i in range(F)]
SPEC = TargetSpec(abs_move_flat=(0.001, 0.002, 0.003, 0.004), abs_move_moved=(0.01, 0.02, 0.03, 0.04))


def _policy(enabled: tuple[bool, bool, bool, bool], margin: float = 0.1) -> TradingPolicy:
    return TradingPolicy(
        horizons=tuple(HorizonPolicy(enabled=e, min_margin=margin if e else None, val_trades=120,
                                     val_mean_net=0.0021 if e else -0.001, val_t=2.4 if e else -1.0)
                       for e in enabled),
        fee_bps=4.0, slippage_bps=1.0)


def _output(p_long: float, p_short: float) -> ModelOutput:
    raw = np.zeros(RAW_SIZE)
    logits = np.log(np.array([p_long, p_short, 1 - p_long - p_short]))
    raw[DIRECTION_LOGITS] = np.tile(logits, 4)
    raw[24:28] = 0.01
    return ModelOutput.from_raw(raw)


def _process(proc: MLSignalProcessor, out: ModelOutput):
    return proc.process("ETHUSDT", out, entry=2000.0, atr=5.0, bar_time=datetime(2025, 6, 1, 12, 14, tzinfo=UTC),
                        model_version="m", feature_spec_hash="h", now=datetime(2025, 6, 1, 12, 15, tzinfo=UTC))


def test_validated_strategy_trades_only_enabled_horizons_beyond_their_margin() -> None:
    cfg = SignalConfig.preset("validated")
    proc = MLSignalProcessor(cfg, SPEC, _policy((False, True, False, False), margin=0.1))
    s = _process(proc, _output(0.45, 0.30))  # margin 0.15 >= 0.1 at the enabled 1h horizon
    assert s.direction is Direction.LONG and s.horizon == "1h"
    assert s.expected_edge == pytest.approx(0.0021) and s.stop_loss < 2000 < s.take_profit
    s = _process(proc, _output(0.30, 0.45))
    assert s.direction is Direction.SHORT
    s = _process(proc, _output(0.36, 0.30))  # margin 0.06 < 0.1
    assert s.direction is Direction.NEUTRAL and any("below the validated margin" in r for r in s.reasons)
    assert s.expected_edge is None
    off = MLSignalProcessor(cfg, SPEC, _policy((False,) * 4))
    s = _process(off, _output(0.8, 0.1))  # however sure the model is: no validated edge, no trade
    assert s.direction is Direction.NEUTRAL and s.reasons[0].startswith("no validated edge")
    s = _process(MLSignalProcessor(cfg, SPEC, None), _output(0.8, 0.1))
    assert s.direction is Direction.NEUTRAL and "no validated policy" in s.reasons[0]


def test_every_signal_carries_the_move_forecast() -> None:
    proc = MLSignalProcessor(SignalConfig.preset("validated"), SPEC, _policy((False,) * 4))
    s = _process(proc, _output(0.25, 0.15))
    assert s.direction is Direction.NEUTRAL and len(s.forecast) == 4
    f = s.forecast[0]
    assert f.p_move == pytest.approx(0.40) and f.band == SPEC.flat_bands[0]
    assert f.expected_abs_move == pytest.approx(0.6 * 0.001 + 0.4 * 0.01)
    assert [x.horizon for x in s.forecast] == ["15m", "1h", "4h", "12h"]


@pytest.fixture(scope="module")
def calibrated_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(n_features=F, context_length=C, patch_len=8, stride=4, d_model=16, n_heads=2, n_layers=1,
                      base_inputs=(0, 1, 2))
    model = UnifiedPatchTST(cfg).eval()
    for head in (model.head_returns, model.head_direction, model.head_hits, model.head_risk):
        torch.nn.init.normal_(head.weight, std=0.3)
    rng = np.random.default_rng(0)
    model.residual_weight.copy_(torch.tensor(rng.choice([0.0, 0.5, 1.25], RAW_SIZE), dtype=torch.float32))
    model.inv_temperature.copy_(torch.tensor(rng.uniform(0.3, 2.0, RAW_SIZE), dtype=torch.float32))
    x = rng.normal(5.0, 3.0, size=(400, F))
    return save_bundle(tmp_path_factory.mktemp("b") / "cal", model, SPEC, NAMES, "spec-x", FeatureScaler.fit(x),
                       FeatureStats.from_matrix(x, NAMES), {}, {})


def test_calibration_is_the_same_in_serving_evaluation_and_backtest(calibrated_bundle: Path) -> None:
    """Serving and the backtest call InferenceEngine.predict; evaluation calls predict_raw on a
    pool: the same unscaled windows give the same calibrated probabilities on every path, and
    they differ from the uncalibrated network's."""
    engine = InferenceEngine.from_bundle(calibrated_bundle, device="cpu", compile=False, spec_hash="spec-x")
    n = 6
    feats = np.random.default_rng(3).normal(5.0, 3.0, size=(C + n, F)).astype(np.float32)
    idx = pd.date_range("2025-01-01", periods=C + n, freq="15min")
    series = Series("X", "p", idx, feats, pd.DataFrame(index=idx), pd.DataFrame(index=idx), step=1)
    pool = AnchorPool.build([series], C, 15)
    pool.apply_scaler(engine.bundle.scaler)
    rows = np.arange(C - 1, C + n - 1)
    eval_fc = forecast_from_raw(predict_raw(engine.bundle.model, pool, rows, torch.device("cpu")))
    windows = np.stack([feats[r - C + 1 : r + 1] for r in rows])
    served, errors = engine.predict(windows, [str(i) for i in range(n)])
    assert not errors
    for i in range(n):
        np.testing.assert_allclose(served[str(i)].direction_probs, eval_fc.direction[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served[str(i)].long_hit, eval_fc.long_hit[i], rtol=1e-5, atol=1e-6)
    raw_model = UnifiedPatchTST(engine.bundle.model_config).eval()
    raw_model.load_state_dict({k: v for k, v in engine.bundle.model.state_dict().items()
                               if k not in ("residual_weight", "inv_temperature")}, strict=False)
    plain = forecast_from_raw(predict_raw(raw_model, pool, rows, torch.device("cpu")))
    assert not np.allclose(plain.direction, eval_fc.direction, atol=1e-3)


def test_the_policy_in_the_bundle_is_what_the_processor_uses(calibrated_bundle: Path, tmp_path: Path) -> None:
    import shutil

    b = tmp_path / "withpolicy"
    shutil.copytree(calibrated_bundle, b)
    version_before = load_bundle(b, spec_hash="spec-x").model_version
    pol = _policy((True, False, False, True), margin=0.07)
    write_policy(b, pol.model_dump())
    engine = InferenceEngine.from_bundle(b, device="cpu", compile=False, spec_hash="spec-x")
    assert engine.model_version != version_before  # a new policy changes signal ids
    sink = SignalSink(SignalConfig.preset("validated"))
    proc = sink._processor(ModelMeta.of(engine))
    assert proc.policy == pol
    s = _process(proc, _output(0.40, 0.30))
    assert s.direction is Direction.LONG and s.horizon in ("15m", "12h")
    # a policy the processor cannot read (e.g. a newer format) gives NEUTRAL with the reason, not an error
    odd = SignalSink(SignalConfig.preset("validated"))._processor(
        ModelMeta(**{**ModelMeta.of(engine).__dict__, "policy": {"horizons": "?"}}))
    s = _process(odd, _output(0.40, 0.30))
    assert s.direction is Direction.NEUTRAL and "policy.json is invalid" in s.reasons[0]
    # an edited policy is refused, and so is an unsigned one
    data = json.loads((b / "policy.json").read_text())
    data["horizons"][1]["enabled"] = True
    (b / "policy.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_bundle(b, spec_hash="spec-x")
    shutil.rmtree(b)
    shutil.copytree(calibrated_bundle, b)
    (b / "policy.json").write_text(json.dumps(pol.model_dump()))
    with pytest.raises(ArtifactError, match="not signed"):
        load_bundle(b, spec_hash="spec-x")
