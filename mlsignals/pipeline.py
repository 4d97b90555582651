"""The in-process signal pipeline: candles -> features -> model -> signal, as plain classes.

The same stage classes run in three places: ``mlsignals predict`` and the backtest (one process,
``SignalPipeline``) and the Ray Serve deployments (one stage per deployment, see serve_app/).
Every stage turns a per-symbol failure into a reason carried forward; the signal stage turns
any reason into a NEUTRAL signal, so one bad symbol never takes a tick down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from common.errors import MLSignalsError
from features.calculator import BTC_SYMBOL, RealTimeIndicatorCalculator, is_btc
from features.candles import GapPolicy, fill_gaps, is_stale, validate_candles
from features.sources.base import MarketDataSource, last_closed_minute
from model.contract import ModelOutput, TargetSpec
from model.feature_stats import FeatureStats
from signals.config import SignalConfig
from signals.policy import TradingPolicy
from signals.prediction_log import PredictionLog, summarize_features
from signals.processor import MLSignalProcessor
from signals.publisher import SignalPublisher
from signals.schema import Signal

log = logging.getLogger(__name__)

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
    cached: bool = False  # reused from an earlier request of the same closed minute

    def copy_for_reuse(self) -> FeatureResult:
        """The same features for another request: its own (empty) latency record, marked cached."""
        return replace(self, latency_ms={}, cached=True)


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


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
        self._cache: dict[tuple[str, pd.Timestamp], FeatureResult] = {}

    @property
    def required_minutes(self) -> int:
        return self.calculator.required_minutes

    def load_candles(
        self, symbols: list[str], end: pd.Timestamp | None, now: pd.Timestamp | None
    ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """Candles per symbol (BTC included when needed), and per-symbol reasons for those
        that cannot be used (source error, stale)."""
        n = self.required_minutes + self.gap_policy.max_fill * 4  # head-room for filled gaps
        needs_btc = any(not is_btc(s) for s in symbols)
        wanted = list(dict.fromkeys([*symbols, *([BTC_SYMBOL] if needs_btc else [])]))
        frames, errors = {}, {}
        now_ts = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
        for sym in wanted:
            try:
                df = self.source.get_candles(sym, n, end)
                if df.empty:
                    errors[sym] = f"{sym}: no candles"
                    continue
                # validated here whatever the source: FrameSource (caller files, tests) does not
                # validate on the way in, and a bad candle must never become a trade
                df = validate_candles(df, sym)
            except MLSignalsError as exc:
                errors[sym] = str(exc)
                continue
            except Exception as exc:  # a failing source is this symbol's problem, not the tick's
                errors[sym] = f"{sym}: market-data source failed ({type(exc).__name__}: {exc})"
                continue
            df, open_gaps = fill_gaps(df, self.gap_policy)
            if open_gaps:
                df = df.loc[open_gaps[-1].start + pd.Timedelta(minutes=open_gaps[-1].missing):]
            # stale at the minute asked for: now, or `end` for a past minute (never older candles
            # passed off as that minute's)
            at = None if end is None else _utc(end).floor("min")
            if is_stale(df, now_ts if at is None else at + pd.Timedelta(minutes=1), self.gap_policy):
                when = "" if at is None else f" at {at.isoformat()}"
                errors[sym] = f"{sym}: stale data{when}, last candle {df.index[-1].isoformat()}"
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
        if candles is None:  # the source's candles of a closed minute never change: reuse them
            minute = last_closed_minute(now) if end is None else pd.Timestamp(end)
            hits = {s: self._cache.get((s, minute)) for s in symbols}
            todo = [s for s in symbols if hits[s] is None]
            fresh = self._compute(todo, end, None, now) if todo else {}
            self._remember(minute, fresh)
            return {s: fresh[s] if hits[s] is None else hits[s].copy_for_reuse() for s in symbols}
        return self._compute(symbols, end, candles, now)

    def _remember(self, minute: pd.Timestamp, results: dict[str, FeatureResult]) -> None:
        """Keep the results of the latest two minutes only (a bounded cache)."""
        self._cache.update({(sym, minute): res for sym, res in results.items()})
        keep = sorted({m for _, m in self._cache})[-2:]
        for key in [k for k in self._cache if k[1] not in keep]:
            del self._cache[key]

    def _compute(
        self,
        symbols: list[str],
        end: pd.Timestamp | None,
        candles: dict[str, pd.DataFrame] | None,
        now: pd.Timestamp | None,
    ) -> dict[str, FeatureResult]:
        t0 = time.perf_counter()
        if candles is None:
            frames, errors = self.load_candles(symbols, end, now)
        else:
            frames, errors = self._given_frames(candles)
        t1 = time.perf_counter()
        # every frame is computed, BTC too when it is only the cross-asset reference
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

    def _given_frames(self, candles: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """Caller's candles (HTTP, tests): validated here too, an invalid frame is that symbol's error."""
        frames, errors = {}, {}
        for sym, df in candles.items():
            try:
                frames[sym] = validate_candles(df, sym).iloc[-self.required_minutes :]
            except MLSignalsError as exc:
                errors[sym] = str(exc)
        return frames, errors


def calculator_feature_index(name: str) -> int:
    from features.spec import FEATURE_NAMES

    try:
        return FEATURE_NAMES.index(name)
    except ValueError:
        raise MLSignalsError(f"feature {name!r} is not in the feature spec") from None


@dataclass(frozen=True)
class ModelMeta:
    """What the signal stage must know about the model that produced an output (it can change
    under a hot swap): version, feature spec, target definition and training feature stats."""

    model_version: str
    spec_hash: str
    target_spec: TargetSpec
    feature_names: list[str]
    feature_stats: FeatureStats | None = None
    policy: dict | None = None  # the bundle's validated trading policy (signals.policy), raw JSON

    @classmethod
    def of(cls, engine) -> ModelMeta:
        return cls(engine.model_version, engine.spec_hash, engine.target_spec, list(engine.feature_names),
                   engine.feature_stats, getattr(engine.bundle, "policy", None))


class SignalSink:
    """Model output -> Signal (the one interpreter) -> outbox/Redis -> prediction log.

    Never raises: a failing database or Redis is absorbed by the publisher and the log's queue."""

    def __init__(
        self,
        config: SignalConfig,
        publisher: SignalPublisher | None = None,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        self.config, self.publisher, self.prediction_log = config, publisher, prediction_log
        self._processors: dict[str, MLSignalProcessor] = {}

    def _processor(self, meta: ModelMeta) -> MLSignalProcessor:
        p = self._processors.get(meta.model_version)
        if p is None:
            policy, problem = None, None
            if meta.policy:
                try:
                    policy = TradingPolicy.from_dict(meta.policy)
                except ValueError as exc:  # pydantic's ValidationError: a NEUTRAL with the reason, never a 500
                    problem = f"the bundle's policy.json is invalid ({str(exc).splitlines()[0]})"
            p = self._processors[meta.model_version] = MLSignalProcessor(
                self.config, meta.target_spec, policy, policy_error=problem)
        return p

    def handle(
        self,
        fr: FeatureResult,
        output: ModelOutput | None,
        meta: ModelMeta,
        error: str | None = None,
        latency_ms: dict[str, float] | None = None,
        now: pd.Timestamp | None = None,
        publish: bool = True,
        record: bool = True,
    ) -> Signal:
        """``publish``: onto the trading stream (through the outbox); ``record``: into the
        prediction log (off for what-if predictions on a caller's candles, which must not take
        the (symbol, bar time, model) slot of the service's own prediction)."""
        t0 = time.perf_counter()
        bar_time = fr.bar_time if fr.bar_time is not None else last_closed_minute(now)
        signal = self._processor(meta).process(
            fr.symbol, output,
            entry=fr.entry,
            atr=fr.atr,
            bar_time=bar_time.to_pydatetime(),
            model_version=meta.model_version,
            feature_spec_hash=meta.spec_hash,
            features_last_row=None if fr.window is None else fr.window[-1],
            feature_stats=meta.feature_stats,
            now=None if now is None else pd.Timestamp(now).to_pydatetime(),
            error=fr.error or error,
        )
        lat = {**fr.latency_ms, **(latency_ms or {}), "signal_ms": (time.perf_counter() - t0) * 1e3}
        if publish and self.publisher is not None:
            self.publisher.publish(signal)
        if record and self.prediction_log is not None:
            row = None if fr.window is None else fr.window[-1]
            self.prediction_log.record(
                signal, output=output, target_spec=meta.target_spec,
                feature_summary={**summarize_features(row, meta.feature_names, meta.spec_hash), "cached": fr.cached},
                latencies_ms=lat,
            )
        return signal


class SignalPipeline:
    """All stages in one process: ``mlsignals predict``, the backtest and the benchmarks' baseline."""

    def __init__(self, features: FeatureStage, engine, sink: SignalSink) -> None:
        self.features, self.engine, self.sink = features, engine, sink

    def run(
        self,
        symbols: list[str],
        end: pd.Timestamp | None = None,
        candles: dict[str, pd.DataFrame] | None = None,
        now: pd.Timestamp | None = None,
        publish: bool = False,
    ) -> list[Signal]:
        return [sig for _, sig in self.run_detailed(symbols, end, candles, now, publish)]

    def run_detailed(
        self,
        symbols: list[str],
        end: pd.Timestamp | None = None,
        candles: dict[str, pd.DataFrame] | None = None,
        now: pd.Timestamp | None = None,
        publish: bool = False,
    ) -> list[tuple[FeatureResult, Signal]]:
        """Like ``run``, with each symbol's feature-stage result beside its signal."""
        results = self.features.compute(symbols, end=end, candles=candles, now=now)
        ready = [s for s in symbols if results[s].window is not None]
        outputs: dict[str, ModelOutput] = {}
        errors: dict[str, str] = {}
        t0 = time.perf_counter()
        if ready:
            outputs, errors = self.engine.predict(np.stack([results[s].window for s in ready]), ready)
        model_ms = (time.perf_counter() - t0) * 1e3
        meta = ModelMeta.of(self.engine)
        return [
            (results[s],
             self.sink.handle(results[s], outputs.get(s), meta, errors.get(s), {"model_ms": model_ms}, now, publish))
            for s in symbols
        ]


def read_bundle_targets(path) -> tuple[TargetSpec, int]:
    """(target spec, context length) of a model bundle, read from its config without loading
    weights (or torch): the feature stage must produce exactly the windows the model was trained
    on, and the outcome filler must know its horizons."""
    import json
    from pathlib import Path

    cfg_path = Path(path) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
        return TargetSpec.from_dict(cfg["target_spec"]), int(cfg["model"]["context_length"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MLSignalsError(f"{cfg_path}: cannot read the model's targets and context ({exc})") from None
