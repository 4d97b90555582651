"""Look-ahead check: rerun sampled decisions through the plain live path on candles that end
at the decision minute, and compare with the backtest's decisions.

The rerun uses ``FrameSource`` + ``FeatureStage`` (the live feature stage, computing from the
last candles only) + the same engine and signal sink. Identical decisions show both that the
backtest used no candle after the decision time and that its precomputed feature windows equal
the live ones. Levels and confidence may differ in the last float32 bits (features of the
all-anchors frame equal the live window's to ~1e-6 relative); directions must be identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.sources.base import FrameSource
from mlsignals.backtest.decisions import ONE_MIN, Decisions, Market, decisions_from_signals
from mlsignals.pipeline import FeatureStage, SignalPipeline


@dataclass
class LookaheadReport:
    """checked: (minute, symbol) decisions compared; mismatches: human-readable differences."""

    checked: int = 0
    identical_direction: int = 0
    max_conf_diff: float = 0.0
    max_level_rel_diff: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and self.identical_direction == self.checked

    def line(self) -> str:
        return (f"look-ahead check: {self.identical_direction}/{self.checked} sampled decisions identical when "
                f"every candle after the decision minute is removed (max |d confidence| "
                f"{self.max_conf_diff:.2e}, max relative SL/TP difference {self.max_level_rel_diff:.2e})")


def sample_positions(decisions: Decisions, n: int, seed: int = 0) -> np.ndarray:
    """Up to n decision minutes: half among minutes with a LONG/SHORT decision, half any."""
    rng = np.random.default_rng(seed)
    act = np.unique(decisions.pos[decisions.side != 0])
    every = np.unique(decisions.pos)
    pick = list(rng.choice(act, min(len(act), n // 2), replace=False)) if len(act) else []
    rest = np.setdiff1d(every, pick)
    pick += list(rng.choice(rest, min(len(rest), n - len(pick)), replace=False)) if len(rest) else []
    return np.sort(np.asarray(pick, dtype=np.int64))


def check_decisions(frames: dict[str, pd.DataFrame], market: Market, decisions: Decisions, live_stage: FeatureStage,
                    engine, sink, positions: np.ndarray) -> LookaheadReport:
    rep = LookaheadReport()
    symbols = market.symbols
    key = {(int(p), int(s)): j for j, (p, s) in enumerate(zip(decisions.pos, decisions.sym, strict=True))}
    for p in positions:
        t = market.times[int(p)]
        truncated = {s: f.loc[:t] for s, f in frames.items()}
        stage = FeatureStage(FrameSource(truncated), live_stage.calculator, live_stage.gap_policy)
        signals = SignalPipeline(stage, engine, sink).run(symbols, end=t, now=t + ONE_MIN)
        again = decisions_from_signals(signals, market)
        for k in range(len(again)):
            j = key.get((int(again.pos[k]), int(again.sym[k])))
            if j is None:
                continue
            rep.checked += 1
            sym = symbols[int(again.sym[k])]
            if again.side[k] == decisions.side[j]:
                rep.identical_direction += 1
            else:
                rep.mismatches.append(f"{t.isoformat()} {sym}: backtest {int(decisions.side[j])} vs live "
                                      f"{int(again.side[k])}")
            rep.max_conf_diff = max(rep.max_conf_diff, abs(float(again.confidence[k] - decisions.confidence[j])))
            if decisions.side[j] != 0 and again.side[k] == decisions.side[j]:
                for a, b in ((again.sl[k], decisions.sl[j]), (again.tp[k], decisions.tp[j])):
                    rep.max_level_rel_diff = max(rep.max_level_rel_diff, abs(a / b - 1))
    return rep
