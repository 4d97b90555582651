"""A tick of N symbols through Ray Serve vs the same pipeline in one process.

Symbols are time-shifted copies of the shipped Bybit candles (symbol k = shipped symbol k mod 7
with its values rolled by k*97 minutes, BTC kept as is), written to a temporary replay
directory. The model is the shipped bundle (models/default) unless ``--bundle`` names another.
Both sides use real Redis (127.0.0.1:6379, a bench prefix) and a SQLite
outbox/log, publish and log every signal.

    python benchmarks/bench_serve.py --symbols 100 --ticks 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = PROJECT_ROOT / "data" / "candles" / "bybit_linear_2025-06"
SHIPPED_MODEL = PROJECT_ROOT / "models" / "default"
REDIS_URL = "redis://127.0.0.1:6379/0"


def make_symbol_dir(out: Path, n_symbols: int, rows: int = 12_500) -> list[str]:
    """n_symbols candle files (BTCUSDT first) under ``out``; returns the symbol names."""
    from features.candle_files import load_candle_dir

    shipped = load_candle_dir(SHIPPED)
    names = sorted(shipped)
    out.mkdir(parents=True, exist_ok=True)
    symbols = ["BTCUSDT"]
    shipped["BTCUSDT"].iloc[-rows:].to_csv(out / "BTCUSDT_1m.csv", index_label="timestamp")
    for k in range(1, n_symbols):
        base = shipped[names[k % len(names)]].iloc[-rows:]
        df = base.copy()
        df[:] = np.roll(base.to_numpy(), k * 97, axis=0)  # same minutes, other history
        sym = f"S{k:03d}USDT"
        df.to_csv(out / f"{sym}_1m.csv", index_label="timestamp")
        symbols.append(sym)
    return symbols


def write_config(path: Path, symbols: list[str], replay_dir: Path, bundle: Path, db: Path, prefix: str,
                 compile_model: bool = False) -> Path:
    cfg = {
        "symbols": symbols,
        "data": {"source": "replay", "replay_dir": str(replay_dir), "replay_history": 10_500},
        "redis_url": REDIS_URL,
        "database_url": f"sqlite:///{db}",
        "model": {"path": str(bundle), "compile": compile_model},
        "delivery": {"prefix": prefix},
        "scheduler": {"enabled": False, "symbol_timeout_s": 55},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def prepare(tmp: Path, n_symbols: int, bundle: str | None) -> tuple[Path, list[str], Path]:
    symbols = make_symbol_dir(tmp / "candles", n_symbols)
    b = Path(bundle) if bundle else SHIPPED_MODEL
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    return write_config(tmp / "config.yaml", symbols, tmp / "candles", b, tmp / "bench.db", prefix), symbols, b


def start_ray():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    return ray


def cleanup_redis(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(match=prefix + "*", count=1000):
        r.delete(key)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--bundle", help="model bundle (default: the shipped models/default)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from mlsignals import factories
    from mlsignals.settings import load_settings

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg, symbols, bundle = prepare(tmp, args.symbols, args.bundle)
        settings = load_settings(cfg)
        pipe = factories.in_process_pipeline(settings, publish=True, log_predictions=True)
        import pandas as pd

        now = pd.Timestamp.now(tz="UTC").floor("min")
        inproc = []
        pipe.run(symbols, end=now - pd.Timedelta(minutes=100), publish=True)  # warm-up
        for i in range(args.ticks):
            t0 = time.perf_counter()
            sigs = pipe.run(symbols, end=now - pd.Timedelta(minutes=i + 1), publish=True)
            inproc.append(time.perf_counter() - t0)
        assert len(sigs) == len(symbols)
        del pipe

        start_ray()
        from ray import serve

        from serve_app.app import build_app

        serve.start(http_options={"host": "127.0.0.1", "port": 0})
        t0 = time.perf_counter()
        serve.run(build_app({"config": str(cfg)}), name="mlsignals-bench", route_prefix=None)
        startup = time.perf_counter() - t0
        sched = serve.get_deployment_handle("SignalScheduler", "mlsignals-bench")
        served, inner = [], []
        # The same minutes as in-process: every tick computes fresh features (a repeated minute
        # would be served from the feature cache and flatter Serve).
        sched.tick.remote(now - pd.Timedelta(minutes=100)).result(timeout_s=300)  # warm-up
        for i in range(args.ticks):
            t0 = time.perf_counter()
            report = sched.tick.remote(now - pd.Timedelta(minutes=i + 1)).result(timeout_s=300).__dict__
            served.append(time.perf_counter() - t0)
            inner.append(report["seconds"])
            assert len(report["signals"]) == len(symbols), report
            errors = len(report["errors"])
        serve.shutdown()
        cleanup_redis(settings.delivery.prefix)

    print(f"\nTick of {len(symbols)} symbols, {args.ticks} ticks each (after one warm-up); "
          f"Serve app start {startup:.1f}s; symbol errors in the last Serve tick: {errors}; bundle {bundle}; "
          f"torch threads 1 in-process, OMP_NUM_THREADS=1 in every replica")
    print("| path | p50 s | p95 s | mean s | max s |\n|---|---|---|---|---|")
    for name, v in (("in one process (SignalPipeline)", inproc), ("Ray Serve (scheduler tick, handle)", served),
                    ("Ray Serve (inside the scheduler)", inner)):
        print(f"| {name} | {pct(v, 50):.3f} | {pct(v, 95):.3f} | {statistics.mean(v):.3f} | {max(v):.3f} |")
    print(f"\nServe / in-process (p50): {pct(served, 50) / pct(inproc, 50):.2f}x  (target <= 1.5x; p95 target <= 2 s)")


if __name__ == "__main__":
    main()
