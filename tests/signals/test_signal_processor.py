"""MLSignalProcessor: vote, filters with all reasons, OOD gate, level geometry, never raising."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from model.contract import RAW_SIZE, ModelOutput, TargetSpec
from model.feature_stats import FeatureStats
from signals.config import DeliveryConfig, SignalConfig
from signals.ood import check_row
from signals.processor import MLSignalProcessor, horizon_label
from signals.schema import Direction

BAR = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
NOW = BAR + timedelta(seconds=70)
SPEC = TargetSpec()


def _raw(direction: int = 0, strength: float = 2.0, ret: float = 0.003, risk: float = 0.01) -> np.ndarray:
    raw = np.zeros(RAW_SIZE)
    logits = np.zeros(3)
    logits[direction] = strength
    raw[4:16] = np.tile(logits, 4)
    raw[0:4] = ret if direction == 0 else -ret
    raw[16:20] = 1.0 if direction == 0 else -1.0  # long-hit logits
    raw[20:24] = -1.0 if direction == 0 else 1.0  # short-hit logits
    raw[24:28] = risk
    return raw


def _process(proc: MLSignalProcessor, output, **kw):
    args = dict(entry=100.0, atr=0.5, bar_time=BAR, model_version="v1", feature_spec_hash="fh", now=NOW)
    args.update(kw)
    return proc.process("BTCUSDT", output, **args)


def test_clear_long_and_short_signals_have_levels_on_the_right_side():
    proc = MLSignalProcessor(SignalConfig.preset("moderate"), SPEC)
    long = _process(proc, ModelOutput.from_raw(_raw(0)))
    assert long.direction is Direction.LONG, long.reasons
    assert long.stop_loss < 100.0 < long.take_profit
    short = _process(proc, ModelOutput.from_raw(_raw(1)))
    assert short.direction is Direction.SHORT, short.reasons
    assert short.take_profit < 100.0 < short.stop_loss
    assert long.id == _process(proc, ModelOutput.from_raw(_raw(1))).id  # id: symbol+bar+model only
    assert long.expires_at == BAR + timedelta(minutes=1 + 60 * {"4h": 4, "12h": 12}[long.horizon])


def test_uncertain_output_is_neutral_with_every_failing_reason():
    proc = MLSignalProcessor(SignalConfig.preset("conservative"), SPEC)
    raw = _raw(0, strength=0.1, ret=-0.002)  # barely LONG, return says SHORT
    sig = _process(proc, ModelOutput.from_raw(raw))
    assert sig.direction is Direction.NEUTRAL
    text = " | ".join(sig.reasons)
    for needle in ("confidence", "entropy", "quality", "disagrees"):
        assert needle in text, text
    assert sig.stop_loss is None and sig.take_profit is None


def test_flat_likeliest_is_neutral():
    proc = MLSignalProcessor(SignalConfig.preset("aggressive"), SPEC)
    sig = _process(proc, ModelOutput.from_raw(_raw(2, strength=3.0)))
    assert sig.direction is Direction.NEUTRAL
    assert any("FLAT is likeliest" in r for r in sig.reasons)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"output": None}, "no model output"),
        ({"error": "stale candles"}, "upstream error: stale candles"),
        ({"entry": float("nan")}, "entry price"),
        ({"entry": -3.0}, "entry price"),
    ],
)
def test_missing_output_error_or_bad_entry_is_neutral(kwargs, needle):
    proc = MLSignalProcessor(SignalConfig(), SPEC)
    output = kwargs.pop("output", ModelOutput.from_raw(_raw(0)))
    sig = _process(proc, output, **kwargs)
    assert sig.direction is Direction.NEUTRAL
    assert any(needle in r for r in sig.reasons), sig.reasons


def test_nan_and_malformed_outputs_are_neutral_never_raise():
    proc = MLSignalProcessor(SignalConfig(), SPEC)
    raw = _raw(0)
    raw[7] = np.nan
    sig = _process(proc, ModelOutput.from_raw(raw))
    assert sig.direction is Direction.NEUTRAL and "non-finite" in sig.reasons[0]
    good = ModelOutput.from_raw(_raw(0))
    bad_shape = ModelOutput(good.returns[:2], good.direction_probs, good.long_hit, good.short_hit,
                            good.risk, good.raw)
    sig = _process(proc, bad_shape)
    assert sig.direction is Direction.NEUTRAL and "malformed" in sig.reasons[0]
    sig = _process(proc, "not an output")  # type: ignore[arg-type]
    assert sig.direction is Direction.NEUTRAL


def test_ood_gate_rejects_far_rows_and_names_the_features():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 20))
    names = [f"f{i}" for i in range(20)]
    stats = FeatureStats.from_matrix(train, names)
    assert FeatureStats.from_dict(stats.to_dict()).names == tuple(names)
    proc = MLSignalProcessor(SignalConfig.preset("moderate", ood_max_fraction=0.1), SPEC)
    out = ModelOutput.from_raw(_raw(0))
    ok = _process(proc, out, features_last_row=train[0], feature_stats=stats)
    assert ok.direction is Direction.LONG, ok.reasons
    far = train[0].copy()
    far[[3, 7, 11]] = 50.0
    sig = _process(proc, out, features_last_row=far, feature_stats=stats)
    assert sig.direction is Direction.NEUTRAL
    assert any("out of distribution" in r and "f3" in r for r in sig.reasons), sig.reasons
    r = check_row(np.full(20, np.nan), stats, 8.0)
    assert r.n_nan == 20 and r.fraction_out == 1.0


def test_config_validation_names_the_key_and_presets_differ():
    with pytest.raises(ValidationError, match="min_confidence"):
        SignalConfig(min_confidence=1.5)
    with pytest.raises(ValidationError, match="sl_min"):
        SignalConfig(sl_min=0.2, sl_max=0.1)
    with pytest.raises(ValueError, match="strategy"):
        SignalConfig.preset("yolo")
    with pytest.raises(ValidationError, match="retry_cap_s"):
        DeliveryConfig(retry_base_s=5, retry_cap_s=1)
    c, a = SignalConfig.preset("conservative"), SignalConfig.preset("aggressive", tp_max=0.2)
    assert c.min_confidence > a.min_confidence and a.tp_max == 0.2 and a.strategy == "aggressive"
    assert [horizon_label(m) for m in (15, 60, 240, 720, 1440)] == ["15m", "1h", "4h", "12h", "1d"]


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(st.floats(-6, 6, allow_nan=False), min_size=RAW_SIZE, max_size=RAW_SIZE),
    entry=st.floats(1e-6, 1e7),
    atr_frac=st.one_of(st.none(), st.floats(0, 0.5)),
    preset=st.sampled_from(["conservative", "moderate", "aggressive"]),
)
def test_levels_always_on_the_right_side(raw, entry, atr_frac, preset):
    proc = MLSignalProcessor(
        SignalConfig.preset(preset, min_confidence=0, min_agreement=0, min_quality=0, max_entropy=1,
                            require_return_agreement=False),
        SPEC,
    )
    atr = None if atr_frac is None else atr_frac * entry
    sig = _process(proc, ModelOutput.from_raw(np.asarray(raw)), entry=entry, atr=atr)
    cfg = proc.config
    if sig.direction is not Direction.NEUTRAL:
        sl_frac, tp_frac = abs(sig.stop_loss / entry - 1), abs(sig.take_profit / entry - 1)
        assert cfg.sl_min * 0.999 <= sl_frac <= cfg.sl_max * 1.001
        assert cfg.tp_min * 0.999 <= tp_frac <= cfg.tp_max * 1.001
    if sig.direction is Direction.LONG:
        assert sig.stop_loss < entry < sig.take_profit
    elif sig.direction is Direction.SHORT:
        assert sig.take_profit < entry < sig.stop_loss
    else:
        assert any("FLAT" in r or "collapse" in r for r in sig.reasons), sig.reasons
    assert 0 <= sig.confidence <= 1 and 0 <= sig.strength <= 1
