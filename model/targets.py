"""Leak-free targets for every 1-minute anchor.

An anchor ``t`` is the open time of the last closed 1-minute candle; the model bar ending at
``t`` closes at ``close(t)``. With ``N = bar_minutes`` and a horizon of ``h`` bars, the future
window is the minutes ``t+1 .. t+h*N`` - exactly the next ``h`` bars of the same alignment, so
the anchored bars used at serving time and these targets agree. Only candles strictly after
``t`` enter a target (``close(t)`` is the reference price, known at ``t``).

Raw targets (fractions), per horizon h:
    ret_h{h}   close(t+h*N) / close(t) - 1
    up_h{h}    max(high over the window) / close(t) - 1     (max favourable excursion, long)
    down_h{h}  1 - min(low over the window) / close(t)       (max adverse excursion, long)
Labelled targets (given a ``TargetSpec``): direction class (LONG/SHORT/FLAT by the FLAT band),
long/short level hits, and the risk block (drawdown/rally over the two longest horizons).
Candles of any timeframe that divides the bar size work the same way on their own grid (a
15-minute file has one bar alignment, a 1-minute file ``bar_minutes`` of them).
Missing minutes are NaN on the grid and make every target that needs them NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from model.contract import DIRECTIONS, N_HORIZONS, TargetSpec

LONG, SHORT, FLAT = (DIRECTIONS.index(d) for d in ("LONG", "SHORT", "FLAT"))


def target_columns(horizons: tuple[int, ...]) -> list[str]:
    """Names of the raw target columns (none may ever be a feature name)."""
    return [f"{kind}_h{h}" for h in horizons for kind in ("ret", "up", "down")]


def minute_grid(candles: pd.DataFrame, timeframe: int = 1) -> pd.DataFrame:
    """Reindex candles of ``timeframe`` minutes onto their full grid; missing candles become NaN rows."""
    idx = pd.date_range(candles.index[0], candles.index[-1], freq=f"{timeframe}min")
    return candles.reindex(idx)


def _forward_extreme(x: np.ndarray, k: int, fn: str) -> np.ndarray:
    """max/min of x[t+1 .. t+k] for every t (NaN when the window is incomplete)."""
    s = pd.Series(x)
    rolled = getattr(s.rolling(k, min_periods=k), fn)()  # value at i covers x[i-k+1 .. i]
    return rolled.shift(-k).to_numpy()


def raw_targets_all_anchors(
    candles: pd.DataFrame, bar_minutes: int, horizons: tuple[int, ...], timeframe: int = 1
) -> pd.DataFrame:
    """Raw targets for every anchor of ``candles`` (index: their grid of ``timeframe`` minutes).

    With candles of ``timeframe`` minutes (a divisor of ``bar_minutes``) the future window of h
    bars is the next ``h * bar_minutes / timeframe`` candles: exact for whole-bar windows.
    """
    g = minute_grid(candles, timeframe)
    close = g["close"].to_numpy()
    high = g["high"].to_numpy()
    low = g["low"].to_numpy()
    out = pd.DataFrame(index=g.index)
    for h in horizons:
        k = h * bar_minutes // timeframe
        fut_close = pd.Series(close).shift(-k).to_numpy()
        out[f"ret_h{h}"] = fut_close / close - 1.0
        out[f"up_h{h}"] = _forward_extreme(high, k, "max") / close - 1.0
        out[f"down_h{h}"] = 1.0 - _forward_extreme(low, k, "min") / close
    return out


@dataclass(frozen=True)
class LabelledTargets:
    """Targets of N rows in training form.

    returns [N, 4] fractions; direction [N, 4] int64 class ids (DIRECTIONS order);
    long_hit / short_hit [N, 4] float {0, 1}; risk [N, 4] fractions >= 0 in contract order
    (drawdown_H3, rally_H3, drawdown_H4, rally_H4).
    """

    returns: np.ndarray
    direction: np.ndarray
    long_hit: np.ndarray
    short_hit: np.ndarray
    risk: np.ndarray

    def __len__(self) -> int:
        return self.returns.shape[0]

    def take(self, rows: np.ndarray) -> LabelledTargets:
        return LabelledTargets(
            *(a[rows] for a in (self.returns, self.direction, self.long_hit, self.short_hit, self.risk))
        )


def label_targets(raw: pd.DataFrame | dict[str, np.ndarray], spec: TargetSpec) -> LabelledTargets:
    """Apply the FLAT bands and levels of ``spec`` to raw targets (rows must be complete)."""
    h = spec.horizons
    ret = np.stack([np.asarray(raw[f"ret_h{x}"], dtype=np.float64) for x in h], axis=1)
    up = np.stack([np.asarray(raw[f"up_h{x}"], dtype=np.float64) for x in h], axis=1)
    down = np.stack([np.asarray(raw[f"down_h{x}"], dtype=np.float64) for x in h], axis=1)
    band = np.asarray(spec.flat_bands)[None, :]
    level = np.asarray(spec.levels)[None, :]
    direction = np.full(ret.shape, FLAT, dtype=np.int64)
    direction[ret > band] = LONG
    direction[ret < -band] = SHORT
    r3, r4 = 2, 3  # the two longest horizons
    risk = np.stack(
        [
            np.clip(down[:, r3], 0, None),
            np.clip(up[:, r3], 0, None),
            np.clip(down[:, r4], 0, None),
            np.clip(up[:, r4], 0, None),
        ],
        axis=1,
    )
    return LabelledTargets(
        returns=ret,
        direction=direction,
        long_hit=(up >= level).astype(np.float64),
        short_hit=(down >= level).astype(np.float64),
        risk=risk,
    )


def derive_target_spec(
    raw_train: pd.DataFrame,
    bar_minutes: int,
    horizons: tuple[int, int, int, int],
    flat_quantile: float,
    level_quantile: float,
) -> TargetSpec:
    """FLAT bands and levels from the training split only.

    flat band h = ``flat_quantile`` of |ret_h| (so about that share of training rows is FLAT);
    level h = ``level_quantile`` of the favourable excursions of both sides (up and down pooled).
    """
    bands, levels, flat_moves, moved_moves = [], [], [], []
    for h in horizons:
        r = raw_train[f"ret_h{h}"].dropna().to_numpy()
        ex = np.concatenate([raw_train[f"up_h{h}"].dropna().to_numpy(), raw_train[f"down_h{h}"].dropna().to_numpy()])
        if r.size == 0 or ex.size == 0:
            raise ValueError(f"no complete training targets for horizon {h}")
        band = float(f"{np.quantile(np.abs(r), flat_quantile):.6g}")
        bands.append(band)
        levels.append(float(f"{max(np.quantile(ex, level_quantile), 1e-6):.6g}"))
        a = np.abs(r)
        flat_moves.append(float(f"{a[a <= band].mean():.6g}"))
        moved_moves.append(float(f"{a[a > band].mean():.6g}") if (a > band).any() else band)
    assert len(bands) == N_HORIZONS
    return TargetSpec(bar_minutes=bar_minutes, horizons=tuple(horizons), flat_bands=tuple(bands), levels=tuple(levels),
                      abs_move_flat=tuple(flat_moves), abs_move_moved=tuple(moved_moves))
