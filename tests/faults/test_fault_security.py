"""Security without Ray: no pickle on the model load path, secrets only from the environment and
never printed by the CLI, constant-time API-key comparison. (The running app's 401s and its
logs are checked in test_fault_service.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ArtifactError
from model.bundle import load_bundle, write_manifest
from tests.bundles import make_test_bundle
from tests.conftest import PROJECT_ROOT

LOAD_PATH_PACKAGES = ("model", "features", "signals", "mlsignals", "serve_app")


class _Boom:
    """Unpickling this runs code: it creates the sentinel file."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (Path(self.sentinel),))


@pytest.fixture(scope="module")
def bundle(shipped_candles, tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("sec") / "tiny", shipped_candles)


def _copy(bundle: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(bundle, dst)
    return dst


def test_pickled_weights_are_refused_without_running_their_code(bundle, tmp_path):
    b = _copy(bundle, tmp_path / "pickled")
    sentinel = tmp_path / "pwned"
    torch.save({"weights": _Boom(str(sentinel))}, b / "weights.safetensors")  # a pickle, renamed
    write_manifest(b)  # checksums consistent: only the format is wrong
    with pytest.raises(Exception, match="header|weights"):  # safetensors refuses to parse it
        load_bundle(b)
    assert not sentinel.exists()


def test_pickled_weights_give_a_typed_error(bundle, tmp_path):
    b = _copy(bundle, tmp_path / "pickled")
    torch.save({"weights": torch.zeros(3)}, b / "weights.safetensors")
    write_manifest(b)
    with pytest.raises(ArtifactError, match="weights"):
        load_bundle(b)


def test_pickled_preprocessing_is_refused(bundle, tmp_path):
    b = _copy(bundle, tmp_path / "npz")
    sentinel = tmp_path / "pwned"
    with np.load(b / "preprocessing.npz") as z:
        arrays = dict(z)
    arrays["scaler_mean"] = np.array([_Boom(str(sentinel))], dtype=object)
    np.savez(b / "preprocessing.npz", **arrays)  # object arrays are stored with pickle
    write_manifest(b)
    with pytest.raises(ArtifactError):
        load_bundle(b)
    assert not sentinel.exists()


def test_bundle_files_are_safetensors_and_json_only(bundle):
    kinds = sorted(p.name for p in bundle.iterdir())
    assert kinds == sorted(["config.json", "manifest.json", "metrics.json", "preprocessing.npz",
                            "weights.safetensors"]), kinds
    json.loads((bundle / "config.json").read_text())


def test_no_pickle_on_the_load_path(bundle, shipped_candles, monkeypatch):
    """Loading a bundle the way the service does (weights, preprocessing, the engine, one
    prediction) never unpickles: every unpickling entry point fails the test if reached,
    torch.load only with weights_only=True, np.load only with allow_pickle=False."""
    import pickle

    import model.bundle as bundle_mod
    from mlsignals.pipeline import read_bundle_targets
    from model.inference import InferenceEngine

    calls: list[str] = []

    def refuse(name):
        def f(*a, **k):
            calls.append(name)
            raise AssertionError(f"{name} on the load path")
        return f

    for name in ("load", "loads", "Unpickler", "_Unpickler", "_load", "_loads"):
        monkeypatch.setattr(pickle, name, refuse(f"pickle.{name}"))
    real_torch_load, real_np_load = torch.load, np.load

    def torch_load(*a, **k):
        calls.append(f"torch.load(weights_only={k.get('weights_only')})")
        return real_torch_load(*a, **{**k, "weights_only": True})

    def np_load(*a, **k):
        if k.get("allow_pickle", False):
            calls.append("np.load(allow_pickle=True)")
        return real_np_load(*a, **k)

    monkeypatch.setattr(torch, "load", torch_load)
    monkeypatch.setattr(np, "load", np_load)
    loaded = bundle_mod.load_bundle(bundle)
    read_bundle_targets(bundle)
    engine = InferenceEngine.from_bundle(bundle, compile=False)
    window = np.zeros((1, loaded.context_length, len(loaded.feature_names)), dtype=np.float32)
    outputs, errors = engine.predict(window, ["BTCUSDT"])
    assert "BTCUSDT" in outputs and not errors
    assert [c for c in calls if c != "torch.load(weights_only=True)"] == []


def test_api_key_comparison_is_constant_time(monkeypatch):
    """Every check of a given key against the configured one goes through hmac.compare_digest
    (also for a missing key or one of another length); open paths are not checked."""
    import hmac

    from fastapi.testclient import TestClient

    from serve_app import ingress

    real, seen = hmac.compare_digest, []

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(ingress.app.state, "api_key", b"s3cret-key", raising=False)
    client = TestClient(ingress.app, raise_server_exceptions=False)
    for given, expect_401 in [("s3cret-kez", True), ("short", True), (None, True), ("s3cret-key", False)]:
        seen.clear()
        headers = {} if given is None else {"X-API-Key": given}
        r = client.get("/signals/latest/BTCUSDT", headers=headers)
        assert (r.status_code == 401) is expect_401, (given, r.status_code)
        assert seen == [((given or "").encode(), b"s3cret-key")], given
    seen.clear()
    assert client.get("/healthz").status_code != 401 and seen == []


def test_secrets_come_from_the_environment_not_the_shipped_config(monkeypatch):
    from mlsignals.settings import load_settings

    for f in [PROJECT_ROOT / "configs" / "default.yaml", PROJECT_ROOT / "serve_config.yaml"]:
        if f.exists():
            text = f.read_text()
            assert not re.search(r"://[^/\s:]*:[^@\s]+@", text), f"{f}: credentials in a URL"
            assert not re.search(r"^\s*(api_key|password)\s*:\s*\S", text, re.M), f"{f}: a secret value"
    monkeypatch.setenv("REDIS_URL", "redis://:envpw@127.0.0.1:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://u:envdbpw@127.0.0.1:5432/x")
    monkeypatch.setenv("MLSIGNALS_API_KEY", "envkey")
    s = load_settings()
    assert s.redis_url_value().endswith("envpw@127.0.0.1:6379/0") and "envdbpw" in s.database_url_value()
    assert s.api_key.get_secret_value() == "envkey"
    shown = repr(s) + str(s.model_dump())
    assert not any(x in shown for x in ("envpw", "envdbpw", "envkey"))


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlsignals.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=PROJECT_ROOT, env={**os.environ, **env})


@pytest.mark.slow
def test_cli_errors_never_print_secrets(tmp_path):
    secret = "clisecret" + os.urandom(6).hex()
    redis_down = _cli(["signals", "tail", "--exit-when-idle", "--block-ms", "100"],
                      {"REDIS_URL": f"redis://:{secret}@127.0.0.1:1/0"})
    assert redis_down.returncode == 2 and "unreachable" in redis_down.stderr + redis_down.stdout
    db_down = _cli(["signals", "tail", "--exit-when-idle", "--block-ms", "100", "--paper", "--candles",
                    str(PROJECT_ROOT / "data/candles/bybit_linear_2025-06/BTCUSDT_1m.csv.gz")],
                   {"DATABASE_URL": f"postgresql+psycopg2://postgres:{secret}@127.0.0.1:1/x",
                    "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert db_down.returncode != 0
    bad_config = _cli(["signals", "tail", "--exit-when-idle"],
                      {"MLSIGNALS_API_KEY": secret, "MLSIGNALS_SCHEDULER__DELAY_SECONDS": "999",
                       "REDIS_URL": f"redis://:{secret}@127.0.0.1:1/0"})
    assert bad_config.returncode == 2 and "delay_seconds" in bad_config.stderr + bad_config.stdout
    for proc in (redis_down, db_down, bad_config):
        assert secret not in proc.stdout + proc.stderr
