"""A direction-blind volatility forecast of the level-hit and risk targets from the model's own
inputs: the unscaled features at t (realized/Parkinson volatility, NATR, the last bar's range,
time of day and week).

Why it exists: the network's volatility base is trained jointly with everything else and, on a
short budget or a regime unlike its training years, its level-hit heads can lose to the
candle-based volatility baseline (cross-validation fold 2020-05..2021-07 at 4 h/12 h). This
forecast has the baseline's form - a logistic model per hit head, least squares per risk output,
fitted to convergence on training rows - but reads only feature columns, so the serving path
(which has features, not candles) computes it too. ``model.stacking`` pools it with the network
on validation rows. Parameters are plain numbers (JSON), never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ArtifactError
from model.baselines import binary_logistic, least_squares
from model.contract import N_HORIZONS

# (feature, take the log): volatility levels are log-normal-ish, so the logistic sees their logs
VOL_FEATURES: tuple[tuple[str, bool], ...] = (
    ("volatility.realized_10", True), ("volatility.realized_20", True), ("volatility.realized_50", True),
    ("volatility.parkinson_10", True), ("volatility.parkinson_50", True), ("volatility.natr_14", True),
    ("volatility.trange_pct", True),
    ("time.cyclical.hour_sin", False), ("time.cyclical.hour_cos", False),
    ("time.cyclical.weekday_sin", False), ("time.cyclical.weekday_cos", False),
)
_FLOOR = 1e-6  # a zero range (a flat bar) is a tiny volatility, not log(0)


def vol_columns(feature_names: list[str]) -> list[int] | None:
    """Column indices of ``VOL_FEATURES`` in a feature layout; None when any is missing."""
    try:
        return [feature_names.index(n) for n, _ in VOL_FEATURES]
    except ValueError:
        return None


@dataclass
class FeatureVolatility:
    """columns [k] indices into the feature row; mean/std [k] of the transformed inputs;
    hit [8] (coef [k], intercept) - long hits h0..h3 then short hits; risk [4] (coef over the
    inputs and the volatility levels, intercept)."""

    columns: list[int]
    mean: np.ndarray
    std: np.ndarray
    hit: list[tuple[np.ndarray, float]]
    risk: list[tuple[np.ndarray, float]]

    @staticmethod
    def transform(feat_t: np.ndarray, columns: list[int]) -> np.ndarray:
        x = np.asarray(feat_t, dtype=np.float64)[:, columns].copy()
        logged = np.array([lg for _, lg in VOL_FEATURES])
        x[:, logged] = np.log(np.maximum(x[:, logged], _FLOOR))
        return x

    def _z(self, feat_t: np.ndarray) -> np.ndarray:
        return (self.transform(feat_t, self.columns) - self.mean) / self.std

    def _risk_design(self, z: np.ndarray) -> np.ndarray:
        # risk scales with the volatility level: logs for the shape, levels for the scale
        logged = np.array([lg for _, lg in VOL_FEATURES])
        return np.concatenate([z, np.exp(np.clip(z[:, logged], -6, 6))], axis=1)

    def hit_logits(self, feat_t: np.ndarray) -> np.ndarray:
        """[N, 8]: long-hit logits of the 4 horizons, then short-hit logits."""
        z = self._z(feat_t)
        return np.stack([z @ c + b for c, b in self.hit], axis=1)

    def risk_values(self, feat_t: np.ndarray) -> np.ndarray:
        """[N, 4] drawdown/rally forecasts (fractions >= 0, contract order)."""
        x = self._risk_design(self._z(feat_t))
        return np.clip(np.stack([x @ c + b for c, b in self.risk], axis=1), 0.0, None)

    @classmethod
    def fit(cls, feat_t: np.ndarray, long_hit: np.ndarray, short_hit: np.ndarray, risk: np.ndarray,
            columns: list[int], seed: int = 0) -> FeatureVolatility:
        """Fit on training rows: feat_t [N, F] unscaled, long_hit/short_hit [N, 4] {0, 1}, risk [N, 4]."""
        x = cls.transform(feat_t, columns)
        ok = np.isfinite(x).all(axis=1)
        x = x[ok]
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        fv = cls(list(columns), mean, std, [], [])
        z = (x - mean) / std
        for y in (*long_hit[ok].T, *short_hit[ok].T):
            yy = y.astype(int)
            if yy.min() == yy.max():  # a head that never (or always) hit in training: its base rate
                p = np.clip(yy.mean(), 1e-4, 1 - 1e-4)
                fv.hit.append((np.zeros(z.shape[1]), float(np.log(p / (1 - p)))))
            else:
                c, b = binary_logistic(z, yy, seed)
                fv.hit.append((np.asarray(c), b))
        design = fv._risk_design(z)
        for y in risk[ok].T:
            c, b = least_squares(design, y)
            fv.risk.append((np.asarray(c), b))
        return fv

    def to_dict(self) -> dict:
        return {"features": [n for n, _ in VOL_FEATURES], "columns": self.columns, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "hit": [[c.tolist(), b] for c, b in self.hit],
                "risk": [[c.tolist(), b] for c, b in self.risk]}

    @classmethod
    def from_dict(cls, doc: dict, feature_names: list[str] | None = None) -> FeatureVolatility:
        """Read the JSON form; with ``feature_names`` the stored columns must name the same features."""
        try:
            fv = cls([int(i) for i in doc["columns"]], np.asarray(doc["mean"], dtype=np.float64),
                     np.asarray(doc["std"], dtype=np.float64),
                     [(np.asarray(c, dtype=np.float64), float(b)) for c, b in doc["hit"]],
                     [(np.asarray(c, dtype=np.float64), float(b)) for c, b in doc["risk"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"unreadable volatility forecast ({exc})") from None
        k = len(VOL_FEATURES)
        k_risk = k + sum(lg for _, lg in VOL_FEATURES)  # see _risk_design
        shapes_ok = (len(fv.columns) == k and fv.mean.shape == fv.std.shape == (k,)
                     and len(fv.hit) == 2 * N_HORIZONS and len(fv.risk) == 4
                     and all(c.shape == (k,) for c, _ in fv.hit) and all(c.shape == (k_risk,) for c, _ in fv.risk))
        if not shapes_ok:
            raise ArtifactError("volatility forecast: wrong number of inputs or heads")
        if feature_names is not None and [feature_names[i] if i < len(feature_names) else None
                                          for i in fv.columns] != list(doc.get("features", [])):
            raise ArtifactError("volatility forecast: its columns do not name the bundle's volatility features")
        return fv
