"""Stacking the bundle's LightGBM into the model's direction forecast (log-linear pooling).

The calibrated base + residual network knows "will it move" (volatility) but not "which way":
its direction AUC is 0.50. The bundle's LightGBM, trained on the same training split, has a
small direction skill (AUC 0.53-0.56 on later periods). Per horizon h the stacked direction
distribution is

    log p(c) = a_h * log p_model(c) + b_h * log p_lightgbm(c) + const

with (a_h, b_h) fitted on validation rows by maximum likelihood (``fit_pool``). (1, 0) - the
model alone - is where the fit starts and a candidate it is compared against, so on the rows it
was fitted on the stack never scores worse than the model. No per-class bias is fitted: a bias
learns the validation months' drift, which half-month probes showed does not carry over.

``DirectionStack.apply`` rewrites the direction logits of raw contract rows; it is called by
the one inference path (``model.inference``), by evaluation and by cross-validation, so the
same raw input gives the same probabilities everywhere. Only the 12 direction logits change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
from scipy.optimize import minimize

from common.errors import ArtifactError
from model.baselines import load_boosters
from model.contract import DIRECTION_LOGITS, N_CLASSES, N_HORIZONS, RawOutputs

STACK_JSON = "stack.json"
_EPS = 1e-12
_BOUNDS = ((0.0, 3.0), (0.0, 3.0))  # pooling weights are non-negative: no forecaster is inverted


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _nll(logp: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(logp[np.arange(len(y)), y]))


def pooled(log_model: np.ndarray, log_lgb: np.ndarray, a: float, b: float) -> np.ndarray:
    """[N, 3] normalised log-probabilities of the pool."""
    return _log_softmax(a * log_model + b * log_lgb)


def fit_pool(model_probs: np.ndarray, lgb_probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict]:
    """model_probs, lgb_probs [N, H, 3], y [N, H] validation labels -> weights [H, 2], report."""
    weights = np.zeros((model_probs.shape[1], 2))
    report: dict = {}
    for i in range(model_probs.shape[1]):
        lm = np.log(np.clip(model_probs[:, i], _EPS, 1.0))
        ll = np.log(np.clip(lgb_probs[:, i], _EPS, 1.0))
        yy = y[:, i]
        res = minimize(lambda w, lm=lm, ll=ll, yy=yy: _nll(pooled(lm, ll, w[0], w[1]), yy), x0=[1.0, 0.0],
                       method="L-BFGS-B", bounds=_BOUNDS)
        model_only = _nll(pooled(lm, ll, 1.0, 0.0), yy)
        w = res.x if res.fun < model_only else np.array([1.0, 0.0])
        weights[i] = w
        report[f"h{i}"] = {"a_model": round(float(w[0]), 4), "b_lightgbm": round(float(w[1]), 4),
                           "val_loss_model": model_only, "val_loss_lightgbm": _nll(pooled(lm, ll, 0.0, 1.0), yy),
                           "val_loss_stacked": min(float(res.fun), model_only), "rows": int(len(yy))}
    return weights, report


@dataclass
class DirectionStack:
    """Pooling weights [H, 2] (model, LightGBM) and the LightGBM boosters, one per horizon."""

    weights: np.ndarray
    boosters: list[lgb.Booster] = field(repr=False)
    report: dict = field(default_factory=dict)

    def lightgbm_probs(self, feat_t: np.ndarray) -> np.ndarray:
        """Unscaled features at t [N, F] -> LightGBM direction probabilities [N, H, 3]."""
        x = np.asarray(feat_t, dtype=np.float64)
        return np.stack([b.predict(x) for b in self.boosters], axis=1)

    def apply(self, raw: np.ndarray, feat_t: np.ndarray) -> np.ndarray:
        """raw [N, 28] contract rows, feat_t [N, F] their unscaled features at t -> a copy whose
        direction logits are the pooled log-probabilities."""
        out = np.array(raw, dtype=np.float32, copy=True)
        if out.shape[0] == 0:
            return out
        lgb_p = self.lightgbm_probs(feat_t)
        d0 = DIRECTION_LOGITS.start
        for i in range(N_HORIZONS):
            sl = slice(d0 + N_CLASSES * i, d0 + N_CLASSES * (i + 1))
            lm = _log_softmax(out[:, sl].astype(np.float64))
            ll = np.log(np.clip(lgb_p[:, i], _EPS, 1.0))
            out[:, sl] = pooled(lm, ll, *self.weights[i])
        return out

    def to_json(self) -> str:
        return json.dumps({"method": "log-linear pool of model and LightGBM direction probabilities",
                           "weights": self.weights.tolist(), "report": self.report}, indent=2) + "\n"

    @classmethod
    def load(cls, root: Path) -> DirectionStack | None:
        """The stack of a verified bundle directory; None when it has none."""
        path = root / STACK_JSON
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            weights = np.asarray(doc["weights"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: unreadable stack ({exc})") from None
        if weights.shape != (N_HORIZONS, 2) or not np.isfinite(weights).all():
            raise ArtifactError(f"{path}: weights must be {N_HORIZONS} finite (model, lightgbm) pairs")
        return cls(weights, load_boosters(root, N_HORIZONS), doc.get("report", {}))


def fit_stack(raw: np.ndarray, feat_t: np.ndarray, y: np.ndarray, boosters: list[lgb.Booster]) -> DirectionStack:
    """Fit the pool on validation rows: raw [N, 28] model outputs, feat_t [N, F] unscaled
    features at t, y [N, H] direction labels; ``boosters`` the bundle's LightGBM."""
    probe = DirectionStack(np.tile([1.0, 0.0], (N_HORIZONS, 1)), boosters)
    weights, report = fit_pool(RawOutputs.read(raw).direction_probs, probe.lightgbm_probs(feat_t), y)
    return DirectionStack(weights, boosters, report)
