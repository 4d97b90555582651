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

    unscaled [R, F] float32 features (NaN in warm-up / gaps; only rows inside valid windows are
    ever read); the model reads them scaled by ``apply_scaler``'s scaler at gather time (one
    copy in memory, not two); raw [R] targets frame; vol [R, k]; times [R] anchor times;
    series_id [R]; steps [R] grid rows per bar of the row's series; valid: global positions of
    usable anchors.
    """

    unscaled: np.ndarray
    raw: pd.DataFrame
    vol: pd.DataFrame
    times: pd.DatetimeIndex
    series_id: np.ndarray
    symbols: list[str]
    valid: np.ndarray
    context: int
    steps: np.ndarray
    scaler: FeatureScaler | None = None

    @classmethod
    def build(cls, series: list[Series], context: int, bar_minutes: int) -> AnchorPool:
        offsets = np.cumsum([0] + [len(s.index) for s in series])
        valid = np.concatenate(
            [s.valid_anchors(context, bar_minutes) + o for s, o in zip(series, offsets, strict=False)]
        ).astype(np.int64)
        lengths = [len(s.index) for s in series]
        return cls(
            unscaled=np.concatenate([s.features for s in series]).astype(np.float32, copy=False),
            raw=pd.concat([s.raw_targets.reset_index(drop=True) for s in series], ignore_index=True),
            vol=pd.concat([s.vol.reset_index(drop=True) for s in series], ignore_index=True),
            times=pd.DatetimeIndex(np.concatenate([s.index.as_unit("ns").asi8 for s in series])).tz_localize("UTC"),
            series_id=np.repeat(np.arange(len(series)), lengths),
            symbols=[s.symbol for s in series],
            valid=valid,
            context=context,
            steps=np.repeat([s.rows_per_bar(bar_minutes) for s in series], lengths).astype(np.int64),
        )

    def apply_scaler(self, scaler: FeatureScaler) -> None:
        """Windows are scaled with ``scaler`` from now on (the unscaled rows stay for baselines)."""
        self.scaler = scaler

    def _model_input(self, x: np.ndarray, columns: list[int] | None = None) -> np.ndarray:
        """Unscaled values (all features, or ``columns``) -> what the model reads: scaled,
        missing values as 0, float32."""
        if self.scaler is not None:
            x = (self.scaler if columns is None else self.scaler.subset(columns)).transform(x)
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)

    def scaled(self, positions: np.ndarray) -> np.ndarray:
        return self._model_input(self.unscaled[positions])

    def _window_positions(self, rows: np.ndarray) -> np.ndarray:
        """rows [B] -> [B, C] global positions of each row's window (oldest bar first)."""
        offs = self.steps[rows][:, None] * np.arange(self.context - 1, -1, -1)[None, :]
        return rows[:, None] - offs

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """rows [B] global positions -> [B, C, F] float32 scaled (oldest bar first)."""
        return self.scaled(self._window_positions(rows))

    def unscaled_windows(self, rows: np.ndarray, columns: list[int]) -> np.ndarray:
        """rows [B] -> [B, C, k] unscaled values of ``columns`` over each row's window."""
        pos = self._window_positions(rows)[:, :, None]
        return self.unscaled[pos, np.asarray(columns, dtype=np.int64)[None, None, :]]

    def scaled_windows(self, rows: np.ndarray, columns: list[int]) -> np.ndarray:
        """rows [B] -> [B, C, k] scaled values of ``columns`` over each row's window (what
        ``windows(rows)[:, :, columns]`` holds, without gathering every feature)."""
        return self._model_input(self.unscaled_windows(rows, columns), columns)

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


@dataclass(frozen=True)
class Window:
    """A calendar interval [start, end] (UTC) held out of training, e.g. a test period."""

    start: pd.Timestamp
    end: pd.Timestamp

    def to_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def rows_clear_of(times: pd.DatetimeIndex, windows: list[Window], gap_minutes: int) -> np.ndarray:
    """Mask of rows at least ``gap_minutes`` away from every window.

    With gap = longest horizon + embargo, a training anchor before a window has its whole target
    (t, t + horizon] end an embargo before the window starts, and one after it starts an embargo
    plus a horizon after the window's last target ends. Calendar time, not per series: BTC on two
    venues in the same minute is the same market.
    """
    ok = np.ones(len(times), dtype=bool)
    gap = pd.Timedelta(minutes=gap_minutes)
    for w in windows:
        ok &= (times < w.start - gap) | (times > w.end + gap)
    return ok


def calendar_split(
    pool: AnchorPool, test: list[Window], val_fraction: float, horizon_minutes: int, embargo_minutes: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Training and validation anchors with ``test`` windows held out.

    Validation is the last ``val_fraction`` of the calendar time that remains (after purging
    the test windows); training is the rest, purged and embargoed from both validation and test
    (gap = longest horizon + embargo; embargo 0 means the longest horizon).
    """
    embargo = embargo_minutes or horizon_minutes
    gap = horizon_minutes + embargo
    rows = pool.valid[rows_clear_of(pool.times[pool.valid], test, gap)]
    if rows.size == 0:
        raise ValueError("no anchors left outside the test windows")
    t = pool.times[rows]
    # the validation boundary: a quantile of the remaining anchors' times, so validation holds
    # about ``val_fraction`` of the rows whatever the gaps in the calendar
    split = pd.Timestamp(np.quantile(t.asi8, 1 - val_fraction), tz="UTC").floor("min")
    val = rows[t >= split]
    train = rows[rows_clear_of(t, [Window(split, t.max())], gap) & (t < split)]
    info = {
        "train_start": pool.times[train].min().isoformat() if train.size else None,
        "train_end": pool.times[train].max().isoformat() if train.size else None,
        "val_start": split.isoformat(),
        "val_end": t.max().isoformat(),
        "test_windows": [w.to_dict() for w in test],
        "purge_minutes": horizon_minutes,
        "embargo_minutes": embargo,
        "train_anchors": int(train.size),
        "val_anchors": int(val.size),
    }
    return train, val, info


def calendar_folds(pool: AnchorPool, k: int) -> list[Window]:
    """``k`` contiguous calendar blocks of equal length from the first to the last valid anchor
    (a block with no anchors - a hole in the data - is dropped)."""
    t = pool.times[pool.valid]
    edges = pd.date_range(t.min(), t.max(), periods=k + 1)
    folds = []
    for i in range(k):
        hi = edges[i + 1] if i == k - 1 else edges[i + 1] - pd.Timedelta(minutes=1)
        w = Window(edges[i], hi)
        if ((t >= w.start) & (t <= w.end)).any():
            folds.append(w)
    return folds
