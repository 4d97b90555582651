"""Feature calculator latency vs pandas-ta's full study, and a 100-symbol tick.

Run: python benchmarks/bench_features.py [--symbols 100] [--repeat 5]
Prints a markdown table. Uses the shipped real candles (binance_spot_2025-01); the 100 symbols of
the tick are time-shifted copies of the four real symbols (each starts at a different minute).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import pandas_ta as ta

from features.calculator import RealTimeIndicatorCalculator, compute_features
from features.candles import read_candles_csv, resample, validate_candles
from features.spec import FEATURE_NAMES, live_window

DATA = Path(__file__).resolve().parents[1] / "data" / "candles" / "binance_spot_2025-01"


def _timeit(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in milliseconds (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    real = {
        s: validate_candles(read_candles_csv(DATA / f"{s}_1m.csv.gz"), s)
        for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    }
    rows: list[tuple[str, str, float]] = []

    # one symbol, 500-candle window (15-minute bars), same candles for both
    bars = resample(real["ETHUSDT"], 15).iloc[-500:]
    btc_bars = resample(real["BTCUSDT"], 15).loc[bars.index]
    ours = _timeit(lambda: compute_features(bars, btc_bars, "ETHUSDT"), args.repeat)
    # the live path needs only the last row: windowed indicators evaluate just that row
    ours_last = _timeit(lambda: compute_features(bars, btc_bars, "ETHUSDT", tail_rows=1), args.repeat)
    study_df = bars.copy()
    n_ta = []

    def run_study() -> None:
        d = study_df.copy()
        d.ta.study(ta.AllStudy, cores=0, verbose=False)
        n_ta.append(d.shape[1] - 5)

    theirs = _timeit(run_study, max(1, args.repeat // 2))
    rows.append((f"1 symbol, 500 bars: compute_features ({len(FEATURE_NAMES)} features)", "ms", ours))
    rows.append((f"1 symbol, 500 bars: pandas-ta df.ta.study(AllStudy, cores=0) ({n_ta[-1]} columns)", "ms", theirs))
    rows.append(("1 symbol, 500 bars: compute_features(tail_rows=1) (last row, the live path)", "ms", ours_last))
    rows.append(("speed-up, all 500 rows", "x", theirs / ours))
    rows.append(("speed-up, last row", "x", theirs / ours_last))

    # a tick of N symbols: time-shifted copies of the real candles
    names = list(real)
    for n_rows in (1, 96):
        calc = RealTimeIndicatorCalculator(bar_minutes=15, n_rows=n_rows)
        need = calc.required_minutes
        tick: dict[str, pd.DataFrame] = {"BTCUSDT": real["BTCUSDT"].iloc[-need:]}
        for k in range(args.symbols - 1):
            src = real[names[1 + k % 3]]
            shift = 37 * k  # a different stretch of real history per copy, re-stamped to the tick's minutes
            piece = src.iloc[len(src) - need - shift : len(src) - shift].copy()
            piece.index = tick["BTCUSDT"].index
            tick[f"SYM{k:03d}USDT"] = piece
        for workers in (1, 2):
            calc.workers = workers
            ms = _timeit(lambda c=calc, t=tick: c.compute(t), max(1, args.repeat // 2))
            batch = calc.compute(tick)
            assert not batch.errors, list(batch.errors.values())[:3]
            rows.append(
                (
                    f"tick: {args.symbols} symbols, n_rows={n_rows} ({live_window(n_rows)} bars = "
                    f"{need} 1-min candles each), workers={workers} (threads)",
                    "ms",
                    ms,
                )
            )

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}"
    )
    print("| measurement | unit | value |\n|---|---|---|")
    for name, unit, val in rows:
        print(f"| {name} | {unit} | {val:.1f} |")


if __name__ == "__main__":
    main()
