"""The in-process signal pipeline: candles -> features -> model -> signal, as plain classes.

The same stage classes run in three places: ``mlsignals predict`` and the backtest (one process,
``SignalPipeline``) and the Ray Serve deployments (one stage per deployment, see serve_app/).
Every stage turns a per-symbol failure into a reason carried forward; the signal stage turns
any reason into a NEUTRAL signal, so one bad symbol never takes a tick down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.calculator import RealTimeIndicatorCalculator
from features.candles import GapPolicy, fill_gaps, is_stale
from features.sources.base import MarketDataSource, last_closed_minute
from mlsignals.errors import MLSignalsError
from model.contract import ModelOutput
from signals.processor import MLSignalProcessor
from signals.schema import Signal

log = logging.getLogger(__name__)

BTC = "BTCUSDT"
# The NATR feature that gives the ATR (in % of close) on the model's bars for stop/target sizing.
ATR_FEATURE = "volatility.natr_14"


@dataclass
class FeatureResult:
    """The feature stage's answer for one symbol.

    window: [context, F] float32 unscaled features (None on error); entry: last close;
    atr: average true range in price units on the model's bars; bar_time: open time of the
    last closed 1-minute candle used; error: why there is no window.
    """

    symbol: str
    bar_time: pd.Timestamp | None = None
    window: np.ndarray | None = None
    entry: float | None = None
    atr: float | None = None
    error: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)


class FeatureStage:
    """Loads candles for a tick (plus BTC for cross-asset features), applies the gap policy and
    the staleness rule, and computes the model's feature window for every symbol in one call."""

    def __init__(
        self,
        source: MarketDataSource,
        calculator: RealTimeIndicatorCalculator,
        gap_policy: GapPolicy | None = None,
    ) -> None:
        self.source, self.calculator = source, calculator
        self.gap_policy = gap_policy or GapPolicy()
        self._atr_col = calculator_feature_index(ATR_FEATURE)

    @property
    def required_minutes(self) -> int:
        return self.calculator.required_minutes

    def load_candles(
        self, symbols: list[str], end: pd.Timestamp | None, now: pd.Timestamp | None
    ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """Candles per symbol (BTC included when needed), and per-symbol reasons for those
        that cannot be used (source error, stale)."""
        n = self.required_minutes + self.gap_policy.max_fill * 4  # head-room for filled gaps
        wanted = list(dict.fromkeys([*symbols, *([BTC] if any(s != BTC for s in symbols) else [])]))
        frames, errors = {}, {}
        now_ts = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
        for sym in wanted:
            try:
                df = self.source.get_candles(sym, n, end)
            except MLSignalsError as exc:
                errors[sym] = str(exc)
                continue
            if df.empty:
                errors[sym] = f"{sym}: no candles"
                continue
            df, open_gaps = fill_gaps(df, self.gap_policy)
            if open_gaps:
                df = df.loc[open_gaps[-1].start + pd.Timedelta(minutes=open_gaps[-1].missing):]
            if end is None and is_stale(df, now_ts, self.gap_policy):
                errors[sym] = f"{sym}: stale data, last candle {df.index[-1].isoformat()}"
                continue
            frames[sym] = df.iloc[-self.required_minutes :]
        return frames, errors

    def compute(
        self,
        symbols: list[str],
        end: pd.Timestamp | None = None,
        candles: dict[str, pd.DataFrame] | None = None,
        now: pd.Timestamp | None = None,
    ) -> dict[str, FeatureResult]:
        t0 = time.perf_counter()
        if candles is None:
            frames, errors = self.load_candles(symbols, end, now)
        else:
            frames, errors = {s: df.iloc[-self.required_minutes :] for s, df in candles.items()}, {}
        t1 = time.perf_counter()
        # BTC is computed only as the cross-asset reference unless it was asked for.
        batch = self.calculator.compute(frames) if frames else None
        t2 = time.perf_counter()
        lat = {"candles_ms": (t1 - t0) * 1e3, "features_ms": (t2 - t1) * 1e3}
        out: dict[str, FeatureResult] = {}
        for sym in symbols:
            res = FeatureResult(sym, latency_ms=dict(lat))
            if sym in frames:
                res.entry = float(frames[sym]["close"].iloc[-1])
                res.bar_time = frames[sym].index[-1]
            if sym in errors:
                res.error = errors[sym]
            elif batch is None or sym not in batch.symbols:
                res.error = (batch.errors.get(sym) if batch else None) or f"{sym}: no features computed"
            else:
                i = batch.symbols.index(sym)
                res.window = batch.values[i]
                natr = float(res.window[-1, self._atr_col])
                res.atr = natr / 100.0 * res.entry if np.isfinite(natr) and natr > 0 else None
            out[sym] = res
        return out


def calculator_feature_index(name: str) -> int:
    from features.spec import FEATURE_NAMES

    try:
        return FEATURE_NAMES.index(name)
    except ValueError:
        raise MLSignalsError(f"feature {name!r} is not in the feature spec") from None


class SignalStage:
    """Model outputs -> Signal (via the one interpreter), never raising."""

    def __init__(self, processor: MLSignalProcessor, model_version: str, spec_hash: str, feature_stats=None) -> None:
        self.processor, self.model_version, self.spec_hash = processor, model_version, spec_hash
        self.feature_stats = feature_stats

    def to_signal(self, fr: FeatureResult, output: ModelOutput | None, error: str | None = None,
                  now: pd.Timestamp | None = None) -> Signal:
        bar_time = fr.bar_time if fr.bar_time is not None else last_closed_minute(now)
        return self.processor.process(
            fr.symbol, output,
            entry=fr.entry if fr.entry else 1.0,
            atr=fr.atr,
            bar_time=bar_time.to_pydatetime(),
            model_version=self.model_version,
            feature_spec_hash=self.spec_hash,
            features_last_row=None if fr.window is None else fr.window[-1],
            feature_stats=self.feature_stats,
            now=None if now is None else pd.Timestamp(now).to_pydatetime(),
            error=fr.error or error,
        )


def read_bundle_shape(path) -> tuple[int, int]:
    """(bar_minutes, context_length) of a model bundle, read from its config without loading
    weights: the feature stage must produce exactly the windows the model was trained on."""
    import json
    from pathlib import Path

    cfg_path = Path(path) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
        return int(cfg["target_spec"]["bar_minutes"]), int(cfg["model"]["context_length"])
    except (OSError, ValueError, KeyError) as exc:
        raise MLSignalsError(f"{cfg_path}: cannot read the model's bar size and context ({exc})") from None
