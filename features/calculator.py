"""Feature computation: one function for training (full history) and serving (last window).

``compute_features`` turns a bar frame (any bar size) into the spec's columns. Training calls it
on full history (``compute_features_all_anchors`` for every 1-minute alignment of N-minute bars);
serving calls it through ``RealTimeIndicatorCalculator`` on the last ``live_window(n_rows)`` bars
of every symbol, and the parity test proves both give the same rows.

Index convention: a feature row is indexed by the *open time of its bar* (the candle convention).
The bar closes at ``open + bar_minutes``; its last 1-minute candle (the "anchor") opens at
``open + bar_minutes - 1 min``. Time features use the close time.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from common.errors import InsufficientDataError, MissingCrossAssetError, MLSignalsError
from features.candles import resample
from features.indicators import INDICATORS, Ctx
from features.spec import FEATURE_NAMES, FEATURES, SPEC_HASH, live_window

_QUOTES = ("USDT", "USDC", "USD", "BUSD", "FDUSD", "PERP", "")
# The cross-asset reference asked of a source when the caller names no BTC symbol of its own.
BTC_SYMBOL = "BTCUSDT"


def is_btc(symbol: str) -> bool:
    """BTCUSDT, BTC/USDT, BTC/USDT:USDT, BTCUSD, BTC-PERP ... (base asset exactly BTC)."""
    s = re.sub(r"[^A-Z0-9]", "", symbol.upper())
    return s.startswith("BTC") and any(s[3:] in (q, q + q) or s[3:] == q + "USDT" for q in _QUOTES)


def find_btc(symbols: list[str] | dict) -> str | None:
    """The BTC symbol among ``symbols`` (None if absent)."""
    return next((s for s in symbols if is_btc(s)), None)


def infer_bar_minutes(index: pd.DatetimeIndex) -> int:
    """Bar size in minutes: the smallest step between consecutive bars (1 for a single bar)."""
    if len(index) < 2:
        return 1
    step = int(np.diff(index.as_unit("ns").asi8).min())
    return max(1, step // 60_000_000_000)


def _align_btc(bars: pd.DataFrame, btc_bars: pd.DataFrame | None, symbol: str) -> pd.DataFrame:
    if btc_bars is not None and btc_bars.index.equals(bars.index):
        return btc_bars  # the live path: both resampled over the same minutes, nothing to align
    if is_btc(symbol):
        return bars if btc_bars is None else btc_bars.reindex(bars.index)
    if btc_bars is None:
        raise MissingCrossAssetError(
            f"{symbol}: cross-asset features need BTC candles over the same minutes; none were given"
        )
    btc = btc_bars.reindex(bars.index)
    missing = btc["close"].isna().to_numpy()
    if missing.any():
        first = bars.index[int(np.argmax(missing))]
        raise MissingCrossAssetError(
            f"{symbol}: BTC candles do not cover {int(missing.sum())} of {len(bars)} bars "
            f"(first missing bar {first.isoformat()}); load BTC over the same period"
        )
    return btc


def _plan() -> list[tuple[str, dict, list[tuple[int, str | None, int]]]]:
    """The spec grouped by indicator call: (indicator, params, [(column, output, warm-up), ...]),
    so each distinct call runs once per frame and the loop does no per-feature dict work."""
    calls: dict[tuple, tuple[str, dict, list]] = {}
    for j, f in enumerate(FEATURES):
        params = dict(f.params)
        output = params.pop("output", None)
        key = (f.indicator, tuple(sorted(params.items())))
        calls.setdefault(key, (f.indicator, params, []))[2].append((j, output, f.warmup))
    return list(calls.values())


_PLAN = _plan()


def compute_features(
    bars: pd.DataFrame,
    btc_bars: pd.DataFrame | None,
    symbol: str,
    bar_minutes: int | None = None,
    tail_rows: int | None = None,
) -> pd.DataFrame:
    """Feature frame for ``bars`` (validated candles of one bar size, oldest first).

    Returns index = ``bars.index`` (bar open time), columns = ``FEATURE_NAMES``, float64. A row
    before a feature's declared warm-up is NaN. ``btc_bars`` must contain BTC's bars at every
    timestamp of ``bars`` (MissingCrossAssetError otherwise); for BTC itself it may be None and the
    cross-asset columns are then degenerate (correlation = beta = 1, relative strength = 0).
    ``bar_minutes`` is inferred from the index when not given.

    ``tail_rows``: return only the last ``tail_rows`` rows (the live path). Windowed indicators then
    evaluate only those rows' windows; recursive ones still run over all of ``bars``. The rows equal
    the last rows of the full frame (test_feature_speed_parity.py).
    """
    values = feature_matrix(bars, btc_bars, symbol, bar_minutes, tail_rows)
    return pd.DataFrame(values, index=bars.index[len(bars) - len(values) :], columns=FEATURE_NAMES)


def feature_matrix(
    bars: pd.DataFrame,
    btc_bars: pd.DataFrame | None,
    symbol: str,
    bar_minutes: int | None = None,
    tail_rows: int | None = None,
) -> np.ndarray:
    """``compute_features`` as a bare [rows, F] float64 array (rows = the last ``tail_rows`` bars,
    or all): what the live calculator uses, without building a DataFrame per symbol."""
    bm = bar_minutes or infer_bar_minutes(bars.index)
    n = len(bars)
    start = 0 if tail_rows is None else max(0, n - tail_rows)
    ctx = Ctx(bars, _align_btc(bars, btc_bars, symbol), bm, start=start)
    out = np.empty((n - start, len(FEATURES)), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for name, params, columns in _PLAN:
            res = INDICATORS[name](ctx, **params)
            for j, output, warmup in columns:
                out[:, j] = (res[output] if output is not None else res)[start:]
                if warmup > start:  # not converged yet: never hand out a value history-dependent
                    out[: warmup - start, j] = np.nan
    return out


_OHLCV = ("open", "high", "low", "close", "volume")


def resample_window(df_1m: pd.DataFrame, minutes: int, n_bars: int) -> pd.DataFrame | None:
    """The last ``n_bars`` bars of ``minutes`` minutes from 1-minute candles whose last candle is
    the anchor, by reshaping the last ``minutes * n_bars`` candles into [n_bars, minutes] blocks.

    Same bars as ``features.candles.resample(df_1m, minutes, anchor=df_1m.index[-1])`` (checked in
    test_feature_speed_parity.py; volume sums may differ in the last bit, as pandas sums in another
    order) at a fraction of the cost. Returns None when those candles have a gap (the caller then
    uses ``resample``, which drops incomplete bars) or are too few.
    """
    need = minutes * n_bars
    if len(df_1m) < need:
        return None
    idx = df_1m.index[-need:]
    if idx[-1] - idx[0] != pd.Timedelta(minutes=need - 1):  # sorted and unique, so: a gap
        return None
    if minutes == 1:
        return df_1m.iloc[-need:]
    blocks = {k: df_1m[k].to_numpy(dtype=np.float64)[-need:].reshape(n_bars, minutes) for k in _OHLCV}
    cols = {
        "open": blocks["open"][:, 0],
        "high": blocks["high"].max(axis=1),
        "low": blocks["low"].min(axis=1),
        "close": blocks["close"][:, -1],
        "volume": blocks["volume"].sum(axis=1),
    }
    return pd.DataFrame(cols, index=idx[::minutes].rename("timestamp"))


def compute_features_all_anchors(
    candles_1m: pd.DataFrame, btc_1m: pd.DataFrame | None, symbol: str, bar_minutes: int
) -> pd.DataFrame:
    """Training rows for every 1-minute anchor: for each of the ``bar_minutes`` alignments, resample
    the 1-minute candles so bars end on that minute, compute features, then merge.

    Index = open time of the row's bar, sorted; all index values are distinct because the
    alignments differ. The row's anchor (the last 1-minute candle in its bar, i.e. the minute at
    which serving would compute exactly this row) is ``index + bar_minutes - 1 min``; the bar
    closes at ``index + bar_minutes``.
    """
    if bar_minutes == 1:
        return compute_features(candles_1m, btc_1m, symbol, 1)
    last = candles_1m.index[-1]
    parts = []
    for k in range(bar_minutes):
        anchor = last - pd.Timedelta(minutes=k)
        bars = resample(candles_1m, bar_minutes, anchor)
        if bars.empty:
            continue
        btc = None if btc_1m is None else resample(btc_1m, bar_minutes, anchor)
        parts.append(compute_features(bars, btc, symbol, bar_minutes))
    if not parts:
        raise InsufficientDataError(symbol, bar_minutes, len(candles_1m))
    return pd.concat(parts).sort_index()


@dataclass
class FeatureBatch:
    """One tick's features. ``symbols[i]`` owns ``values[i]`` ([n_rows, F] float32, oldest row
    first) and ``bar_times[i]`` (open time of its last row). Symbols that failed are only in
    ``errors`` (symbol -> reason). ``spec_hash`` names the column layout (``FEATURE_NAMES``)."""

    symbols: list[str]
    bar_times: list[pd.Timestamp]
    values: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)
    spec_hash: str = SPEC_HASH

    @property
    def feature_names(self) -> list[str]:
        return FEATURE_NAMES


class RealTimeIndicatorCalculator:
    """Features of the latest ``n_rows`` bars of many symbols in one call (a scheduler tick).

    ``compute`` takes each symbol's last closed 1-minute candles (at least ``required_minutes``),
    resamples them into ``bar_minutes`` bars ending at the anchor minute, computes the spec on the
    last ``live_window(n_rows)`` bars with ``compute_features`` and keeps the last ``n_rows`` rows.
    ``workers`` > 1 spreads symbols over threads (see benchmarks/bench_features.py for whether that
    pays; default 1).
    """

    def __init__(self, bar_minutes: int = 15, n_rows: int = 1, workers: int | None = None) -> None:
        if bar_minutes < 1 or n_rows < 1:
            raise ValueError("bar_minutes and n_rows must be >= 1")
        self.bar_minutes, self.n_rows = bar_minutes, n_rows
        self.window_bars = live_window(n_rows)
        self.workers = workers or 1

    @property
    def required_minutes(self) -> int:
        """1-minute candles needed per symbol (and for BTC)."""
        return self.window_bars * self.bar_minutes

    def _bars(self, symbol: str, df: pd.DataFrame, anchor: pd.Timestamp) -> pd.DataFrame:
        df = df.loc[:anchor].iloc[-self.required_minutes :]
        got = len(df)
        if got < self.required_minutes:
            raise InsufficientDataError(symbol, self.required_minutes, got)
        fast = resample_window(df, self.bar_minutes, self.window_bars) if df.index[-1] == anchor else None
        if fast is not None:
            return fast
        bars = resample(df, self.bar_minutes, anchor).iloc[-self.window_bars :]
        if len(bars) < self.window_bars or bars.index[-1] != anchor - pd.Timedelta(minutes=self.bar_minutes - 1):
            # gaps left incomplete bars, or the last candle is not at the anchor
            raise InsufficientDataError(symbol, self.required_minutes, len(bars) * self.bar_minutes)
        return bars

    def _one(
        self, symbol: str, df: pd.DataFrame, btc_df: pd.DataFrame | None, anchor: pd.Timestamp | None
    ) -> tuple[pd.Timestamp, np.ndarray]:
        a = anchor if anchor is not None else df.index[-1]
        bars = self._bars(symbol, df, a)
        btc_bars = None
        if not is_btc(symbol):
            if btc_df is None:
                raise MissingCrossAssetError(f"{symbol}: missing BTC candles for cross-asset features")
            btc_bars = self._btc_cache.get(a)
            if btc_bars is None:  # BTC is resampled once per anchor and tick, not once per symbol
                btc_1m = btc_df.loc[:a].iloc[-self.required_minutes :]
                btc_bars = None
                if len(btc_1m) and btc_1m.index[-1] == a:
                    btc_bars = resample_window(btc_1m, self.bar_minutes, self.window_bars)
                if btc_bars is None:
                    btc_bars = resample(btc_1m, self.bar_minutes, a)
                self._btc_cache[a] = btc_bars
        feats = feature_matrix(bars, btc_bars, symbol, self.bar_minutes, tail_rows=self.n_rows)
        bad = ~np.isfinite(feats).all(axis=0)
        if bad.any():
            names = [FEATURE_NAMES[j] for j in np.flatnonzero(bad)[:3]]
            raise MLSignalsError(f"{symbol}: NaN/inf after warm-up in {int(bad.sum())} feature(s), e.g. {names}")
        return bars.index[-1], feats.astype(np.float32)

    def _safe(
        self, symbol: str, df: pd.DataFrame, btc_df: pd.DataFrame | None, anchor: pd.Timestamp | None
    ) -> tuple[pd.Timestamp, np.ndarray] | str:
        try:
            return self._one(symbol, df, btc_df, anchor)
        except MLSignalsError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - one symbol's failure must not take the tick down
            return f"{symbol}: {type(exc).__name__}: {exc}"

    def compute(self, candles_1m: dict[str, pd.DataFrame], anchor: pd.Timestamp | None = None) -> FeatureBatch:
        """Features for every symbol in ``candles_1m``. ``anchor`` = the open time of the last
        closed 1-minute candle to use (default: each frame's last candle)."""
        self._btc_cache: dict[pd.Timestamp, pd.DataFrame] = {}
        btc_key = find_btc(list(candles_1m))
        btc_df = candles_1m.get(btc_key) if btc_key else None
        items = list(candles_1m.items())
        if self.workers > 1 and len(items) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                results = list(pool.map(lambda kv: self._safe(kv[0], kv[1], btc_df, anchor), items))
        else:
            results = [self._safe(s, df, btc_df, anchor) for s, df in items]
        symbols, times, rows, errors = [], [], [], {}
        for (sym, _), res in zip(items, results, strict=True):
            if isinstance(res, str):
                errors[sym] = res
            else:
                symbols.append(sym)
                times.append(res[0])
                rows.append(res[1])
        values = np.stack(rows) if rows else np.empty((0, self.n_rows, len(FEATURE_NAMES)), dtype=np.float32)
        return FeatureBatch(symbols=symbols, bar_times=times, values=values, errors=errors, spec_hash=SPEC_HASH)
