"""A direction-blind volatility forecast of the level-hit and risk targets from the model's own
inputs: the unscaled features at t and the context window's bar returns and ranges.

Why it exists: the network's volatility base is trained jointly with everything else and, on a
short budget or a regime unlike its training years, its level-hit heads can lose to the
candle-based volatility baseline (cross-validation fold 2020-05..2021-07 at 4 h/12 h). This
forecast has the baseline's form and inputs - a logistic model per hit head and least squares
per risk output, fitted to convergence on training rows, on realized volatility over the last
4, 16 and 96 bars (from the window's 1-bar log returns: the baseline's own numbers), the mean
bar range over 16 bars, time of day and week - plus a few volatility indicators of the last bar.
It reads only feature columns, so the serving path (features, not candles) computes it too.
``model.stacking`` pools it with the network on validation rows. Plain numbers (JSON), no pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.errors import ArtifactError
from model.baselines import binary_logistic, fit_risk, predict_risk, risk_design
from model.contract import N_HORIZONS
from model.window_volatility import HISTORY_FEATURES, N_LOG_VOL, log_volatility

# (feature of the last bar, take the log): volatility levels are log-normal-ish
VOL_FEATURES: tuple[tuple[str, bool], ...] = (
    ("volatility.realized_10", True), ("volatility.realized_50", True), ("volatility.parkinson_10", True),
    ("volatility.natr_14", True), ("volatility.trange_pct", True),
    ("time.cyclical.hour_sin", False), ("time.cyclical.hour_cos", False),
    ("time.cyclical.weekday_sin", False), ("time.cyclical.weekday_cos", False),
)
_FLOOR = 1e-6  # a zero range (a flat bar) is a tiny volatility, not log(0)
# inputs that are log volatilities: their levels also enter the risk regression
_LOG_INPUTS = np.array([lg for _, lg in VOL_FEATURES] + [True] * N_LOG_VOL)
N_INPUTS = len(_LOG_INPUTS)


def vol_columns(feature_names: list[str]) -> tuple[list[int], list[int]] | None:
    """(columns of ``VOL_FEATURES``, columns of ``HISTORY_FEATURES``) in a feature layout; None
    when any is missing."""
    try:
        return ([feature_names.index(n) for n, _ in VOL_FEATURES],
                [feature_names.index(n) for n in HISTORY_FEATURES])
    except ValueError:
        return None


def history_inputs(history: np.ndarray) -> np.ndarray:
    """history [N, C, 2] (log return, range) oldest bar first -> [N, 4] log volatilities
    (``model.window_volatility``, the network base's own numbers)."""
    return log_volatility(torch.from_numpy(np.asarray(history, dtype=np.float64))).numpy()


@dataclass
class FeatureVolatility:
    """columns / history_columns: indices into the feature row; mean/std [N_INPUTS] of the
    inputs; hit [8] (coef, intercept) - long hits h0..h3 then short hits; risk [4] (coef over
    the inputs and the volatility levels, intercept)."""

    columns: list[int]
    history_columns: list[int]
    mean: np.ndarray
    std: np.ndarray
    hit: list[tuple[np.ndarray, float]]
    risk: list[tuple[np.ndarray, float]]

    @staticmethod
    def inputs(feat_t: np.ndarray, history: np.ndarray, columns: list[int]) -> np.ndarray:
        """feat_t [N, F] unscaled, history [N, C, 2] -> inputs [N, N_INPUTS] (before standardizing)."""
        x = np.asarray(feat_t, dtype=np.float64)[:, columns].copy()
        logged = _LOG_INPUTS[: len(columns)]
        x[:, logged] = np.log(np.maximum(x[:, logged], _FLOOR))
        return np.concatenate([x, history_inputs(history)], axis=1)

    def _z(self, feat_t: np.ndarray, history: np.ndarray) -> np.ndarray:
        return (self.inputs(feat_t, history, self.columns) - self.mean) / self.std

    def hit_logits(self, feat_t: np.ndarray, history: np.ndarray) -> np.ndarray:
        """[N, 8]: long-hit logits of the 4 horizons, then short-hit logits."""
        z = self._z(feat_t, history)
        return np.stack([z @ c + b for c, b in self.hit], axis=1)

    def risk_values(self, feat_t: np.ndarray, history: np.ndarray) -> np.ndarray:
        """[N, 4] drawdown/rally forecasts (fractions >= 0, contract order)."""
        return predict_risk(risk_design(self._z(feat_t, history), _LOG_INPUTS), self.risk)

    @classmethod
    def fit(cls, feat_t: np.ndarray, history: np.ndarray, long_hit: np.ndarray, short_hit: np.ndarray,
            risk: np.ndarray, columns: tuple[list[int], list[int]], seed: int = 0) -> FeatureVolatility:
        """Fit on training rows: feat_t [N, F] unscaled, history [N, C, 2] of the
        ``HISTORY_FEATURES`` columns, long_hit/short_hit [N, 4] {0, 1}, risk [N, 4]."""
        at_t, hist = columns
        x = cls.inputs(feat_t, history, at_t)
        ok = np.isfinite(x).all(axis=1)
        x = x[ok]
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        fv = cls(list(at_t), list(hist), mean, std, [], [])
        z = (x - mean) / std
        for y in (*long_hit[ok].T, *short_hit[ok].T):
            yy = y.astype(int)
            if yy.min() == yy.max():  # a head that never (or always) hit in training: its base rate
                p = np.clip(yy.mean(), 1e-4, 1 - 1e-4)
                fv.hit.append((np.zeros(z.shape[1]), float(np.log(p / (1 - p)))))
            else:
                c, b = binary_logistic(z, yy, seed)
                fv.hit.append((np.asarray(c), b))
        fv.risk = [(np.asarray(c), b) for c, b in fit_risk(risk_design(z, _LOG_INPUTS), risk[ok])]
        return fv

    def to_dict(self) -> dict:
        return {"features": [n for n, _ in VOL_FEATURES], "history_features": list(HISTORY_FEATURES),
                "columns": self.columns, "history_columns": self.history_columns, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "hit": [[c.tolist(), b] for c, b in self.hit],
                "risk": [[c.tolist(), b] for c, b in self.risk]}

    @classmethod
    def from_dict(cls, doc: dict, feature_names: list[str] | None = None) -> FeatureVolatility:
        """Read the JSON form; with ``feature_names`` the stored columns must name the same features."""
        try:
            fv = cls([int(i) for i in doc["columns"]], [int(i) for i in doc["history_columns"]],
                     np.asarray(doc["mean"], dtype=np.float64), np.asarray(doc["std"], dtype=np.float64),
                     [(np.asarray(c, dtype=np.float64), float(b)) for c, b in doc["hit"]],
                     [(np.asarray(c, dtype=np.float64), float(b)) for c, b in doc["risk"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"unreadable volatility forecast ({exc})") from None
        k = N_INPUTS
        k_risk = k + int(_LOG_INPUTS.sum())  # see model.baselines.risk_design
        shapes_ok = (len(fv.columns) == len(VOL_FEATURES) and len(fv.history_columns) == len(HISTORY_FEATURES)
                     and fv.mean.shape == fv.std.shape == (k,)
                     and len(fv.hit) == 2 * N_HORIZONS and len(fv.risk) == 4
                     and all(c.shape == (k,) for c, _ in fv.hit) and all(c.shape == (k_risk,) for c, _ in fv.risk))
        if not shapes_ok:
            raise ArtifactError("volatility forecast: wrong number of inputs or heads")
        if feature_names is not None:
            named = [feature_names[i] if i < len(feature_names) else None for i in fv.columns + fv.history_columns]
            if named != list(doc.get("features", [])) + list(doc.get("history_features", [])):
                raise ArtifactError("volatility forecast: its columns do not name the bundle's volatility features")
        return fv
