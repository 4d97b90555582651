"""Post-hoc calibration of UnifiedPatchTST on the validation split.

The network is a residual on a direction-blind base (``model.patchtst``). For every output
block and horizon this fits, on validation rows only:

- ``residual_weight`` w in a small grid (0 = the base alone, 1 = the trained network): how much
  of the network's contribution survives - its shrinkage toward the base;
- ``inv_temperature`` 1/T (temperature scaling) for the logits of that block.

Both minimise the validation likelihood of their own target (cross-entropy for directions,
binary cross-entropy for level hits, squared error for returns, Huber for risks). Because w = 0
with T = 1 is always a candidate, the calibrated model never scores worse than its base on the
rows it was calibrated on. The results are buffers of the network, so every caller of its
forward (serving, evaluate, backtest) applies the same calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from model.contract import (
    DIRECTION_LOGITS,
    LONG_HIT_LOGITS,
    N_CLASSES,
    N_HORIZONS,
    RAW_SIZE,
    RETURNS,
    RISK,
    SHORT_HIT_LOGITS,
)
from model.targets import LabelledTargets

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
TEMPERATURE_BOUNDS = (0.2, 5.0)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _ce(logits: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(_log_softmax(logits)[np.arange(len(y)), y]))


def _bce(logit: np.ndarray, y: np.ndarray) -> float:
    # log(1 + e^z) - y z, stable for both signs
    return float(np.mean(np.logaddexp(0.0, logit) - y * logit))


def _huber(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b)
    return float(np.mean(np.where(d < 1.0, 0.5 * d * d, d - 0.5)))


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


@dataclass
class Calibration:
    """residual_weight [28] and inv_temperature [28] plus the validation losses before/after."""

    residual_weight: np.ndarray
    inv_temperature: np.ndarray
    report: dict


def _fit_logit_block(base: np.ndarray, res: np.ndarray, loss) -> tuple[float, float, float, float]:
    """Best (w, 1/T) for one block; returns (w, inv_t, loss_after, loss_uncalibrated_network)."""
    best = (1.0, 1.0, np.inf)
    for w in WEIGHTS:
        pre = base + w * res
        r = minimize_scalar(lambda t, pre=pre: loss(pre / t), bounds=TEMPERATURE_BOUNDS, method="bounded",
                            options={"xatol": 1e-3})
        val = float(r.fun)
        if val < best[2] - 1e-9:
            best = (w, 1.0 / float(r.x), val)
    return best[0], best[1], best[2], float(loss(base + res))


def fit_calibration(
    base: np.ndarray, res: np.ndarray, t: LabelledTargets, return_scale: np.ndarray, risk_scale: np.ndarray
) -> Calibration:
    """base, res [N, 28] pre-activations of the validation rows; t their targets."""
    w = np.ones(RAW_SIZE)
    inv_t = np.ones(RAW_SIZE)
    report: dict = {}
    d0 = DIRECTION_LOGITS.start
    for i in range(N_HORIZONS):
        sl = slice(d0 + N_CLASSES * i, d0 + N_CLASSES * (i + 1))
        y = t.direction[:, i]
        wi, ti, after, net = _fit_logit_block(base[:, sl], res[:, sl], lambda z, y=y: _ce(z, y))
        w[sl], inv_t[sl] = wi, ti
        report[f"direction_h{i}"] = {"weight": wi, "temperature": 1 / ti, "val_loss": after, "network": net,
                                     "base": _ce(base[:, sl], y)}
        for name, blk, yy in (("long_hit", LONG_HIT_LOGITS, t.long_hit), ("short_hit", SHORT_HIT_LOGITS, t.short_hit)):
            j = blk.start + i
            wi, ti, after, net = _fit_logit_block(base[:, j], res[:, j], lambda z, y=yy[:, i]: _bce(z, y))
            w[j], inv_t[j] = wi, ti
            report[f"{name}_h{i}"] = {"weight": wi, "temperature": 1 / ti, "val_loss": after, "network": net,
                                      "base": _bce(base[:, j], yy[:, i])}
        j = RETURNS.start + i
        target = t.returns[:, i] / return_scale[i]
        errs = {wi: float(np.mean((base[:, j] + wi * res[:, j] - target) ** 2)) for wi in WEIGHTS}
        w[j] = min(errs, key=errs.get)
        report[f"return_h{i}"] = {"weight": w[j], "val_mse": errs[w[j]], "base": errs[0.0]}
    for k in range(4):
        j = RISK.start + k
        target = t.risk[:, k] / risk_scale[k]
        errs = {wi: _huber(_softplus(base[:, j] + wi * res[:, j]), target) for wi in WEIGHTS}
        w[j] = min(errs, key=errs.get)
        report[f"risk_{k}"] = {"weight": w[j], "val_huber": errs[w[j]], "base": errs[0.0]}
    return Calibration(w, inv_t, report)
