"""A tick spread over a simulated multi-node cluster (ray.cluster_utils.Cluster, 3 nodes, in a
subprocess: a Cluster needs its own Ray, not the session's): 210 symbols in 9 shards, two
FeatureCalculator replicas pinned to different nodes, both serving shards, every symbol one
signal; a replica killed mid-tick degrades only the shards it held to NEUTRAL-with-reason.

The symbols are real candles under other names: the 7 shipped Bybit files, and 203 aliases
(symlinks ``A000USDT_1m.csv -> ETHUSDT_1m.csv``, ...) onto the same files, so the replay source
serves them as it serves any recorded symbol."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from mlsignals.shards import shard_symbols
from serve_app.deployments import FeatureCalculator
from serve_app.scheduler import describe_shards
from tests.bundles import make_test_bundle
from tests.conftest import PROJECT_ROOT, REDIS_TEST_URL, free_port
from tests.serve.test_serve_app import write_config

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.services]
N_SYMBOLS, SHARD_SIZE, ROWS = 210, 25, 2500


def alias_dir(out: Path, shipped: dict) -> list[str]:
    """The shipped symbols (last ROWS minutes) plus aliases onto their files, BTC first."""
    out.mkdir()
    real = ["BTCUSDT", *sorted(s for s in shipped if s != "BTCUSDT")]
    for s in real:
        shipped[s].iloc[-ROWS:].to_csv(out / f"{s}_1m.csv", index_label="timestamp")
    aliases = [f"A{k:03d}USDT" for k in range(N_SYMBOLS - len(real))]
    for k, a in enumerate(aliases):
        (out / f"{a}_1m.csv").symlink_to(f"{real[1 + k % (len(real) - 1)]}_1m.csv")
    return real + aliases


def test_tick_fans_out_over_nodes_and_survives_a_killed_replica(shipped_candles, tmp_path):
    symbols = alias_dir(tmp_path / "candles", shipped_candles)
    bundle = make_test_bundle(tmp_path / "tiny", shipped_candles)
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    cfg = write_config(
        tmp_path / "config.yaml", bundle, f"sqlite:///{tmp_path / 'db.sqlite'}", prefix,
        symbols=symbols,
        data={"source": "replay", "replay_dir": str(tmp_path / "candles"), "replay_history": 2000},
        scheduler={"enabled": False, "shard_size": SHARD_SIZE, "symbol_timeout_s": 40},
    )
    t0 = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "tests/serve/scripts/cluster_fanout.py"), str(cfg),
             str(free_port())],
            capture_output=True, text=True, timeout=540, cwd=PROJECT_ROOT,
        )
        assert out.returncode == 0, out.stderr[-4000:]
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
        res = json.loads(line.removeprefix("RESULT "))
        print(f"cluster fan-out: start-up {res['startup_s']} s, script {res['total_s']} s, "
              f"test {time.monotonic() - t0:.0f} s")
        for name, rep in [*(("tick", r) for r in res["normal"]), *(("kill", k["report"]) for k in res["kills"]),
                          ("after", res["after"])]:
            print(f"{name} {rep['seconds']:.2f} s:", describe_shards(rep["shards"]))
        shards = shard_symbols(symbols, SHARD_SIZE)
        feature_nodes = set(res["feature_nodes"])

        # normal ticks: both replicas, on both feature nodes, served shards, at the same time
        served = [sh for r in res["normal"] for sh in r["shards"]]
        assert len({sh["replica"] for sh in served}) == 2, served
        assert {sh["node"] for sh in served} == feature_nodes, served
        assert any(len({sh["node"] for sh in r["shards"]}) == 2 for r in res["normal"]), "no tick used both nodes"
        for report in res["normal"]:  # every shard was sent before the first one came back
            sent, back = [sh["started_s"] for sh in report["shards"]], [sh["started_s"] + sh["seconds"]
                                                                         for sh in report["shards"]]
            assert max(sent) < min(back), report["shards"]
        # ... and each symbol in exactly one shard, with one signal
        for report in res["normal"]:
            assert set(report["signals"]) == set(symbols) and not report["errors"], report["errors"]
            assert [sh["index"] for sh in report["shards"]] == list(range(len(shards)))
            assert [sh["symbols"] for sh in report["shards"]] == [len(s) for s in shards]
            assert sum(sh["symbols"] for sh in report["shards"]) == len(symbols)  # no symbol twice
            assert all(sh["error"] is None and sh["replica_seconds"] > 0 for sh in report["shards"])
        assert res["readyz_last_tick"]["shards"] == res["normal"][-1]["shards"]  # the spread in /readyz

        # the killed replica: at most its shards degrade, to NEUTRAL with the reason
        kill = res["kills"][-1]
        report = kill["report"]
        failed = [sh for sh in report["shards"] if sh["error"]]
        assert failed, f"no kill landed mid-tick in {len(res['kills'])} tries"
        # a replica holds at most max_ongoing_requests shards at once: no more can fail with it
        assert len(failed) <= FeatureCalculator.max_ongoing_requests < len(shards)
        assert all("ActorDied" in sh["error"] or "ActorUnavailable" in sh["error"] for sh in failed), failed
        assert set(report["signals"]) == set(symbols)
        degraded = {s for sh in failed for s in shards[sh["index"]]}
        assert set(report["errors"]) == degraded
        for s in degraded:
            assert report["signals"][s] == "NEUTRAL" and "feature shard" in report["errors"][s], report["errors"][s]
        ok = [sh for sh in report["shards"] if not sh["error"]]
        assert ok and all(sh["node"] in feature_nodes for sh in ok)
        assert any(sh["node"] != kill["victim_node"] for sh in ok), report["shards"]  # the survivor served
        for s in set(symbols) - degraded:
            assert report["signals"][s] in ("LONG", "SHORT", "NEUTRAL") and s not in report["errors"]

        # the next tick: Serve replaced the replica, nothing degraded
        assert not res["after"]["errors"] and set(res["after"]["signals"]) == set(symbols)

        # delivery: on the trading stream, each symbol once for the last normal tick's minute
        minute = res["normal"][-1]["minute"][:16]
        r = redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
        deadline = time.monotonic() + 30
        while True:
            entries = [json.loads(e[1]["signal"]) for e in r.xrange(f"{prefix}:signals")]
            counts = Counter(e["symbol"] for e in entries if e["bar_time"].startswith(minute))
            if set(counts) == set(symbols) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert set(counts) == set(symbols) and set(counts.values()) == {1}
    finally:
        r = redis.Redis.from_url(REDIS_TEST_URL)
        for key in r.scan_iter(match=prefix + "*", count=1000):
            r.delete(key)
