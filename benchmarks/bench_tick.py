"""A scheduler tick of N symbols through Ray Serve, sharded over FeatureCalculator calls: p50/p95
of the tick and of each stage, the per-symbol cost of each stage, and a *projection* of the tick
to a 16-core node and a 4-node cluster from those costs (arithmetic on paper, not a measurement).

The app is the 2-core embedded layout (one replica per deployment, scheduler.shard_size 25),
real Redis (127.0.0.1:6379, a bench prefix), a SQLite outbox and prediction log, the shipped
model (``--bundle`` for another). Symbols: the 7 shipped Bybit files (last 12,500 minutes) and
aliases onto them (``S0001USDT_1m.csv -> ETHUSDT_1m.csv``): real candles under other names;
timing does not depend on the values, and each symbol's features are computed, never shared.

Two measurements per size, each at fresh minutes (the feature cache never answers):
- ticks: ``SignalScheduler.tick`` end to end; per stage, the slowest shard's time in it.
- stages alone: all N symbols through one stage at a time, as the tick calls it (features
  and signals one call per shard, the shards one after another: the service time without
  queueing or contention; model one call per symbol, all at once, so that @serve.batch
  batches them); wall / N is the per-symbol cost of the stage on this machine, the input of
  the projection.

    python benchmarks/bench_tick.py --symbols 100 500 --ticks 4
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import REDIS_URL, SHIPPED, SHIPPED_MODEL, cleanup_redis, pct, start_ray  # noqa: E402

SHARD_SIZE = 25
# (label, cores, FeatureCalculator replicas, MLManager replicas, SignalProcessor replicas)
PROJECTED = [
    ("this VM (check: compare the measured ticks)", 2, 1, 1, 1),
    # one core each for the feature replicas; the rest for MLManager (batching: one replica
    # is the most efficient), SignalProcessor, the scheduler, the proxy and Ray itself
    ("16-core node", 16, 12, 1, 1),
    ("4 nodes x 16 cores", 64, 56, 1, 1),
]


def alias_dir(out: Path, n_symbols: int, rows: int = 12_500) -> list[str]:
    from features.candle_files import load_candle_dir

    shipped = load_candle_dir(SHIPPED)
    real = ["BTCUSDT", *sorted(s for s in shipped if s != "BTCUSDT")]
    out.mkdir(parents=True, exist_ok=True)
    for s in real:
        shipped[s].iloc[-rows:].to_csv(out / f"{s}_1m.csv", index_label="timestamp")
    aliases = [f"S{k:04d}USDT" for k in range(max(0, n_symbols - len(real)))]
    for k, a in enumerate(aliases):
        (out / f"{a}_1m.csv").symlink_to(f"{real[1 + k % (len(real) - 1)]}_1m.csv")
    return (real + aliases)[:n_symbols]


def write_config(tmp: Path, symbols: list[str], bundle: Path) -> Path:
    cfg = {
        "symbols": symbols,
        "data": {"source": "replay", "replay_dir": str(tmp / "candles"), "replay_history": 10_500},
        "redis_url": REDIS_URL,
        "database_url": f"sqlite:///{tmp / 'bench.db'}",
        "model": {"path": str(bundle), "compile": False},
        "delivery": {"prefix": f"bench:{uuid.uuid4().hex[:8]}"},
        "scheduler": {"enabled": False, "symbol_timeout_s": 55, "shard_size": SHARD_SIZE},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def stages_alone(features, ml, signals, symbols: list[str], minute) -> dict[str, float]:
    """Wall seconds of each stage with all ``symbols`` through it, one stage at a time."""
    import asyncio

    from mlsignals.shards import shard_symbols

    shards = shard_symbols(symbols, SHARD_SIZE)
    meta = await ml.meta.remote()
    t0 = time.perf_counter()
    results = {}
    for sh in shards:  # one after another: the service time, no queueing (a replica computes one at a time)
        res, _ = await features.compute_shard.remote(sh, end=minute)
        results.update(res)
    t1 = time.perf_counter()
    ready = [s for s in symbols if results[s].window is not None]
    preds = await asyncio.gather(*(ml.predict.remote(s, results[s].window) for s in ready))
    t2 = time.perf_counter()
    out = dict(zip(ready, preds, strict=True))
    for sh in shards:  # one call per shard, one after another: the service time, no contention
        await signals.handle_many.remote([(results[s], *(out[s][:2] if s in out else (None, None))) for s in sh], meta)
    t3 = time.perf_counter()
    return {"features": t1 - t0, "model": t2 - t1, "signal": t3 - t2, "ready": len(ready)}


def run_size(n: int, ticks: int, bundle: Path) -> dict:
    import asyncio

    import pandas as pd
    from ray import serve

    from mlsignals.settings import load_settings
    from serve_app.app import build_app

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        symbols = alias_dir(tmp / "candles", n)
        cfg = write_config(tmp, symbols, bundle)
        app = f"bench-tick-{n}"
        t0 = time.perf_counter()
        serve.run(build_app({"config": str(cfg)}), name=app, route_prefix=None)
        startup = time.perf_counter() - t0
        sched = serve.get_deployment_handle("SignalScheduler", app)
        now = pd.Timestamp.now(tz="UTC").floor("min")
        sched.tick.remote(now - pd.Timedelta(minutes=200)).result(timeout_s=600)  # warm-up
        rows = []
        for i in range(ticks):
            r = sched.tick.remote(now - pd.Timedelta(minutes=i + 1)).result(timeout_s=600).__dict__
            assert len(r["signals"]) == n, r
            rows.append({"tick": r["seconds"], "errors": len(r["errors"]), "shards": len(r["shards"]),
                         "features": max(sh["seconds"] for sh in r["shards"]),
                         "model": max(sh["model_seconds"] for sh in r["shards"]),
                         "signal": max(sh["signal_seconds"] for sh in r["shards"])})
        handles = [serve.get_deployment_handle(x, app) for x in ("FeatureCalculator", "MLManager", "SignalProcessor")]

        async def alone(k: int):
            return await stages_alone(*handles, symbols, now - pd.Timedelta(minutes=100 + k))

        alone_runs = [asyncio.run(alone(k)) for k in range(max(2, ticks // 2))]
        serve.delete(app)
        cleanup_redis(load_settings(cfg).delivery.prefix)
    return {"n": n, "startup": startup, "ticks": rows, "alone": alone_runs}


def projection(costs: dict[str, float], n: int, r_f: int, r_m: int, r_s: int) -> dict[str, float]:
    """Projected stage seconds of an n-symbol tick. Features: the shards run ``r_f`` at a time,
    one core each; model and signal: their per-symbol cost divided over their replicas. ``tick``
    adds the stages as if sequential (an upper bound); ``overlapped`` is the slowest stage alone
    (a lower bound: the shards pipeline the stages, one shard's signals while another's features)."""
    rounds = math.ceil(math.ceil(n / SHARD_SIZE) / r_f)
    f = rounds * min(n, SHARD_SIZE) * costs["features"]
    m, s = n * costs["model"] / r_m, n * costs["signal"] / r_s
    return {"features": f, "model": m, "signal": s, "tick": f + m + s, "overlapped": max(f, m, s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--ticks", type=int, default=4)
    ap.add_argument("--bundle", help="model bundle (default: the shipped models/default)")
    args = ap.parse_args()
    bundle = Path(args.bundle) if args.bundle else SHIPPED_MODEL

    start_ray()
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    results = [run_size(n, args.ticks, bundle) for n in args.symbols]
    serve.shutdown()

    print(f"\nScheduler tick through Ray Serve, one replica per deployment, shard size {SHARD_SIZE}, "
          f"{args.ticks} ticks per size after one warm-up; bundle {bundle}")
    print("| symbols | shards | tick p50 s | tick p95 s | features p50/p95 s | model p50/p95 s | "
          "signal p50/p95 s | symbol errors |")
    print("|---|---|---|---|---|---|---|---|")
    for res in results:
        t = res["ticks"]

        def col(key: str, t=t) -> str:
            v = [x[key] for x in t]
            return f"{pct(v, 50):.2f} / {pct(v, 95):.2f}"

        print(f"| {res['n']} | {t[0]['shards']} | {pct([x['tick'] for x in t], 50):.2f} | "
              f"{pct([x['tick'] for x in t], 95):.2f} | {col('features')} | {col('model')} | {col('signal')} | "
              f"{sum(x['errors'] for x in t)} |")
    print("\n(per stage: the slowest shard's seconds in that stage; shards overlap, so they do not add up)")

    print("\nPer-symbol cost of each stage, all symbols through one stage at a time (median of runs), ms")
    print("| symbols | features | model | signal | sum |\n|---|---|---|---|---|")
    costs = {}
    for res in results:
        c = {k: float(np.median([a[k] for a in res["alone"]])) / res["n"] for k in ("features", "model", "signal")}
        costs[res["n"]] = c
        print(f"| {res['n']} | {c['features'] * 1e3:.2f} | {c['model'] * 1e3:.2f} | {c['signal'] * 1e3:.2f} | "
              f"{sum(c.values()) * 1e3:.2f} |")
    big = costs[max(costs)]  # the costs at the largest size measured (per-call overheads amortised)
    print(f"\n**Projection** (not measured): the per-symbol costs at {max(costs)} symbols; features on "
          f"one core per replica in rounds of shards, model and signal divided over their replicas; "
          "tick between the slowest stage (stages fully overlapped) and their sum (sequential)")
    print("| machine | replicas (features / model / signal) | symbols | features s | model s | signal s | "
          "tick s |\n|---|---|---|---|---|---|---|")
    for label, _cores, r_f, r_m, r_s in PROJECTED:
        for n in (100, 500):
            p = projection(big, n, r_f, r_m, r_s)
            print(f"| {label} (projection) | {r_f} / {r_m} / {r_s} | {n} | {p['features']:.2f} | {p['model']:.2f} | "
                  f"{p['signal']:.2f} | {p['overlapped']:.2f} - {p['tick']:.2f} |")


if __name__ == "__main__":
    main()
