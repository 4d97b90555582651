"""Backtest replay speed: a month of 1-minute candles for 7 symbols (bybit_linear_2025-06).

Run: python benchmarks/bench_backtest.py [--model DIR] [--minutes N] [--every 1]
Times ``run_backtest`` (features, replay through InferenceEngine + SignalSink, simulation,
baselines, look-ahead check) over the first N decision minutes (default: all) and extrapolates
the replay part linearly to the whole month when N is smaller. Prints a markdown table.
Without a shipped bundle (models/default/manifest.json) it times an untrained bundle of the
shipped architecture (models/default/train_config.yaml: 15-minute bars, context 96, d_model 128,
3 layers), which costs the same per forward as the trained one.

``--ray-compare [--workers 2] [--minutes 4096]``: the same backtest locally and with ``--ray``
(a local Ray of ``--workers`` CPUs; features per symbol, replay per time chunk as tasks), each
from a cold feature cache (a fresh working directory), checks that both give the same decisions
and trades, and prints wall times, the speed-up, task counts, the overhead per task, and a no-op
task's round trip (Ray's floor). Baselines are off in this mode: they run in the driver either way.
``--eval-minutes N`` adds the same comparison for ``evaluate`` on the first N minutes (stride 7).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "candles" / "bybit_linear_2025-06"


def _shipped_shape_bundle(out: Path, frames: dict) -> Path:
    import numpy as np
    import yaml

    from features.calculator import compute_features
    from features.spec import FEATURE_NAMES, SPEC_HASH
    from model.bundle import save_bundle
    from model.config import ModelConfig
    from model.contract import TargetSpec
    from model.patchtst import UnifiedPatchTST
    from model.scaler import FeatureScaler, FeatureStats

    tc = yaml.safe_load((ROOT / "models" / "default" / "train_config.yaml").read_text())
    x = compute_features(frames["BTCUSDT"].iloc[:3000], None, "BTCUSDT").dropna().to_numpy()
    m = {k: v for k, v in tc["model"].items() if k in ModelConfig.__dataclass_fields__}
    cfg = ModelConfig(n_features=len(FEATURE_NAMES), **m)
    return save_bundle(out, UnifiedPatchTST(cfg).eval(), TargetSpec(bar_minutes=tc["bar_minutes"]), FEATURE_NAMES,
                       SPEC_HASH, FeatureScaler.fit(x), FeatureStats.from_matrix(np.asarray(x), FEATURE_NAMES),
                       {"note": "untrained, shipped architecture (benchmark)"}, {})


def _in_fresh_dir(fn):
    """fn() with a fresh working directory: model.series' feature cache (var/cache, relative)
    starts empty, for this process and for the Ray workers it starts."""
    old = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="bench_bt_"))
    try:
        return fn()
    finally:
        os.chdir(old)


def ray_compare(frames: dict, model: Path, minutes: int, every: int, workers: int, task_minutes: int) -> None:
    import numpy as np
    import ray

    from mlsignals.backtest.runner import BacktestConfig, run_backtest
    from mlsignals.distributed import RayBacktest, RayOptions

    cfg = BacktestConfig(model_dir=model, every=every, max_minutes=minutes or None, progress=False, baselines=False,
                         lookahead_samples=4)
    t = time.perf_counter()
    local = _in_fresh_dir(lambda: run_backtest(frames, cfg))
    wall_local = time.perf_counter() - t

    def distributed():
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t0
        try:
            noop = ray.remote(num_cpus=1)(lambda: None)
            ray.get([noop.remote() for _ in range(2 * workers)])  # workers up
            t1 = time.perf_counter()
            for _ in range(20):
                ray.get(noop.remote())
            rtt = (time.perf_counter() - t1) / 20
            t2 = time.perf_counter()
            ray.get([noop.remote() for _ in range(200)])
            thru = (time.perf_counter() - t2) / 200
            t3 = time.perf_counter()
            res = run_backtest(frames, cfg, executor=RayBacktest(RayOptions(workers=workers,
                                                                            task_minutes=task_minutes)))
            return res, time.perf_counter() - t3, t_init, rtt, thru
        finally:
            ray.shutdown()

    dist, wall_ray, t_init, rtt, thru = _in_fresh_dir(distributed)
    a, b = local.decisions, dist.decisions
    same = all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True) for k in a.__dataclass_fields__)
    ta, tb = local.sims["model"].trades, dist.sims["model"].trades
    same = same and all(getattr(ta, k) == getattr(tb, k) for k in ta.__dataclass_fields__)
    same = same and local.summary == dist.summary
    info = dist.meta["distributed"]
    lt, dt = local.meta["timing_s"], dist.meta["timing_s"]
    m = local.meta
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end; model {m['model_version']}; {m['minutes_decided']} decision minutes "
          f"x {len(m['symbols'])} symbols; cold feature cache; baselines off")
    print(f"| part | local (s) | --ray, {workers} workers (s) | speed-up |\n|---|---:|---:|---:|")
    for k in ("features", "replay", "total"):
        print(f"| {k} | {lt[k]:.1f} | {dt[k]:.1f} | {lt[k] / dt[k]:.2f}x |")
    print(f"| run_backtest wall | {wall_local:.1f} | {wall_ray:.1f} | **{wall_local / wall_ray:.2f}x** |")
    print(f"| ray.init (once per run, not in the wall above) | | {t_init:.1f} | |")
    for stage in ("features", "replay"):
        s = info[stage]
        print(f"| {stage} tasks: count / seconds inside tasks (sum, max) / overhead per task | | "
              f"{s['tasks']} / {s['task_s_sum']:.1f}, {s['task_s_max']:.1f} / {s['overhead_per_task_ms']:.0f} ms | |")
    print(f"| no-op task round trip / throughput cost per task | | {1e3 * rtt:.1f} ms / {1e3 * thru:.1f} ms | |")
    print(f"identical decisions, trades and metrics: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("distributed result differs from the local one")


def eval_compare(frames: dict, model: Path, minutes: int, stride: int, workers: int) -> None:
    """``evaluate`` locally and with ``--ray`` on the first ``minutes`` of the shipped candles."""
    import numpy as np
    import ray

    from mlsignals.distributed import RayOptions, evaluate_candles_ray
    from model.evaluate import evaluate_candles

    tmp = Path(tempfile.mkdtemp(prefix="bench_ev_"))
    files = []
    for s, f in frames.items():
        files.append(tmp / f"{s}_1m.csv")
        f.iloc[:minutes].reset_index().to_csv(files[-1], index=False)
    t = time.perf_counter()
    local, _ = _in_fresh_dir(lambda: evaluate_candles(model, files, stride=stride))
    wall_local = time.perf_counter() - t

    def distributed():
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            t0 = time.perf_counter()
            out = evaluate_candles_ray(model, files, stride=stride, opts=RayOptions(workers=workers, task_rows=1024))
            return out, time.perf_counter() - t0
        finally:
            ray.shutdown()

    (dist, _, info), wall_ray = _in_fresh_dir(distributed)
    same = np.array_equal(local.model_fc.direction, dist.model_fc.direction) and local.scores == dist.scores
    print(f"evaluate: {local.n_rows} rows (stride {stride}) of {minutes} minutes x {len(frames)} symbols, cold "
          f"feature cache; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"| evaluate | local (s) | --ray, {workers} workers (s) | speed-up |\n|---|---:|---:|---:|")
    print(f"| wall | {wall_local:.1f} | {wall_ray:.1f} | **{wall_local / wall_ray:.2f}x** |")
    for stage in ("series", "forward"):
        st = info[stage]
        print(f"| {stage} tasks: count / seconds inside tasks (sum, max) / overhead per task | | "
              f"{st['tasks']} / {st['task_s_sum']:.1f}, {st['task_s_max']:.1f} / {st['overhead_per_task_ms']:.0f} ms | |")
    print(f"identical scores and forecasts: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("distributed evaluation differs from the local one")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--minutes", type=int, default=0, help="decision minutes to time (0 = all)")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--ray-compare", action="store_true", help="local vs --ray with --workers CPUs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--task-minutes", type=int, default=512, help="decision minutes per Ray task")
    ap.add_argument("--eval-minutes", type=int, default=0,
                    help="with --ray-compare: also compare evaluate on this many minutes (stride 7)")
    args = ap.parse_args()

    from features.candle_files import load_candle_dir
    from mlsignals.backtest.runner import BacktestConfig, run_backtest

    frames = load_candle_dir(DATA)
    model = args.model.resolve()
    if not (model / "manifest.json").exists():
        model = _shipped_shape_bundle(Path(tempfile.mkdtemp()) / "untrained", frames)
    if args.ray_compare:
        ray_compare(frames, model, args.minutes or 4096, args.every, args.workers, args.task_minutes)
        if args.eval_minutes:
            eval_compare(frames, model, args.eval_minutes, 7, args.workers)
        return
    t = time.perf_counter()
    res = run_backtest(frames, BacktestConfig(model_dir=model, every=args.every, max_minutes=args.minutes or None,
                                                       progress=False))
    wall = time.perf_counter() - t
    m = res.meta
    replay_per_min = m["timing_s"]["replay"] / m["minutes_decided"]
    t_first = pd.Timestamp(m["first_decision"])
    full = (min(f.index[-1] for f in frames.values()) - t_first) / pd.Timedelta(minutes=args.every)
    est = wall - m["timing_s"]["replay"] + replay_per_min * full
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {m['model_version']}")
    print("| part | seconds |\n|---|---:|")
    for k, v in m["timing_s"].items():
        print(f"| {k} | {v:.1f} |")
    print(f"| run_backtest wall ({m['minutes_decided']} minutes x {len(m['symbols'])} symbols) | {wall:.1f} |")
    print(f"| replay per decided minute (7 symbols) | {1e3 * replay_per_min:.1f} ms |")
    print(f"| estimated full month ({full:.0f} minutes){' (extrapolated)' if args.minutes else ''} | {est:.0f} |")


if __name__ == "__main__":
    main()
