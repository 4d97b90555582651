"""Backtest replay speed: a month of 1-minute candles for 7 symbols (bybit_linear_2025-06).

Run: python benchmarks/bench_backtest.py [--model DIR] [--minutes N] [--every 1]
Times ``run_backtest`` (features, replay through InferenceEngine + SignalSink, simulation,
baselines, look-ahead check) over the first N decision minutes (default: all) and extrapolates
the replay part linearly to the whole month when N is smaller. Prints a markdown table.
Without a shipped bundle (models/default/manifest.json) it times an untrained bundle of the
shipped architecture (models/default/train_config.yaml: 15-minute bars, context 96, d_model 128,
3 layers), which costs the same per forward as the trained one.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--minutes", type=int, default=0, help="decision minutes to time (0 = all)")
    ap.add_argument("--every", type=int, default=1)
    args = ap.parse_args()

    from features.candle_files import load_candle_dir
    from mlsignals.backtest.runner import BacktestConfig, run_backtest

    frames = load_candle_dir(DATA)
    model = args.model
    if not (model / "manifest.json").exists():
        model = _shipped_shape_bundle(Path(tempfile.mkdtemp()) / "untrained", frames)
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
