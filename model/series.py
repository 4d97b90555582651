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

from common.errors import MissingCrossAssetError, MLSignalsError
from features.calculator import find_btc
from model.targets import minute_grid, raw_targets_all_anchors

log = logging.getLogger(__name__)
CACHE_DIR = Path("var/cache/features")


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


def volatility_columns(grid: pd.DataFrame, bar_minutes: int, timeframe: int = 1) -> pd.DataFrame:
    """Direction-blind inputs of the volatility-only baseline, per anchor (no future data).

    last_ret: bar return close(t)/close(t-1 bar) - 1; log_rv{k}: log realised vol of the last k bar
    returns; log_range16: log mean bar (high-low)/close over 16 bars; tod_sin/cos, weekend.
    ``grid``: candles of ``timeframe`` minutes on their full grid (a bar is ``bar_minutes /
    timeframe`` rows).
    """
    n = bar_minutes // timeframe
    close = grid["close"].to_numpy()
    r = np.log(close / pd.Series(close).shift(n).to_numpy())
    hi = pd.Series(grid["high"].to_numpy()).rolling(n, min_periods=n).max().to_numpy()
    lo = pd.Series(grid["low"].to_numpy()).rolling(n, min_periods=n).min().to_numpy()
    out = pd.DataFrame(index=grid.index)
    out["last_ret"] = np.expm1(r)
    for k in (4, 16, 96):
        out[f"log_rv{k}"] = 0.5 * np.log(strided_window_sum(r * r, n, k) / k + 1e-12)
    out["log_range16"] = np.log(strided_window_sum((hi - lo) / close, n, 16) / 16 + 1e-9)
    # time of the bar's close (the anchor candle's open + its length)
    minute_of_day = ((grid.index.hour * 60 + grid.index.minute + timeframe) % 1440).to_numpy()
    out["tod_sin"] = np.sin(2 * np.pi * minute_of_day / 1440)
    out["tod_cos"] = np.cos(2 * np.pi * minute_of_day / 1440)
    out["weekend"] = (grid.index.dayofweek >= 5).astype(float)
    return out


VOL_COLUMNS = ("log_rv4", "log_rv16", "log_rv96", "log_range16", "tod_sin", "tod_cos", "weekend")


@dataclass
class Series:
    """One symbol over one candle period on the grid of its candles (T rows).

    features [T, F] float32 unscaled (NaN in warm-up / gaps); raw_targets [T, 12] frame;
    vol [T, k] frame (baseline inputs); index: anchor times (UTC, open time of the last candle
    in the bar); step: grid rows per model bar (bar_minutes / candle timeframe; None = the bar
    size, i.e. a 1-minute grid).
    """

    symbol: str
    period: str
    index: pd.DatetimeIndex
    features: np.ndarray
    raw_targets: pd.DataFrame
    vol: pd.DataFrame
    step: int | None = None

    def rows_per_bar(self, bar_minutes: int) -> int:
        return self.step or bar_minutes

    def valid_anchors(self, context: int, bar_minutes: int) -> np.ndarray:
        """Positions i whose whole context window is finite and whose targets are complete."""
        bad = (~np.isfinite(self.features).all(axis=1)).astype(float)
        bad_in_window = strided_window_sum(bad, self.rows_per_bar(bar_minutes), context)
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


def candle_timeframe(candles: pd.DataFrame) -> int:
    """Minutes per candle: the smallest step between consecutive rows."""
    from features.calculator import infer_bar_minutes

    return infer_bar_minutes(candles.index)


def anchor_feature_matrix(
    candles: pd.DataFrame, btc: pd.DataFrame | None, symbol: str, bar_minutes: int, cache: bool = True
) -> np.ndarray:
    """Features of every anchor on the grid of ``candles``: [T_grid, F] float32.

    1-minute candles: every 1-minute anchor of N-minute bars (all alignments). Candles of
    ``bar_minutes``: the bars themselves (one alignment). Other divisors of the bar size are
    resampled per alignment like 1-minute candles.
    """
    from features.calculator import compute_features, compute_features_all_anchors
    from features.spec import FEATURE_NAMES, SPEC_HASH

    tf = candle_timeframe(candles)
    if bar_minutes % tf:
        raise MLSignalsError(f"{symbol}: {tf}-minute candles do not divide {bar_minutes}-minute bars")
    key = _file_key(candles, btc, bar_minutes, SPEC_HASH)
    path = CACHE_DIR / f"{symbol}_{bar_minutes}m_{key}.npy"
    if cache and path.exists():
        return np.load(path, allow_pickle=False)
    btc_or_self = btc if btc is not None else candles
    if tf == bar_minutes:
        bars = candles
        frame = compute_features(bars, btc_or_self.reindex(bars.index) if btc is not None else None, symbol, bar_minutes)
    elif tf == 1:
        frame = compute_features_all_anchors(candles, btc_or_self, symbol, bar_minutes)
    else:
        raise MLSignalsError(f"{symbol}: {tf}-minute candles: only 1-minute or {bar_minutes}-minute files are supported")
    # the calculator labels a row by its bar's open time; the anchor is the bar's last candle
    frame.index = frame.index + pd.Timedelta(minutes=bar_minutes - tf)
    grid_index = minute_grid(candles, tf).index
    x = frame.reindex(grid_index)[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.save(path, x, allow_pickle=False)
    return x


def load_period_dir(directory: Path) -> dict[str, pd.DataFrame]:
    """Every ``SYMBOL_*.csv[.gz]`` of one period folder, validated on its own timeframe (1-minute
    or 15-minute files). Symbols keep their own stretch of the period; ``build_series`` aligns
    them with BTC."""
    from features.candle_files import load_candle_files

    files = sorted(p for p in Path(directory).glob("*.csv*") if p.is_file())
    if not files:
        raise MLSignalsError(f"no candle files (*.csv, *.csv.gz) in {directory}")
    return load_candle_files(files, timeframe_minutes=None)


def split_alignments(s: Series, bar_minutes: int, keep: int) -> list[Series]:
    """``keep`` evenly spaced bar alignments of a 1-minute series, each as its own series on a
    bar grid (step 1 row): the same windows and targets, 1/``bar_minutes`` of the rows each.
    Neighbouring alignments share almost all of their information, so a few of them carry most
    of what all of them do, at a fraction of the memory."""
    step = s.rows_per_bar(bar_minutes)
    out = []
    for r in np.linspace(0, step, keep, endpoint=False).astype(int):
        out.append(Series(s.symbol, s.period, s.index[r::step], s.features[r::step],
                          s.raw_targets.iloc[r::step], s.vol.iloc[r::step], step=1))
    return out


def build_series(
    frames: dict[str, pd.DataFrame],
    period: str,
    bar_minutes: int,
    horizons: tuple[int, ...],
    cache: bool = True,
    alignments: int = 0,
) -> list[Series]:
    """A ``Series`` per symbol of one candle period (BTC needed for the cross-asset features).

    Symbols may cover different stretches of the period (a 15-minute span where one coin lists
    later): each keeps its own rows, and BTC must cover them. ``alignments`` > 0 keeps that many
    bar alignments of 1-minute files (``split_alignments``); 0 keeps all.
    """
    btc_name = find_btc(list(frames))
    if btc_name is None and frames:
        raise MissingCrossAssetError(
            f"{period}: cross-asset features need BTC candles over the same minutes; add the BTC file"
        )
    btc = frames[btc_name]
    out = []
    for symbol, candles in sorted(frames.items()):
        tf = candle_timeframe(candles)
        if symbol != btc_name:
            candles = candles.loc[max(candles.index[0], btc.index[0]) : min(candles.index[-1], btc.index[-1])]
            missing = ~candles.index.isin(btc.index)
            if missing.any():  # BTC has a gap where this symbol has candles: drop those candles
                candles = candles[~missing]
        if len(candles) < 2:
            continue
        log.info("features %s %s (%d candles of %d min)", period, symbol, len(candles), tf)
        x = anchor_feature_matrix(candles, btc if symbol != btc_name else None, symbol, bar_minutes, cache=cache)
        grid = minute_grid(candles, tf)
        raw = raw_targets_all_anchors(candles, bar_minutes, horizons, tf)
        vol = volatility_columns(grid, bar_minutes, tf)
        series = Series(symbol, period, grid.index, x, raw, vol, step=bar_minutes // tf)
        if alignments and series.step > 1 and alignments < series.step:
            out += split_alignments(series, bar_minutes, alignments)
        else:
            out.append(series)
    return out
