"""Out-of-distribution gate: is the latest feature row far from what the model was trained on?

Like FreqAI's ``do_predict``: a row with too many features outside the training distribution is
flagged, and the processor answers NEUTRAL with the reason instead of trusting the model.
Training statistics travel in the bundle's ``preprocessing.npz`` (model.scaler) and are loaded
as ``model.feature_stats.FeatureStats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.feature_stats import FeatureStats


@dataclass(frozen=True)
class OODResult:
    """How one feature row compares with the training statistics."""

    n_features: int
    n_out: int  # outside [lo, hi] or |z| > z_limit
    n_nan: int  # NaN/inf (counted as out)
    worst: tuple[str, ...]  # up to 3 names (or indices) with the largest |z|

    @property
    def fraction_out(self) -> float:
        return (self.n_out + self.n_nan) / self.n_features if self.n_features else 0.0


def check_row(row: np.ndarray, stats: FeatureStats, z_limit: float) -> OODResult:
    """Compare one feature row [F] (unscaled, spec order) with ``stats``.

    A feature is out when |z| > z_limit or it falls outside the training quantile range; a
    zero-std feature is out whenever it differs from its training value.
    """
    x = np.asarray(row, dtype=np.float64).reshape(-1)
    if x.shape[0] != stats.n_features:
        raise ValueError(f"feature row has {x.shape[0]} values, training stats have {stats.n_features}")
    finite = np.isfinite(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(x - stats.mean) / stats.std
    z = np.where(stats.std > 0, z, np.where(x == stats.mean, 0.0, np.inf))
    out = finite & ((z > z_limit) | (x < stats.lo) | (x > stats.hi))
    z_rank = np.where(finite, z, np.inf)
    order = np.argsort(-z_rank)[:3]
    label = (lambda i: stats.names[i]) if stats.names else str
    worst = tuple(label(int(i)) for i in order if out[i] or not finite[i])
    return OODResult(x.shape[0], int(out.sum()), int((~finite).sum()), worst)
