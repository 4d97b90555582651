"""POST /predict under sustained load on loopback: throughput, latency percentiles, errors, and
the resident memory of every replica over time.

An asyncio + httpx load generator (wrk is not installed on this machine) keeps ``--concurrency``
requests in flight until ``--requests`` are done (or ``--duration`` seconds passed), cycling
through the served symbols; psutil samples each replica's RSS every ``--sample-s`` seconds.
The app is the real one (serve_app.app.build_app) on replayed time-shifted real candles, with the
shipped bundle (models/default, or ``--bundle``), real Redis and a SQLite log.

    python benchmarks/bench_load.py --requests 5000 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import cleanup_redis, pct, prepare, start_ray  # noqa: E402

APP = "mlsignals-load"


def replica_processes() -> dict[str, psutil.Process]:
    """Deployment name -> its replica process (Ray titles them ray::ServeReplica:<app>:<name>)."""
    out = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith(f"ray::ServeReplica:{APP}:"):
            out[cmd.removeprefix(f"ray::ServeReplica:{APP}:").split()[0]] = p
    return out


async def sample_rss(procs: dict[str, psutil.Process], every_s: float, out: list, stop: asyncio.Event) -> None:
    t0 = time.perf_counter()
    while not stop.is_set():
        row = {"t": time.perf_counter() - t0}
        for name, p in procs.items():
            try:
                row[name] = p.memory_info().rss / 2**20
            except psutil.Error:
                row[name] = float("nan")
        out.append(row)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def load(url: str, symbols: list[str], n: int, duration: float, concurrency: int,
               key: str | None) -> tuple[list[float], dict[str, int], float]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(n))
    deadline = time.perf_counter() + duration
    headers = {"X-API-Key": key} if key else {}

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            try:
                r = await client.post(url + "/predict", json={"symbol": symbols[i % len(symbols)]}, headers=headers)
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    continue
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - t0


async def run(url: str, symbols: list[str], args) -> tuple:
    procs = replica_processes()
    rss: list[dict] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(procs, args.sample_s, rss, stop))
    result = await load(url, symbols, args.requests, args.duration, args.concurrency, None)
    stop.set()
    await sampler
    return (*result, rss, sorted(procs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--duration", type=float, default=600, help="stop after this many seconds at the latest")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--symbols", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--bundle", help="model bundle (default: the shipped models/default)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        cfg, symbols, bundle = prepare(Path(d), args.symbols, args.bundle)
        start_ray()
        from ray import serve

        from serve_app.app import build_app

        serve.start(http_options={"host": "127.0.0.1", "port": 8123})
        serve.run(build_app({"config": str(cfg)}), name=APP, route_prefix="/")
        url = "http://127.0.0.1:8123"
        for i in range(args.warmup):
            httpx.post(url + "/predict", json={"symbol": symbols[i % len(symbols)]}, timeout=60).raise_for_status()
        lat, errors, wall, rss, names = asyncio.run(run(url, symbols, args))
        serve.shutdown()
        import yaml

        cleanup_redis(yaml.safe_load(cfg.read_text())["delivery"]["prefix"])

    ms = [x * 1e3 for x in lat]
    print(f"\nPOST /predict, concurrency {args.concurrency}, {len(ms) + sum(errors.values())} requests in "
          f"{wall:.1f}s over {len(symbols)} symbols (bundle: {Path(bundle).name})")
    print("| throughput req/s | p50 ms | p90 ms | p99 ms | max ms | errors |\n|---|---|---|---|---|---|")
    print(f"| {len(ms) / wall:.1f} | {pct(ms, 50):.1f} | {pct(ms, 90):.1f} | {pct(ms, 99):.1f} | "
          f"{max(ms) if ms else float('nan'):.1f} | {sum(errors.values())} {errors or ''} |")
    print("\nReplica RSS (MiB) over time\n| t s | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|")
    step = max(1, len(rss) // 12)
    for row in rss[::step] + ([rss[-1]] if rss and (len(rss) - 1) % step else []):
        print(f"| {row['t']:.0f} | " + " | ".join(f"{row[n]:.0f}" for n in names) + " |")
    if len(rss) >= 2:
        growth = {n: rss[-1][n] - min(r[n] for r in rss[: max(1, len(rss) // 4)]) for n in names}
        print("RSS growth, last sample vs the lowest in the first quarter (MiB): "
              + ", ".join(f"{n} {g:+.0f}" for n, g in growth.items()))


if __name__ == "__main__":
    main()
