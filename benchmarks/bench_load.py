"""POST /predict under sustained load on loopback: throughput, latency percentiles, errors, and
the resident memory of every replica over time, for the two paths a request can take.

An asyncio + httpx load generator (wrk is not installed on this machine) keeps ``--concurrency``
requests in flight until ``--requests`` are done (or ``--duration`` seconds passed), cycling
through the served symbols; psutil samples each replica's RSS every ``--sample-s`` seconds.
The app is the real one (serve_app.app.build_app) on replayed time-shifted real candles, with the
shipped bundle (models/default, or ``--bundle``), real Redis and a SQLite log.

Two phases, each of ``--requests`` requests (``--paths`` picks them):

- ``full``: no tick has run for the minute, so every request takes the full path (features ->
  model -> signal stage, four hops; ``X-Signal-Source: computed``).
- ``tick``: the scheduler's work is done first: ``POST /tick`` for the latest closed minute, and
  again as soon as each new minute closes (what the scheduler does, with no delay), while the
  load runs. Requests are then answered from the tick (``X-Signal-Source: tick``) except those
  that arrive after a minute closed and before its tick finished, which compute; both are
  reported, split by the header.

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
               key: str | None) -> tuple[dict[str, list[float]], dict[str, int], float]:
    """Latencies (s) by the ``X-Signal-Source`` of each answer, errors by status or exception."""
    latencies: dict[str, list[float]] = {}
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
            latencies.setdefault(r.headers.get("x-signal-source", "unmarked"), []).append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - t0


async def ticker(url: str, stop: asyncio.Event, ticks: list[float]) -> None:
    """POST /tick for the latest closed minute now and whenever a new minute closes, until
    ``stop``: the scheduler's work (with no delay) while the load runs; seconds per tick kept."""
    from features.sources.base import last_closed_minute

    done = None
    async with httpx.AsyncClient(timeout=120) as client:
        while not stop.is_set():
            minute = last_closed_minute()
            if minute != done:
                t0 = time.perf_counter()
                (await client.post(url + "/tick")).raise_for_status()
                ticks.append(time.perf_counter() - t0)
                done = minute
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)


async def run(url: str, symbols: list[str], args) -> tuple:
    procs = replica_processes()
    rss: list[dict] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(procs, args.sample_s, rss, stop))
    phases: dict[str, tuple] = {}
    ticks: list[float] = []
    if "full" in args.paths:
        phases["full"] = await load(url, symbols, args.requests, args.duration, args.concurrency, None)
    if "tick" in args.paths:
        stop_ticks = asyncio.Event()
        tick_task = asyncio.create_task(ticker(url, stop_ticks, ticks))
        while not ticks and not tick_task.done():  # the first tick is in before the load starts
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(timeout=60) as client:  # the tick path's own warm-up
            for i in range(args.warmup):
                (await client.post(url + "/predict", json={"symbol": symbols[i % len(symbols)]})).raise_for_status()
        phases["tick"] = await load(url, symbols, args.requests, args.duration, args.concurrency, None)
        stop_ticks.set()
        await tick_task
    stop.set()
    await sampler
    return phases, ticks, rss, sorted(procs)


def table_row(label: str, ms: list[float], wall: float, errors: dict[str, int] | None) -> str:
    err = "" if errors is None else f"{sum(errors.values())} {errors or ''}"
    return (f"| {label} | {len(ms)} | {len(ms) / wall:.1f} | {pct(ms, 50):.1f} | {pct(ms, 90):.1f} | "
            f"{pct(ms, 95):.1f} | {pct(ms, 99):.1f} | {max(ms) if ms else float('nan'):.1f} | {err} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--duration", type=float, default=600, help="stop after this many seconds at the latest")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--symbols", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--bundle", help="model bundle (default: the shipped models/default)")
    ap.add_argument("--paths", default="full,tick", help="phases to run, in order: full, tick or both")
    args = ap.parse_args()
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]

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
        phases, ticks, rss, names = asyncio.run(run(url, symbols, args))
        serve.shutdown()
        import yaml

        cleanup_redis(yaml.safe_load(cfg.read_text())["delivery"]["prefix"])

    print(f"\nPOST /predict, concurrency {args.concurrency}, {len(symbols)} symbols (bundle: {Path(bundle).name}); "
          f"load average at the end {' / '.join(f'{x:.1f}' for x in psutil.getloadavg())} on "
          f"{psutil.cpu_count()} CPUs")
    print("| phase / answered by | requests | req/s | p50 ms | p90 ms | p95 ms | p99 ms | max ms | errors |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for phase, (lat, errors, wall) in phases.items():
        ms = {src: [x * 1e3 for x in v] for src, v in lat.items()}
        every = [x for v in ms.values() for x in v]
        label = "full path (no tick for the minute)" if phase == "full" else "with ticks: all requests"
        print(table_row(label, every, wall, errors))
        if phase == "tick":
            for src in sorted(ms):
                print(table_row(f"with ticks: {src}", ms[src], wall, None))
        elif set(ms) - {"computed"}:
            print(f"(unexpected sources in the full-path phase: {sorted(ms)})")
    if ticks:
        print(f"{len(ticks)} tick(s) during the tick phase, {min(ticks):.2f}-{max(ticks):.2f} s each")
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
