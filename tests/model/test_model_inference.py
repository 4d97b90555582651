"""InferenceEngine: batched predictions, per-symbol NaN errors, compile fallback, shape errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ConfigError, ModelInputError
from model.bundle import save_bundle
from model.config import ModelConfig
from model.contract import TargetSpec
from model.inference import InferenceEngine
from model.patchtst import UnifiedPatchTST
from model.scaler import FeatureScaler, FeatureStats

F, C = 9, 32
NAMES = [f"grp.f{i}" for i in range(F)]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(n_features=F, context_length=C, patch_len=8, stride=4, d_model=16, n_heads=2, n_layers=1)
    x = np.random.default_rng(0).normal(5.0, 3.0, size=(400, F))
    return save_bundle(
        tmp_path_factory.mktemp("b") / "eng",
        UnifiedPatchTST(cfg).eval(),
        TargetSpec(),
        NAMES,
        "spec-x",
        FeatureScaler.fit(x),
        FeatureStats.from_matrix(x, NAMES),
        {},
        {},
    )


def _values(s: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(5.0, 3.0, size=(s, C, F)).astype(np.float32)


def test_batch_equals_single_calls(bundle_dir: Path) -> None:
    eng = InferenceEngine.from_bundle(bundle_dir, device="cpu", compile=False, spec_hash="spec-x")
    v = _values(5)
    syms = [f"S{i}" for i in range(5)]
    out, err = eng.predict(v, syms)
    assert not err and list(out) == syms
    single, _ = eng.predict(v[3:4], ["S3"])
    np.testing.assert_allclose(out["S3"].raw, single["S3"].raw, rtol=1e-5, atol=1e-6)
    assert eng.model_version.startswith("eng-") and eng.spec_hash == "spec-x"
    assert eng.context_length == C and eng.bar_minutes == 15 and not eng.compiled
    assert eng.feature_stats.names == tuple(NAMES)


def test_nan_input_is_a_per_symbol_error(bundle_dir: Path) -> None:
    eng = InferenceEngine.from_bundle(bundle_dir, device="cpu", compile=False, spec_hash="spec-x")
    v = _values(3)
    v[1, 4, 2] = np.nan
    v[2, -1, 7] = np.inf
    out, err = eng.predict(v, ["A", "B", "C"])
    assert list(out) == ["A"]
    assert set(err) == {"B", "C"}
    assert "NaN/inf" in err["B"] and "grp.f2" in err["B"]
    assert "grp.f7" in err["C"]


def test_wrong_shape_raises(bundle_dir: Path) -> None:
    eng = InferenceEngine.from_bundle(bundle_dir, device="cpu", compile=False, spec_hash="spec-x")
    with pytest.raises(ModelInputError, match="context=32"):
        eng.predict(np.zeros((2, C - 1, F), dtype=np.float32), ["A", "B"])
    with pytest.raises(ModelInputError):
        eng.predict(np.zeros((2, C, F), dtype=np.float32), ["A"])


def test_compile_failure_falls_back_to_eager(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_compile(*args: object, **kwargs: object) -> object:
        def fn(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("inductor: no C++ compiler")

        return fn

    monkeypatch.setattr(torch, "compile", broken_compile)
    eng = InferenceEngine.from_bundle(bundle_dir, device="cpu", compile=True, spec_hash="spec-x")
    assert not eng.compiled
    assert "no C++ compiler" in (eng.compile_error or "")
    assert "serving eager" in caplog.text
    out, err = eng.predict(_values(2), ["A", "B"])
    assert set(out) == {"A", "B"} and not err


def test_padding_to_buckets_keeps_results(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (stand-in identity) compiled function, batches are padded to the next bucket."""
    seen: list[int] = []

    def recording_compile(model: torch.nn.Module, **kwargs: object) -> object:
        def fn(x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return model(x)

        return fn

    monkeypatch.setattr(torch, "compile", recording_compile)
    eng = InferenceEngine.from_bundle(
        bundle_dir, device="cpu", compile=True, batch_buckets=(1, 4, 8), spec_hash="spec-x"
    )
    assert eng.compiled and seen == [1, 4, 8]
    v = _values(11)
    out, _ = eng.predict(v, [str(i) for i in range(11)])
    assert seen[3:] == [8, 4]  # 11 = 8 + 3 (padded to 4)
    ref = InferenceEngine.from_bundle(bundle_dir, device="cpu", compile=False, spec_hash="spec-x")
    ref_out, _ = ref.predict(v, [str(i) for i in range(11)])
    for k in out:
        np.testing.assert_allclose(out[k].raw, ref_out[k].raw, rtol=1e-5, atol=1e-6)


def test_bad_device_and_buckets(bundle_dir: Path) -> None:
    with pytest.raises(ConfigError):
        InferenceEngine.from_bundle(bundle_dir, device="tpu", compile=False, spec_hash="spec-x")
    with pytest.raises(ConfigError):
        InferenceEngine.from_bundle(bundle_dir, device="cpu", compile=False, batch_buckets=(), spec_hash="spec-x")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            InferenceEngine.from_bundle(bundle_dir, device="cuda", compile=False, spec_hash="spec-x")
