"""Training windows equal what serving computes: the pool's context for anchor t (all-anchors
features, strided by the bar size) matches RealTimeIndicatorCalculator at the same anchor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.calculator import RealTimeIndicatorCalculator
from model.dataset import AnchorPool
from model.series import build_series

ROOT = Path(__file__).resolve().parents[2] / "data" / "candles" / "bybit_linear_2025-06"
CONTEXT, BAR = 24, 15


@pytest.mark.slow
def test_training_window_matches_live_features() -> None:
    from features.candle_files import load_candle_dir

    frames = {s: f.iloc[:10_600] for s, f in load_candle_dir(ROOT).items() if s in ("BTCUSDT", "SOLUSDT")}
    series = build_series(frames, "parity", BAR, (1, 2, 3, 4), cache=False)
    pool = AnchorPool.build(series, CONTEXT, BAR)
    sol = pool.symbols.index("SOLUSDT")
    rows = pool.valid[pool.series_id[pool.valid] == sol]
    # two anchors of different bar alignments, the later one 7 minutes after the other
    for row in (rows[-1] - 60, rows[-1] - 53):
        anchor = pool.times[row]
        calc = RealTimeIndicatorCalculator(bar_minutes=BAR, n_rows=CONTEXT)
        live = calc.compute({s: f.loc[:anchor] for s, f in frames.items()}, anchor=anchor)
        assert not live.errors, live.errors
        i = live.symbols.index("SOLUSDT")
        assert live.bar_times[i] == anchor - pd.Timedelta(minutes=BAR - 1)  # open time of the last bar
        offs = BAR * np.arange(CONTEXT - 1, -1, -1)
        train_window = pool.unscaled[row - offs]
        np.testing.assert_allclose(live.values[i], train_window, rtol=1e-4, atol=1e-6)
