"""Per-horizon scores of a forecast against labelled targets (plain numpy / scikit-learn).

A forecast for N rows is ``Forecast``: direction probabilities [N, 4, 3] (DIRECTIONS order),
optionally a return score [N, 4] (for the information coefficient), level-hit
probabilities [N, 4] each side and drawdown/rally forecasts [N, 4] (scored by RMSE). Metrics a
forecaster cannot produce are None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import f1_score, roc_auc_score

from model.targets import FLAT, LONG, SHORT, LabelledTargets

EPS = 1e-7


@dataclass
class Forecast:
    direction: np.ndarray  # [N, 4, 3]
    returns: np.ndarray | None = None  # [N, 4] any monotone score of the expected return
    long_hit: np.ndarray | None = None  # [N, 4]
    short_hit: np.ndarray | None = None  # [N, 4]
    risk: np.ndarray | None = None  # [N, 4] drawdown/rally forecasts (contract order)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence (equal-width bins)."""
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)


def binary_log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def binary_ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Calibration error of a probability of a binary event (equal-width bins)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return float(sum((which == b).mean() * abs(p[which == b].mean() - y[which == b].mean())
                     for b in range(bins) if (which == b).any()))


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2 or not np.isfinite(score).all():
        return None
    return float(roc_auc_score(y, score))


def direction_auc(p: np.ndarray, y: np.ndarray) -> float | None:
    """LONG vs SHORT on rows whose outcome was not FLAT; score P(L) / (P(L) + P(S))."""
    m = y != FLAT
    pl, ps = p[m, LONG], p[m, SHORT]
    # no epsilon in the denominator and rounding to 12 digits: a direction-blind forecaster
    # (constant LONG:SHORT ratio) must score exactly 0.5, not rank rows by float noise
    score = np.round(pl / np.maximum(pl + ps, 1e-300), 12)
    return _auc((y[m] == LONG).astype(int), score)


def information_coefficient(score: np.ndarray, realised: np.ndarray) -> float | None:
    if np.std(score) == 0:
        return None
    return float(spearmanr(score, realised).statistic)


def horizon_scores(f: Forecast, t: LabelledTargets, i: int) -> dict[str, float | None]:
    """All scores of horizon index i."""
    p = np.clip(f.direction[:, i, :], EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    y = t.direction[:, i]
    out: dict[str, float | None] = {
        "log_loss": log_loss(p, y),
        "accuracy": float(np.mean(p.argmax(axis=1) == y)),
        "macro_f1": float(f1_score(y, p.argmax(axis=1), average="macro", labels=[LONG, SHORT, FLAT])),
        "brier": brier(p, y),
        "ece": ece(p, y),
        "direction_auc": direction_auc(p, y),
        "ic": information_coefficient(f.returns[:, i], t.returns[:, i]) if f.returns is not None else None,
        "long_hit_auc": _auc(t.long_hit[:, i].astype(int), f.long_hit[:, i]) if f.long_hit is not None else None,
        "short_hit_auc": _auc(t.short_hit[:, i].astype(int), f.short_hit[:, i]) if f.short_hit is not None else None,
        "long_hit_log_loss": binary_log_loss(f.long_hit[:, i], t.long_hit[:, i]) if f.long_hit is not None else None,
        "short_hit_log_loss": binary_log_loss(f.short_hit[:, i], t.short_hit[:, i])
        if f.short_hit is not None
        else None,
        "long_hit_ece": binary_ece(f.long_hit[:, i], t.long_hit[:, i]) if f.long_hit is not None else None,
        "short_hit_ece": binary_ece(f.short_hit[:, i], t.short_hit[:, i]) if f.short_hit is not None else None,
        "drawdown_rmse": None,
        "rally_rmse": None,
    }
    j = risk_index(i, t.direction.shape[1])
    if j is not None and f.risk is not None:  # the risk block covers the two longest horizons
        out["drawdown_rmse"] = rmse(f.risk[:, j], t.risk[:, j])
        out["rally_rmse"] = rmse(f.risk[:, j + 1], t.risk[:, j + 1])
    return out


def risk_index(i: int, n_horizons: int) -> int | None:
    """Column of horizon i's drawdown in the risk block (rally is the next one); None for the
    horizons the block does not cover."""
    k = i - (n_horizons - 2)
    return 2 * k if k >= 0 else None


def rmse(forecast: np.ndarray, realised: np.ndarray) -> float:
    """Root mean squared error: the squared error is the proper score of a mean forecast."""
    return float(np.sqrt(np.mean((np.asarray(forecast) - np.asarray(realised)) ** 2)))


def score_all(f: Forecast, t: LabelledTargets, horizons: tuple[int, ...]) -> dict[str, dict[str, float | None]]:
    return {f"h{h}": horizon_scores(f, t, i) for i, h in enumerate(horizons)}


def class_shares(t: LabelledTargets) -> np.ndarray:
    """[4, 3] share of each class per horizon."""
    return np.stack([np.bincount(t.direction[:, i], minlength=3) / len(t) for i in range(t.direction.shape[1])])


def row_log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy of class probabilities p [N, 3] for outcomes y [N]."""
    return -np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))


def bootstrap_mean_ci(
    values: np.ndarray, groups: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` and a block-bootstrap confidence interval, resampling whole ``groups``
    (e.g. days: neighbouring anchors share most of their future, so rows are not independent)."""
    values = np.asarray(values, dtype=np.float64)
    _, g = np.unique(groups, return_inverse=True)
    n_g = int(g.max()) + 1
    sums = np.bincount(g, weights=values, minlength=n_g)
    counts = np.bincount(g, minlength=n_g).astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n_g, size=(n_boot, n_g))
    boot = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(values.mean()), float(lo), float(hi)


def log_loss_difference(
    model: Forecast, base: Forecast, t: LabelledTargets, days: np.ndarray, horizons: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    """Per horizon: model minus baseline direction log-loss (negative = the model is better),
    with a 95 % day-block bootstrap interval."""
    out = {}
    for i, h in enumerate(horizons):
        y = t.direction[:, i]
        d = row_log_loss(model.direction[:, i], y) - row_log_loss(base.direction[:, i], y)
        mean, lo, hi = bootstrap_mean_ci(d, days, seed=i)
        out[f"h{h}"] = {"diff": mean, "ci_low": lo, "ci_high": hi}
    return out
