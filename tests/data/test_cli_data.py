"""`mlsignals data import / coverage` as a user runs them (subprocess, real exit codes)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from common.db import make_engine
from tests.conftest import CANDLE_DIR

pytestmark = pytest.mark.services


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlsignals.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def _write_csv(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _real_lines(n: int) -> list[str]:
    with gzip.open(CANDLE_DIR / "binance_spot_2024-10" / "ETHUSDT_1m.csv.gz", "rt") as f:
        return [next(f).strip() for _ in range(n + 1)]


def test_import_then_coverage(tmp_path: Path, db_url: str):
    good = _write_csv(tmp_path / "ETHUSDT_1m.csv.gz", _real_lines(300))
    r = run_cli("data", "import", str(good), "--exchange", "binance", "--database-url", db_url, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["imported"][0]["rows"] == 300
    r = run_cli("data", "coverage", "--source", "sql", "--exchange", "binance", "--database-url", db_url, "--json")
    assert r.returncode == 0, r.stderr
    cov = json.loads(r.stdout)["symbols"]
    assert cov == [{"symbol": "ETHUSDT", "exchange": "binance", "first": "2024-10-01T03:00:00+00:00",
                    "last": "2024-10-01T07:59:00+00:00", "rows": 300, "gaps": 0, "missing_minutes": 0,
                    "served": False}]


def test_bad_row_imports_nothing_and_names_time_and_rule(tmp_path: Path, db_url: str):
    lines = _real_lines(200)
    cols = lines[151].split(",")
    cols[2] = str(float(cols[4]) * 0.5)  # high below close
    lines[151] = ",".join(cols)
    bad = _write_csv(tmp_path / "ETHUSDT_1m.csv.gz", lines)
    r = run_cli("data", "import", str(bad), "--database-url", db_url)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0  # one line
    assert "ETHUSDT @ 2024-10-01T05:30:00+00:00: high below max(open, close)" in r.stderr
    engine = make_engine(db_url)
    if inspect(engine).has_table("candles"):
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM candles")).scalar() == 0


def test_shipped_coverage_json():
    r = run_cli("data", "coverage", "--source", "replay", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["symbols"]
    assert len(rows) == 15
    assert all(x["gaps"] == 0 for x in rows)
    bybit_btc = next(x for x in rows if x["file"] == "bybit_linear_2025-06/BTCUSDT_1m.csv.gz")
    assert bybit_btc["rows"] == 43200


def test_help_and_unknown_file():
    assert run_cli("data", "import", "--help").returncode == 0
    r = run_cli("data", "import", "/nonexistent/BTCUSDT.csv")
    assert r.returncode != 0 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_multi_value_candles_option_and_usage_errors_are_one_line():
    from mlsignals.cli import expand_multi_value_options

    assert expand_multi_value_options(["predict", "--candles", "A", "B", "--json"]) == [
        "predict", "--candles", "A", "--candles", "B", "--json"]
    assert expand_multi_value_options(["x", "--candles", "A", "--symbol", "S"]) == ["x", "--candles", "A", "--symbol", "S"]
    r = run_cli("--bogus")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "No such option" in r.stderr
