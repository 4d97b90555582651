"""Windows over many series, and the chronological walk-forward split with purge and embargo.

``AnchorPool`` concatenates the ``Series`` of all symbols/periods into flat arrays (rows never
mix across series: a window is only valid when its whole context lies inside one series).
A sample is a global row position g; its model input is ``x[g - N*(C-1) .. g : N]`` -> [C, F].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from model.contract import TargetSpec
from model.scaler import FeatureScaler
from model.series import VOL_COLUMNS, Series
from model.targets import LabelledTargets, label_targets


@dataclass
class AnchorPool:
    """Flat arrays over all series.

    x [R, F] float32 scaled features (NaN replaced by 0 - only rows inside valid windows are
    ever read); unscaled_t: view of the unscaled features for baselines; raw [R] targets frame;
    vol [R, k]; times [R] anchor minutes; series_id [R]; valid: global positions of usable anchors.
    """

    x: np.ndarray
    unscaled: np.ndarray
    raw: pd.DataFrame
    vol: pd.DataFrame
    times: pd.DatetimeIndex
    series_id: np.ndarray
    symbols: list[str]
    valid: np.ndarray
    context: int
    step: int

    @classmethod
    def build(cls, series: list[Series], context: int, bar_minutes: int) -> AnchorPool:
        offsets = np.cumsum([0] + [len(s.index) for s in series])
        valid = np.concatenate(
            [s.valid_anchors(context, bar_minutes) + o for s, o in zip(series, offsets, strict=False)]
        )
        unscaled = np.concatenate([s.features for s in series]).astype(np.float32, copy=False)
        return cls(
            x=unscaled,  # scaled in place by ``apply_scaler``
            unscaled=unscaled,
            raw=pd.concat([s.raw_targets.reset_index(drop=True) for s in series], ignore_index=True),
            vol=pd.concat([s.vol.reset_index(drop=True) for s in series], ignore_index=True),
            times=pd.DatetimeIndex(np.concatenate([s.index.asi8 for s in series])).tz_localize("UTC"),
            series_id=np.repeat(np.arange(len(series)), [len(s.index) for s in series]),
            symbols=[s.symbol for s in series],
            valid=valid,
            context=context,
            step=bar_minutes,
        )

    def apply_scaler(self, scaler: FeatureScaler) -> None:
        """Keep the unscaled copy for the baselines; the model reads the scaled one."""
        self.unscaled = self.unscaled.copy()
        x = scaler.transform(self.x)
        self.x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """rows [B] global positions -> [B, C, F] float32 (oldest bar first)."""
        offs = self.step * np.arange(self.context - 1, -1, -1)
        return self.x[rows[:, None] - offs[None, :]]

    def labels(self, rows: np.ndarray, spec: TargetSpec) -> LabelledTargets:
        return label_targets(self.raw.iloc[rows], spec)

    def vol_inputs(self, rows: np.ndarray) -> np.ndarray:
        return self.vol.iloc[rows][list(VOL_COLUMNS)].to_numpy()

    def last_return(self, rows: np.ndarray) -> np.ndarray:
        return self.vol["last_ret"].to_numpy()[rows]


def walk_forward_split(
    pool: AnchorPool, val_fraction: float, horizon_minutes: int, embargo_minutes: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Validation = the last ``val_fraction`` of the latest period (after training in time).

    Training anchors are purged so that their target window (t, t + horizon_minutes] ends at
    least ``embargo_minutes`` before the first validation anchor; embargo 0 means the longest
    horizon, so the gap is at least twice the longest horizon.
    """
    embargo = embargo_minutes or horizon_minutes
    t = pool.times[pool.valid]
    start, end = t.min(), t.max()
    latest_start = max(pool.times[pool.series_id == s].min() for s in np.unique(pool.series_id))
    split = latest_start + (end - latest_start) * (1 - val_fraction)
    split = split.floor("min")
    cutoff = split - pd.Timedelta(minutes=horizon_minutes + embargo)
    train = pool.valid[t < cutoff]
    val = pool.valid[t >= split]
    info = {
        "train_start": start.isoformat(),
        "train_end": cutoff.isoformat(),
        "val_start": split.isoformat(),
        "val_end": end.isoformat(),
        "purge_minutes": horizon_minutes,
        "embargo_minutes": embargo,
        "train_anchors": int(train.size),
        "val_anchors": int(val.size),
    }
    return train, val, info
