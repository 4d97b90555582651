"""Bundle: round trip without pickle, tamper and spec mismatch refused with ArtifactError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ArtifactError
from model.bundle import load_bundle, save_bundle
from model.config import ModelConfig
from model.contract import TargetSpec
from model.patchtst import UnifiedPatchTST
from model.scaler import FeatureScaler, FeatureStats, load_preprocessing, save_preprocessing

F = 10
NAMES = [f"f{i}" for i in range(F)]


def _save(tmp_path: Path) -> tuple[Path, UnifiedPatchTST, FeatureScaler]:
    torch.manual_seed(0)
    cfg = ModelConfig(n_features=F, context_length=32, patch_len=8, stride=4, d_model=16, n_heads=2, n_layers=1)
    model = UnifiedPatchTST(cfg).eval()
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(500, F))
    scaler = FeatureScaler.fit(x)
    out = save_bundle(
        tmp_path / "tiny",
        model,
        TargetSpec(),
        NAMES,
        "spec-abc",
        scaler,
        FeatureStats.from_matrix(x, NAMES),
        {"seed": 1},
        {"val": {"loss": 1.0}},
    )
    return out, model, scaler


def test_round_trip(tmp_path: Path) -> None:
    path, model, scaler = _save(tmp_path)
    b = load_bundle(path, spec_hash="spec-abc")
    assert b.feature_names == NAMES and b.spec_hash == "spec-abc"
    assert b.model_version.startswith("tiny-") and len(b.model_version) == len("tiny-") + 8
    x = torch.randn(2, 32, F)
    with torch.no_grad():
        torch.testing.assert_close(b.model(x), model(x))
    np.testing.assert_array_equal(b.scaler.mean, scaler.mean)
    assert b.feature_stats.lo.shape == (F,)
    assert b.context_length == 32 and b.bar_minutes == 15


def test_tampered_weights_refused(tmp_path: Path) -> None:
    path, _, _ = _save(tmp_path)
    w = path / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_bundle(path, spec_hash="spec-abc")


def test_tampered_config_refused(tmp_path: Path) -> None:
    path, _, _ = _save(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["target_spec"]["flat_bands"] = [0.1, 0.2, 0.3, 0.4]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="config.json"):
        load_bundle(path, spec_hash="spec-abc")


def test_missing_file_and_manifest_refused(tmp_path: Path) -> None:
    path, _, _ = _save(tmp_path)
    (path / "metrics.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_bundle(path, spec_hash="spec-abc")
    (path / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest"):
        load_bundle(path, spec_hash="spec-abc")
    with pytest.raises(ArtifactError, match="no such"):
        load_bundle(tmp_path / "nope", spec_hash="x")


def test_spec_mismatch_refused(tmp_path: Path) -> None:
    path, _, _ = _save(tmp_path)
    with pytest.raises(ArtifactError, match="feature spec spec-abc"):
        load_bundle(path, spec_hash="another-spec")


def test_scaler_round_trip_without_pickle(tmp_path: Path) -> None:
    x = np.random.default_rng(3).normal(size=(200, F)) * np.arange(1, F + 1)
    x[5, 2] = np.nan
    scaler = FeatureScaler.fit(x)
    stats = FeatureStats.from_matrix(x, NAMES)
    save_preprocessing(tmp_path / "p.npz", scaler, stats)
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:  # would raise on object arrays
        assert all(z[k].dtype != object for k in z.files)
    s2, st2 = load_preprocessing(tmp_path / "p.npz")
    np.testing.assert_array_equal(s2.transform(x), scaler.transform(x))
    z = s2.transform(x)
    assert abs(np.nanmean(z[:, 4])) < 1e-5 and abs(np.nanstd(z[:, 4]) - 1) < 1e-4
    assert st2.names == tuple(NAMES)
    np.testing.assert_array_equal(st2.hi, stats.hi)
