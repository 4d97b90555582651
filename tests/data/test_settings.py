"""Configuration: YAML + environment overrides, and invalid values stop start-up naming key,
value and what is allowed (never echoing secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from mlsignals.settings import load_settings


def test_default_config_loads():
    s = load_settings()
    assert "BTCUSDT" in s.symbols and s.data.source == "replay"
    assert s.redis_url is None
    assert s.database_url_value().startswith("sqlite:///")
    assert s.model_path.name == "default"


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("MLSIGNALS_SCHEDULER__DELAY_SECONDS", "7.5")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    s = load_settings()
    assert s.scheduler.delay_seconds == 7.5
    assert s.redis_url_value() == "redis://127.0.0.1:6379/3"


def test_invalid_value_names_key_value_and_rule(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("scheduler:\n  delay_seconds: -3\ndata:\n  source: carrier-pigeon\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(cfg)
    msg = str(ei.value)
    assert "scheduler.delay_seconds = -3" in msg and "greater than or equal to 0" in msg
    assert "data.source = 'carrier-pigeon'" in msg and "'replay', 'sql' or 'ccxt'" in msg


def test_invalid_symbol_and_unknown_key(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("symbols: [btc-usdt]\nsymbolz: [X]\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(cfg)
    assert "symbols" in str(ei.value) and "symbolz" in str(ei.value)


def test_secrets_are_never_echoed(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("DATABASE_URL", "12345")  # wrong type is fine as a str; force an error below
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("redis_url: {password: hunter2}\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(cfg)
    assert "hunter2" not in str(ei.value)
    s = load_settings()
    assert "12345" not in repr(s)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
