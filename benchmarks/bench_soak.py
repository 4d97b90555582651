"""Soak: the whole service through Ray Serve for a long time, scheduled ticks every minute at N
symbols plus steady POST /predict load, sampling every replica's resident memory, the tick
latency and every error; prints the slopes (MiB/hour per replica, ms/hour of the tick) over the
run after a warm-up, and the errors.

Symbols are time-shifted copies of the shipped candles (as in bench_serve.py), replayed onto the
wall clock; the model is the shipped one (models/default) unless --bundle; real Redis
(127.0.0.1:6379, a bench prefix, deleted afterwards) and a SQLite outbox/log in a temp dir.

    python benchmarks/bench_soak.py --minutes 30 --symbols 100 --rps 2
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import PROJECT_ROOT, REDIS_URL, cleanup_redis, make_symbol_dir, start_ray  # noqa: E402


def write_config(tmp: Path, symbols: list[str], bundle: Path, prefix: str) -> Path:
    cfg = {
        "symbols": symbols,
        "data": {"source": "replay", "replay_dir": str(tmp / "candles"), "replay_history": 10_500},
        "redis_url": REDIS_URL,
        "database_url": f"sqlite:///{tmp / 'soak.db'}",
        "model": {"path": str(bundle), "compile": False},
        "delivery": {"prefix": prefix},
        "scheduler": {"enabled": True, "delay_seconds": 2, "symbol_timeout_s": 55},
        "var_dir": str(tmp / "var"),
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


_PIDS: dict[str, int] = {}


def replica_rss_mib(app: str) -> dict[str, float]:
    """Resident memory of every live replica of ``app`` (deployment name -> MiB; several
    replicas of one deployment are numbered). A restarted replica shows as a jump."""
    import os

    import psutil
    import ray

    out: dict[str, float] = {}
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{app}#"))
    for name in names:
        if name not in _PIDS:  # ask the replica process itself (no dashboard needed)
            with contextlib.suppress(Exception):
                actor = ray.get_actor(name, namespace="serve")
                _PIDS[name] = ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=30)
        dep = name.split("#")[1]
        key, k = dep, 1
        while key in out:
            k += 1
            key = f"{dep}[{k}]"
        with contextlib.suppress(psutil.NoSuchProcess, KeyError):
            out[key] = psutil.Process(_PIDS[name]).memory_info().rss / 2**20
    return out


def slope_per_hour(t_s: list[float], v: list[float]) -> float:
    if len(t_s) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(t_s) / 3600.0, np.asarray(v), 1)[0])


class Load(threading.Thread):
    """POST /predict for random served symbols at ``rps`` (open loop, one request at a time)."""

    def __init__(self, url: str, symbols: list[str], rps: float) -> None:
        super().__init__(daemon=True)
        self.url, self.symbols, self.period = url, symbols, 1.0 / rps if rps > 0 else 0
        self.stop = threading.Event()
        self.ok = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.latency_ms: list[float] = []

    def run(self) -> None:
        import httpx

        rng = random.Random(0)
        with httpx.Client(timeout=60) as client:
            while self.period and not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = client.post(self.url + "/predict", json={"symbol": rng.choice(self.symbols)})
                    if r.status_code == 200:
                        self.ok += 1
                        self.latency_ms.append((time.perf_counter() - t0) * 1e3)
                    else:
                        self.errors[f"HTTP {r.status_code}"] += 1
                except Exception as exc:
                    self.errors[type(exc).__name__] += 1
                self.stop.wait(max(0.0, self.period - (time.perf_counter() - t0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to run (after start-up)")
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--rps", type=float, default=2.0, help="POST /predict per second (0: none)")
    ap.add_argument("--sample-s", type=float, default=20.0, help="seconds between samples")
    ap.add_argument("--warmup-minutes", type=float, default=2.0, help="left out of the slopes")
    ap.add_argument("--bundle", default=str(PROJECT_ROOT / "models" / "default"))
    args = ap.parse_args()

    import httpx

    app = "mlsignals-soak"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        symbols = make_symbol_dir(tmp / "candles", args.symbols)
        prefix = f"soak:{uuid.uuid4().hex[:8]}"
        cfg = write_config(tmp, symbols, Path(args.bundle), prefix)
        start_ray()
        from ray import serve

        from serve_app.app import build_app

        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        t_start = time.perf_counter()
        serve.run(build_app({"config": str(cfg)}), name=app, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        startup = time.perf_counter() - t_start
        load = Load(url, symbols, args.rps)
        load.start()
        t0 = time.monotonic()
        samples: list[tuple[float, dict[str, float]]] = []
        ticks: dict[str, tuple[float, float, int]] = {}  # minute -> (t, seconds, symbols with an error)
        readyz_fail = 0
        try:
            while (now := time.monotonic() - t0) < args.minutes * 60:
                try:
                    samples.append((now, replica_rss_mib(app)))
                except Exception as exc:  # a sample lost is reported, not fatal
                    print(f"RSS sample failed at {now:.0f}s: {type(exc).__name__}: {exc}")
                try:
                    r = httpx.get(url + "/readyz", timeout=30)
                    readyz_fail += r.status_code != 200
                    last = r.json()["scheduler"]["last_tick"]
                    if last and last["minute"] not in ticks:  # a symbol failed: an error reason or no signal
                        failed = set(last["errors"]) | {s for s, d in last["signals"].items() if d == "FAILED"}
                        ticks[last["minute"]] = (now, last["seconds"], len(failed))
                except Exception:
                    readyz_fail += 1
                time.sleep(args.sample_s)
        finally:
            load.stop.set()
            load.join(60)
            serve.shutdown()
            cleanup_redis(prefix)

    warm = args.warmup_minutes * 60
    print(f"\nSoak: {args.minutes:g} min after a {startup:.0f} s start-up, {len(symbols)} symbols, scheduled ticks "
          f"every minute, POST /predict at {args.rps:g}/s; samples every {args.sample_s:g} s; slopes over the run "
          f"after the first {args.warmup_minutes:g} min\n")
    print("| replica | RSS first MiB | RSS last MiB | slope MiB/hour |\n|---|---:|---:|---:|")
    for name in sorted({k for _, s in samples for k in s}):
        pts = [(t, s[name]) for t, s in samples if name in s]
        after = [(t, v) for t, v in pts if t >= warm] or pts
        print(f"| {name} | {pts[0][1]:.0f} | {pts[-1][1]:.0f} | {slope_per_hour(*zip(*after, strict=True)):+.1f} |")
    tk = sorted(ticks.values())
    lat = [(t, s * 1e3) for t, s, _ in tk if t >= warm] or [(t, s * 1e3) for t, s, _ in tk]
    lat_ms = [v for _, v in lat]
    print(f"\nticks seen: {len(tk)} (of ~{int(args.minutes)} minutes); tick latency p50 "
          f"{np.percentile(lat_ms, 50):.0f} ms, max {max(lat_ms):.0f} ms, slope "
          f"{slope_per_hour(*zip(*lat, strict=True)) if len(lat) > 2 else float('nan'):+.0f} ms/hour"
          if lat_ms else "\nno tick seen")
    print(f"symbols with an error, summed over ticks: {sum(e for _, _, e in tk)}")
    p = load.latency_ms
    print(f"/predict: {load.ok} ok, errors {dict(load.errors) or 0}"
          + (f", p50 {np.percentile(p, 50):.0f} ms, p99 {np.percentile(p, 99):.0f} ms" if p else ""))
    print(f"/readyz not 200 in {readyz_fail} of {len(samples)} samples")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
