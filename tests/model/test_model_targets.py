"""Targets use only candles strictly after t; FLAT bands / levels come from the training rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.candles import read_candles_csv, validate_candles
from model.contract import TargetSpec
from model.targets import (
    FLAT,
    LONG,
    SHORT,
    derive_target_spec,
    label_targets,
    raw_targets_all_anchors,
    target_columns,
)

CANDLES = Path(__file__).resolve().parents[2] / "data" / "candles" / "binance_spot_2024-10" / "ETHUSDT_1m.csv.gz"
H = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def eth() -> pd.DataFrame:
    return validate_candles(read_candles_csv(CANDLES), "ETHUSDT").iloc[:3000]


def test_targets_match_anchored_bars(eth: pd.DataFrame) -> None:
    """ret_h at anchor t equals the close-to-close return of the anchored N-minute bars."""
    from features.candles import resample

    raw = raw_targets_all_anchors(eth, 15, H)
    t = eth.index[1000]
    later = resample(eth, 15, t + pd.Timedelta(minutes=15 * 4))  # bars of t's alignment, 4 bars further
    close_t = eth.loc[t, "close"]
    close_t4 = later["close"].iloc[-1]
    assert raw.loc[t, "ret_h4"] == pytest.approx(close_t4 / close_t - 1)
    window = eth.loc[t + pd.Timedelta(minutes=1) : t + pd.Timedelta(minutes=60)]
    assert raw.loc[t, "up_h4"] == pytest.approx(window["high"].max() / close_t - 1)
    assert raw.loc[t, "down_h4"] == pytest.approx(1 - window["low"].min() / close_t)


def test_targets_only_use_candles_strictly_after_t(eth: pd.DataFrame) -> None:
    raw = raw_targets_all_anchors(eth, 15, H)
    t_i = 1500
    t = eth.index[t_i]
    before = raw.loc[t].copy()
    # candles before t and after the longest window may change without effect
    changed = eth.copy()
    changed.iloc[:t_i, :4] *= 1.37
    changed.iloc[t_i + 15 * 8 + 1 :, :4] *= 0.71
    after = raw_targets_all_anchors(changed, 15, H).loc[t]
    pd.testing.assert_series_equal(before, after)
    # the candle right after t is inside every window: its high moves up_h*
    bumped = eth.copy()
    bumped.iloc[t_i + 1, bumped.columns.get_loc("high")] *= 1.05
    assert raw_targets_all_anchors(bumped, 15, H).loc[t, "up_h1"] > before["up_h1"]


def test_missing_minutes_make_targets_nan(eth: pd.DataFrame) -> None:
    gappy = eth.drop(eth.index[2000])
    raw = raw_targets_all_anchors(gappy, 15, H)
    assert raw.loc[eth.index[1990], "up_h1"] != raw.loc[eth.index[1990], "up_h1"]  # NaN
    assert np.isfinite(raw.loc[eth.index[1900], "up_h1"])


def test_labels_follow_bands_and_levels() -> None:
    spec = TargetSpec(bar_minutes=15, horizons=(1, 2, 3, 4), flat_bands=(0.01,) * 4, levels=(0.02,) * 4)
    raw = {}
    for h in spec.horizons:
        raw[f"ret_h{h}"] = np.array([0.02, -0.02, 0.005])
        raw[f"up_h{h}"] = np.array([0.03, 0.0, 0.01])
        raw[f"down_h{h}"] = np.array([0.0, 0.025, 0.02])
    lab = label_targets(raw, spec)
    assert lab.direction[:, 0].tolist() == [LONG, SHORT, FLAT]
    assert lab.long_hit[:, 0].tolist() == [1, 0, 0]
    assert lab.short_hit[:, 0].tolist() == [0, 1, 1]
    assert lab.risk[0].tolist() == [0.0, 0.03, 0.0, 0.03]


def test_derived_spec_from_training_rows(eth: pd.DataFrame) -> None:
    raw = raw_targets_all_anchors(eth, 15, H).dropna()
    spec = derive_target_spec(raw, 15, H, flat_quantile=0.33, level_quantile=0.5)
    lab = label_targets(raw, spec)
    flat_share = (lab.direction == FLAT).mean(axis=0)
    np.testing.assert_allclose(flat_share, 0.33, atol=0.03)
    assert list(spec.flat_bands) == sorted(spec.flat_bands)  # longer horizon, wider band


def test_no_target_column_is_a_feature_name() -> None:
    cols = set(target_columns(H)) | set(target_columns((1, 4, 16, 48)))
    from features.spec import FEATURE_NAMES

    assert not cols & set(FEATURE_NAMES)
    assert not any(n.startswith(("ret_h", "up_h", "down_h", "target")) for n in FEATURE_NAMES)
