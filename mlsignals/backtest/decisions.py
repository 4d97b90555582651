"""Decisions of the live pipeline at every replayed minute.

The model's feature windows are sliced from full-history feature frames computed once per symbol
(``model.series.anchor_feature_matrix``: every 1-minute anchor of N-minute bars, the rows the live
calculator produces at that minute - proven by the calculator's parity tests and re-checked per
backtest by ``lookahead.check_decisions``, which reruns sampled minutes through the plain live
``FeatureStage`` on truncated candles). Everything after the features is the live code itself:
``InferenceEngine.predict`` (batched over symbols and a chunk of minutes) and
``SignalSink.handle`` -> ``MLSignalProcessor``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from mlsignals.pipeline import ATR_FEATURE, FeatureResult, ModelMeta, SignalSink, calculator_feature_index
from signals.schema import Direction, Signal

ONE_MIN = pd.Timedelta(minutes=1)
_SIDE = {Direction.LONG: 1, Direction.SHORT: -1, Direction.NEUTRAL: 0}


@dataclass
class Market:
    """Candles of all symbols on one common grid (``times`` [T], UTC open times, ``step`` apart:
    1 minute for the service's own candles, the bar size for a 15-minute validation span).

    open/high/low/close: [S, T] float64, NaN where a symbol has no candle; ``symbols`` [S].
    """

    symbols: list[str]
    times: pd.DatetimeIndex
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    step: pd.Timedelta = ONE_MIN

    @classmethod
    def from_frames(cls, frames: dict[str, pd.DataFrame]) -> Market:
        from features.calculator import infer_bar_minutes  # indicator libraries load slowly: lazily

        symbols = sorted(frames)
        step = pd.Timedelta(minutes=infer_bar_minutes(frames[symbols[0]].index))
        start = min(f.index[0] for f in frames.values())
        stop = max(f.index[-1] for f in frames.values())
        times = pd.date_range(start, stop, freq=step)
        cols = {k: np.stack([frames[s][k].reindex(times).to_numpy(np.float64) for s in symbols])
                for k in ("open", "high", "low", "close")}
        return cls(symbols, times, **cols, step=step)

    @property
    def step_minutes(self) -> int:
        return int(self.step // ONE_MIN)

    def pos(self, t: pd.Timestamp) -> int:
        """Grid position of the candle holding minute ``t``."""
        return int((pd.Timestamp(t) - self.times[0]) // self.step)

    def times_ns(self, positions: np.ndarray) -> np.ndarray:
        """Open times of grid positions as int64 UTC nanoseconds."""
        return self.times[np.asarray(positions, dtype=np.int64)].as_unit("ns").asi8

    def last_minute(self, p: int) -> pd.Timestamp:
        """Open time of the last 1-minute candle in grid candle ``p`` (a signal's ``bar_time``)."""
        return self.times[p] + self.step - ONE_MIN

    def decided_at(self, p: int) -> pd.Timestamp:
        """When a decision on grid candle ``p`` is made: once that candle has closed."""
        return self.times[p] + self.step

    def slice(self, lo: int, hi: int) -> Market:
        """Grid positions ``lo`` .. ``hi`` (inclusive) as a Market of their own (position p here is
        ``lo + p`` in this one)."""
        return Market(self.symbols, self.times[lo : hi + 1], self.open[:, lo : hi + 1], self.high[:, lo : hi + 1],
                      self.low[:, lo : hi + 1], self.close[:, lo : hi + 1], self.step)


@dataclass
class Decisions:
    """One row per (minute, symbol) decided. side: +1 LONG, -1 SHORT, 0 NEUTRAL.

    pos [N] grid position of the decision minute (bar_time); sym [N] symbol index; entry, sl, tp
    in quote currency (NaN for NEUTRAL); expiry_pos [N]: grid position of the last candle a trade
    may use (the candle closing at ``expires_at``); confidence [N] in [0, 1].
    """

    pos: np.ndarray
    sym: np.ndarray
    side: np.ndarray
    entry: np.ndarray
    sl: np.ndarray
    tp: np.ndarray
    expiry_pos: np.ndarray
    confidence: np.ndarray

    @classmethod
    def empty(cls) -> Decisions:
        f, i = np.zeros(0), np.zeros(0, dtype=np.int64)
        return cls(i, i, i, f, f, f, i, f)

    @classmethod
    def concat(cls, parts: list[Decisions]) -> Decisions:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.pos)

    def select(self, mask: np.ndarray) -> Decisions:
        return Decisions(*(getattr(self, k)[mask] for k in self.__dataclass_fields__))

    def shifted(self, offset: int) -> Decisions:
        """The same decisions with grid positions moved by ``offset`` (a sliced Market's back to
        the full grid's)."""
        return Decisions(self.pos + offset, self.sym, self.side, self.entry, self.sl, self.tp,
                         self.expiry_pos + offset, self.confidence)


def decisions_from_signals(signals: list[Signal], market: Market) -> Decisions:
    """Signals (any order) -> Decisions on ``market``'s grid."""
    rows = []
    for s in signals:
        side = _SIDE[s.direction]
        rows.append((
            market.pos(s.bar_time), market.symbols.index(s.symbol), side,
            np.nan if s.entry is None else s.entry,
            np.nan if s.stop_loss is None else s.stop_loss,
            np.nan if s.take_profit is None else s.take_profit,
            market.pos(pd.Timestamp(s.expires_at) - market.step), s.confidence,
        ))
    if not rows:
        return Decisions.empty()
    cols = list(zip(*rows, strict=True))
    ints = {0, 1, 2, 6}
    return Decisions(*(np.asarray(c, dtype=np.int64 if i in ints else np.float64) for i, c in enumerate(cols)))


class PrecomputedFeatures:
    """A feature stage over full-history features: same ``compute`` contract as
    ``mlsignals.pipeline.FeatureStage`` (so ``SignalPipeline`` can run on it), windows sliced.

    features: symbol -> [T, F] float32 rows on ``market``'s grid (row t = the live calculator's
    last row once grid candle t has closed); a window at t is the rows one model bar apart ending
    at t (``bar_minutes`` rows on a 1-minute grid, consecutive rows on a bar grid).
    ``required_minutes``: the live stage's history requirement; earlier candles are refused with
    the same kind of reason, so both paths decide the same minutes. ``first``: symbol -> first grid
    position with that history, when ``market`` is a slice whose own candles cannot tell (the
    distributed backtest); by default counted on ``market``.
    """

    def __init__(self, market: Market, features: dict[str, np.ndarray], bar_minutes: int, context: int,
                 required_minutes: int, first: dict[str, int] | None = None) -> None:
        self.market, self.features = market, features
        self.bar_minutes, self.context, self.required_minutes = bar_minutes, context, required_minutes
        self._atr_col = calculator_feature_index(ATR_FEATURE)
        if bar_minutes % market.step_minutes:
            raise ValueError(f"{market.step_minutes}-minute candles do not divide {bar_minutes}-minute bars")
        self._offsets = bar_minutes // market.step_minutes * np.arange(context - 1, -1, -1)
        # first grid position with required_minutes of history, per symbol
        self._first = dict(first) if first is not None else {}
        need = -(-required_minutes // market.step_minutes)
        for i, s in enumerate(market.symbols if first is None else ()):
            have = np.cumsum(np.isfinite(market.close[i]))
            ok = np.flatnonzero(have >= need)
            self._first[s] = int(ok[0]) if ok.size else len(market.times)

    @property
    def first_positions(self) -> dict[str, int]:
        """symbol -> first grid position with ``required_minutes`` of history."""
        return dict(self._first)

    @property
    def warmup_minutes(self) -> int:
        """Grid positions before a decision minute that its window reads (the model's context)."""
        return int(self._offsets[0])

    def result(self, symbol: str, p: int) -> FeatureResult:
        """The FeatureResult the live stage gives for ``symbol`` at grid position ``p``."""
        m = self.market
        i = m.symbols.index(symbol)
        res = FeatureResult(symbol)
        close = m.close[i, p]
        if not np.isfinite(close):
            res.error = f"{symbol}: no candle at {m.times[p].isoformat()}"
            return res
        res.entry, res.bar_time = float(close), m.last_minute(p)
        if p < self._first[symbol]:
            res.error = f"{symbol}: needs {self.required_minutes} candles before {m.times[p].isoformat()}"
            return res
        window = self.features[symbol][p - self._offsets]
        if not np.isfinite(window).all():
            res.error = f"{symbol}: NaN/inf in the feature window (gap or warm-up)"
            return res
        res.window = window
        natr = float(window[-1, self._atr_col])
        res.atr = natr / 100.0 * res.entry if np.isfinite(natr) and natr > 0 else None
        return res

    def compute(self, symbols: list[str], end: pd.Timestamp | None = None, candles=None, now=None,
                ) -> dict[str, FeatureResult]:
        p = len(self.market.times) - 1 if end is None else self.market.pos(end)
        return {s: self.result(s, p) for s in symbols}


def replay(
    stage: PrecomputedFeatures,
    engine,
    sink: SignalSink,
    positions: np.ndarray,
    chunk_minutes: int = 64,
    progress: bool = True,
) -> tuple[Decisions, list[Signal]]:
    """Decide every symbol at every grid position in ``positions`` (sorted).

    One ``engine.predict`` per chunk of minutes (all symbols of those minutes in one batch), then
    ``sink.handle`` per (minute, symbol), exactly as ``SignalPipeline.run_detailed`` does per tick.
    Returns the decisions and the non-NEUTRAL signals (for the report).
    """
    market = stage.market
    symbols = market.symbols
    meta = ModelMeta.of(engine)
    parts: list[Decisions] = []
    actionable: list[Signal] = []
    chunks = [positions[k : k + chunk_minutes] for k in range(0, len(positions), chunk_minutes)]
    bar = tqdm(chunks, desc="backtest", unit="chunk", disable=not progress, mininterval=2.0)
    for chunk in bar:
        results = [(p, stage.result(s, int(p))) for p in chunk for s in symbols]
        ready = [k for k, (_, r) in enumerate(results) if r.window is not None]
        outputs, errors = {}, {}
        if ready:
            keys = [str(k) for k in ready]
            outputs, errors = engine.predict(np.stack([results[k][1].window for k in ready]), keys)
        signals = []
        for k, (p, fr) in enumerate(results):
            now = market.decided_at(p)
            sig = sink.handle(fr, outputs.get(str(k)), meta, errors.get(str(k)), None, now, publish=False)
            signals.append(sig)
        parts.append(decisions_from_signals(signals, market))
        actionable += [s for s in signals if s.direction is not Direction.NEUTRAL]
    return Decisions.concat(parts), actionable
