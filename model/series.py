"""Per-symbol series on the 1-minute anchor grid: features, targets and baseline inputs.

One ``Series`` holds, for every anchor minute t of one symbol in one candle period, the
feature row of the N-minute bars ending at t (from ``features.calculator``), the raw targets
(``model.targets``) and the few candle-derived columns the baselines need. Windows for the
model are strided gathers: the context of anchor t is the feature rows t - N*(C-1), ..., t
(the same bar alignment), so training sees exactly what serving computes at t.

Computing features for 50,000 minutes is slow, so feature matrices are cached as .npy under
``var/cache/features`` keyed by the candle file contents, the bar size and the spec hash.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import MissingCrossAssetError
from model.targets import minute_grid, raw_targets_all_anchors

log = logging.getLogger(__name__)
CACHE_DIR = Path("var/cache/features")
BTC = "BTCUSDT"


def strided_window_sum(x: np.ndarray, step: int, k: int) -> np.ndarray:
    """out[i] = x[i] + x[i-step] + ... + x[i-step*(k-1)]; NaN where the window starts before 0.

    x [T] float; used for window validity counts and rolling means over bars of one alignment.
    """
    out = np.full(x.shape[0], np.nan)
    for r in range(step):
        sub = x[r::step]
        nan = np.isnan(sub)
        # NaN would poison a running sum for good: count NaNs separately instead
        cs = np.concatenate([[0.0], np.cumsum(np.where(nan, 0.0, sub))])
        cn = np.concatenate([[0], np.cumsum(nan)])
        n = sub.shape[0]
        vals = np.full(n, np.nan)
        if n >= k:
            win = cs[k:] - cs[: n - k + 1]
            vals[k - 1 :] = np.where(cn[k:] - cn[: n - k + 1] > 0, np.nan, win)
        out[r::step] = vals
    return out


def volatility_columns(grid: pd.DataFrame, bar_minutes: int) -> pd.DataFrame:
    """Direction-blind inputs of the volatility-only baseline, per anchor (no future data).

    last_ret: bar return close(t)/close(t-N) - 1; log_rv{k}: log realised vol of the last k bar
    returns; log_range16: log mean bar (high-low)/close over 16 bars; tod_sin/cos, weekend.
    """
    n = bar_minutes
    close = grid["close"].to_numpy()
    r = np.log(close / pd.Series(close).shift(n).to_numpy())
    hi = pd.Series(grid["high"].to_numpy()).rolling(n, min_periods=n).max().to_numpy()
    lo = pd.Series(grid["low"].to_numpy()).rolling(n, min_periods=n).min().to_numpy()
    out = pd.DataFrame(index=grid.index)
    out["last_ret"] = np.expm1(r)
    for k in (4, 16, 96):
        out[f"log_rv{k}"] = 0.5 * np.log(strided_window_sum(r * r, n, k) / k + 1e-12)
    out["log_range16"] = np.log(strided_window_sum((hi - lo) / close, n, 16) / 16 + 1e-9)
    minute_of_day = ((grid.index.hour * 60 + grid.index.minute + 1) % 1440).to_numpy()
    out["tod_sin"] = np.sin(2 * np.pi * minute_of_day / 1440)
    out["tod_cos"] = np.cos(2 * np.pi * minute_of_day / 1440)
    out["weekend"] = (grid.index.dayofweek >= 5).astype(float)
    return out


VOL_COLUMNS = ("log_rv4", "log_rv16", "log_rv96", "log_range16", "tod_sin", "tod_cos", "weekend")


@dataclass
class Series:
    """One symbol over one candle period on the minute grid (T rows).

    features [T, F] float32 unscaled (NaN in warm-up / gaps); raw_targets [T, 12] frame;
    vol [T, k] frame (baseline inputs); index: anchor minutes (UTC).
    """

    symbol: str
    period: str
    index: pd.DatetimeIndex
    features: np.ndarray
    raw_targets: pd.DataFrame
    vol: pd.DataFrame

    def valid_anchors(self, context: int, bar_minutes: int) -> np.ndarray:
        """Positions i whose whole context window is finite and whose targets are complete."""
        bad = (~np.isfinite(self.features).all(axis=1)).astype(float)
        bad_in_window = strided_window_sum(bad, bar_minutes, context)
        ok = (bad_in_window == 0) & np.isfinite(self.raw_targets.to_numpy()).all(axis=1)
        ok &= np.isfinite(self.vol.to_numpy()).all(axis=1)
        return np.flatnonzero(ok)


def _file_key(candles: pd.DataFrame, btc: pd.DataFrame | None, bar_minutes: int, spec_hash: str) -> str:
    h = hashlib.sha256()
    for frame in (candles, btc):
        if frame is not None:
            h.update(frame.index.asi8.tobytes())
            h.update(np.ascontiguousarray(frame.to_numpy()).tobytes())
    h.update(f"{bar_minutes}|{spec_hash}".encode())
    return h.hexdigest()[:20]


def feature_matrix(
    candles: pd.DataFrame, btc: pd.DataFrame | None, symbol: str, bar_minutes: int, cache: bool = True
) -> np.ndarray:
    """Features of every anchor minute on the minute grid of ``candles``: [T_grid, F] float32."""
    from features.calculator import compute_features_all_anchors
    from features.spec import FEATURE_NAMES, SPEC_HASH

    key = _file_key(candles, btc, bar_minutes, SPEC_HASH)
    path = CACHE_DIR / f"{symbol}_{bar_minutes}m_{key}.npy"
    if cache and path.exists():
        return np.load(path, allow_pickle=False)
    frame = compute_features_all_anchors(candles, btc if btc is not None else candles, symbol, bar_minutes)
    # the calculator labels a row by its bar's open time; the anchor is the bar's last minute
    frame.index = frame.index + pd.Timedelta(minutes=bar_minutes - 1)
    grid_index = minute_grid(candles).index
    x = frame.reindex(grid_index)[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.save(path, x, allow_pickle=False)
    return x


def build_series(
    frames: dict[str, pd.DataFrame], period: str, bar_minutes: int, horizons: tuple[int, ...], cache: bool = True
) -> list[Series]:
    """A ``Series`` per symbol of one candle period (BTC needed for the cross-asset features)."""
    if BTC not in frames and any(s != BTC for s in frames):
        raise MissingCrossAssetError(
            f"{period}: cross-asset features need {BTC} candles over the same minutes; add the {BTC} file"
        )
    btc = frames.get(BTC)
    out = []
    for symbol, candles in sorted(frames.items()):
        log.info("features %s %s (%d minutes)", period, symbol, len(candles))
        x = feature_matrix(candles, btc, symbol, bar_minutes, cache=cache)
        grid = minute_grid(candles)
        raw = raw_targets_all_anchors(candles, bar_minutes, horizons)
        out.append(Series(symbol, period, grid.index, x, raw, volatility_columns(grid, bar_minutes)))
    return out
