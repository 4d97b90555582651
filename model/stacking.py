"""Stacking: the model pooled with forecasters that know what it misses, weights fitted on
validation rows.

Direction. The calibrated base + residual network knows "will it move" (volatility) but not
"which way": its direction AUC is 0.50. The bundle's LightGBM, trained on the same training
split, has a small direction skill (AUC 0.53-0.56 on later periods). Per horizon h

    log p(c) = a_h * log p_model(c) + b_h * log p_lightgbm(c) + const

Level hits and risk. The network's level-hit heads can lose to a plain volatility forecast on a
regime unlike its training years (a cross-validation fold), so each hit head is pooled the same
way with the direction-blind ``FeatureVolatility`` forecast (fitted on training rows),
``logit p = a * logit p_model + b * logit p_volatility``, and each drawdown/rally output
linearly, ``risk = a * risk_model + b * risk_volatility``.

Every (a, b) is >= 0 and fitted on validation rows (likelihood; least squares for risk). (1, 0)
- the model alone - is where each fit starts and a candidate it is compared against, so on the
rows it was fitted on the stack never scores worse than the model. No bias is fitted: a bias
learns the validation months' drift, which half-month probes showed does not carry over.

``OutputStack.apply`` rewrites raw contract rows; it is called by the one inference path
(``model.inference``), by evaluation and by cross-validation, so the same raw input gives the
same outputs everywhere. Returns are never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
from scipy.optimize import lsq_linear, minimize

from common.errors import ArtifactError
from model.baselines import load_boosters
from model.contract import DIRECTION_LOGITS, LONG_HIT_LOGITS, N_CLASSES, N_HORIZONS, RISK, SHORT_HIT_LOGITS, RawOutputs
from model.dataset import AnchorPool
from model.feature_volatility import FeatureVolatility
from model.targets import LabelledTargets

STACK_JSON = "stack.json"
_EPS = 1e-12
_BOUNDS = ((0.0, 3.0), (0.0, 3.0))  # pooling weights are non-negative: no forecaster is inverted
HITS = slice(LONG_HIT_LOGITS.start, SHORT_HIT_LOGITS.stop)  # 8 hit logits: long h0..h3, short h0..h3


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _nll(logp: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(logp[np.arange(len(y)), y]))


def _binary_nll(logit: np.ndarray, y: np.ndarray) -> float:
    # -log sigmoid(z) = logaddexp(0, -z): stable for large logits
    return float(np.mean(np.logaddexp(0.0, -logit) * y + np.logaddexp(0.0, logit) * (1 - y)))


def pooled(log_model: np.ndarray, log_lgb: np.ndarray, a: float, b: float) -> np.ndarray:
    """[N, 3] normalised log-probabilities of the pool."""
    return _log_softmax(a * log_model + b * log_lgb)


def _fit_pair(loss, start_loss: float) -> tuple[np.ndarray, float]:
    """Minimise ``loss(a, b)`` from (1, 0); keep (1, 0) unless the fit is strictly better."""
    res = minimize(lambda w: loss(w[0], w[1]), x0=[1.0, 0.0], method="L-BFGS-B", bounds=_BOUNDS)
    if res.fun < start_loss:
        return res.x, float(res.fun)
    return np.array([1.0, 0.0]), start_loss


def fit_pool(model_probs: np.ndarray, lgb_probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict]:
    """model_probs, lgb_probs [N, H, 3], y [N, H] validation labels -> weights [H, 2], report."""
    weights = np.zeros((model_probs.shape[1], 2))
    report: dict = {}
    for i in range(model_probs.shape[1]):
        lm = np.log(np.clip(model_probs[:, i], _EPS, 1.0))
        ll = np.log(np.clip(lgb_probs[:, i], _EPS, 1.0))
        yy = y[:, i]
        model_only = _nll(pooled(lm, ll, 1.0, 0.0), yy)
        weights[i], stacked = _fit_pair(lambda a, b, lm=lm, ll=ll, yy=yy: _nll(pooled(lm, ll, a, b), yy), model_only)
        report[f"h{i}"] = {"a_model": round(float(weights[i, 0]), 4), "b_lightgbm": round(float(weights[i, 1]), 4),
                           "val_loss_model": model_only, "val_loss_lightgbm": _nll(pooled(lm, ll, 0.0, 1.0), yy),
                           "val_loss_stacked": stacked, "rows": int(len(yy))}
    return weights, report


def fit_binary_pool(model_logits: np.ndarray, vol_logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list]:
    """Per column k of [N, K] logits and {0, 1} outcomes: weights [K, 2] of
    ``a * model + b * volatility`` by likelihood, and the validation losses."""
    weights = np.zeros((model_logits.shape[1], 2))
    report = []
    for k in range(model_logits.shape[1]):
        zm, zv, yy = model_logits[:, k], vol_logits[:, k], y[:, k]
        model_only = _binary_nll(zm, yy)
        weights[k], stacked = _fit_pair(lambda a, b, zm=zm, zv=zv, yy=yy: _binary_nll(a * zm + b * zv, yy), model_only)
        report.append({"a_model": round(float(weights[k, 0]), 4), "b_volatility": round(float(weights[k, 1]), 4),
                       "val_loss_model": model_only, "val_loss_volatility": _binary_nll(zv, yy),
                       "val_loss_stacked": stacked})
    return weights, report


def fit_linear_pool(model_risk: np.ndarray, vol_risk: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list]:
    """Per column of [N, 4] risk forecasts: weights [4, 2] of ``a * model + b * volatility`` by
    least squares (bounded like the other pools), and the validation mean squared errors."""
    weights = np.zeros((model_risk.shape[1], 2))
    report = []
    for k in range(model_risk.shape[1]):
        x = np.stack([model_risk[:, k], vol_risk[:, k]], axis=1)
        model_only = float(np.mean((x[:, 0] - y[:, k]) ** 2))
        w = lsq_linear(x, y[:, k], bounds=(0.0, 3.0)).x
        stacked = float(np.mean((x @ w - y[:, k]) ** 2))
        if not stacked < model_only:
            w, stacked = np.array([1.0, 0.0]), model_only
        weights[k] = w
        report.append({"a_model": round(float(w[0]), 4), "b_volatility": round(float(w[1]), 4),
                       "val_mse_model": model_only, "val_mse_volatility": float(np.mean((x[:, 1] - y[:, k]) ** 2)),
                       "val_mse_stacked": stacked})
    return weights, report


@dataclass
class OutputStack:
    """Direction weights [H, 2] (model, LightGBM) with the LightGBM boosters, one per horizon;
    optionally the volatility forecast with hit weights [8, 2] and risk weights [4, 2]
    (model, volatility)."""

    weights: np.ndarray
    boosters: list[lgb.Booster] = field(repr=False)
    report: dict = field(default_factory=dict)
    volatility: FeatureVolatility | None = None
    hit_weights: np.ndarray | None = None
    risk_weights: np.ndarray | None = None

    def lightgbm_probs(self, feat_t: np.ndarray) -> np.ndarray:
        """Unscaled features at t [N, F] -> LightGBM direction probabilities [N, H, 3]."""
        x = np.asarray(feat_t, dtype=np.float64)
        return np.stack([b.predict(x) for b in self.boosters], axis=1)

    def apply_on_windows(self, raw: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """``apply`` for rows whose unscaled feature windows [N, C, F] are at hand (serving)."""
        hist = None if self.volatility is None else windows[:, :, self.volatility.history_columns]
        return self.apply(raw, windows[:, -1], hist)

    def apply_on_pool(self, raw: np.ndarray, pool: AnchorPool, rows: np.ndarray) -> np.ndarray:
        """``apply`` for rows of an anchor pool (evaluation, cross-validation, the Ray path)."""
        hist = None if self.volatility is None else pool.unscaled_windows(rows, self.volatility.history_columns)
        return self.apply(raw, pool.unscaled[rows], hist)

    def apply(self, raw: np.ndarray, feat_t: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
        """raw [N, 28] contract rows, feat_t [N, F] their unscaled features at t, history
        [N, C, 2] their windows' volatility columns (needed when the stack has a volatility part)
        -> a copy with pooled direction logits (and hit logits and risks)."""
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
        if self.volatility is not None:
            if history is None:
                raise ValueError("this stack pools a volatility forecast: the windows' history is needed")
            hw, rw = self.hit_weights, self.risk_weights
            vol_hits = self.volatility.hit_logits(feat_t, history)
            vol_risk = self.volatility.risk_values(feat_t, history)
            out[:, HITS] = hw[:, 0] * out[:, HITS] + hw[:, 1] * vol_hits
            out[:, RISK] = np.maximum(rw[:, 0] * out[:, RISK] + rw[:, 1] * vol_risk, 0.0)
        return out

    def to_json(self) -> str:
        doc: dict = {"method": "log-linear pool of model and LightGBM direction probabilities; hit logits and "
                               "risks pooled with a feature-volatility forecast",
                     "weights": self.weights.tolist(), "report": self.report}
        if self.volatility is not None:
            doc["volatility"] = self.volatility.to_dict()
            doc["hit_weights"] = self.hit_weights.tolist()
            doc["risk_weights"] = self.risk_weights.tolist()
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def load(cls, root: Path, feature_names: list[str] | None = None) -> OutputStack | None:
        """The stack of a verified bundle directory; None when it has none. A stack written
        before the volatility part existed pools the direction only."""
        path = root / STACK_JSON
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            weights = np.asarray(doc["weights"], dtype=np.float64)
            vol = doc.get("volatility")
            hw = np.asarray(doc["hit_weights"], dtype=np.float64) if vol else None
            rw = np.asarray(doc["risk_weights"], dtype=np.float64) if vol else None
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: unreadable stack ({exc})") from None
        if weights.shape != (N_HORIZONS, 2) or not np.isfinite(weights).all():
            raise ArtifactError(f"{path}: weights must be {N_HORIZONS} finite (model, lightgbm) pairs")
        volatility = None
        if vol:
            if hw.shape != (2 * N_HORIZONS, 2) or rw.shape != (4, 2) or not (np.isfinite(hw).all()
                                                                            and np.isfinite(rw).all()):
                raise ArtifactError(f"{path}: hit weights must be 8 and risk weights 4 finite pairs")
            try:
                volatility = FeatureVolatility.from_dict(vol, feature_names)
            except ArtifactError as exc:
                raise ArtifactError(f"{path}: {exc}") from None
        return cls(weights, load_boosters(root, N_HORIZONS), doc.get("report", {}), volatility, hw, rw)


def fit_stack(raw: np.ndarray, feat_t: np.ndarray, history: np.ndarray | None, t: LabelledTargets,
              boosters: list[lgb.Booster], volatility: FeatureVolatility | None = None) -> OutputStack:
    """Fit the pools on validation rows: raw [N, 28] model outputs, feat_t [N, F] unscaled
    features at t, history [N, C, 2] their windows' volatility columns, their targets ``t``;
    ``boosters`` the bundle's LightGBM, ``volatility`` the feature-volatility forecast fitted on
    training rows (None: direction only)."""
    probe = OutputStack(np.tile([1.0, 0.0], (N_HORIZONS, 1)), boosters)
    r = RawOutputs.read(raw)
    weights, direction_report = fit_pool(r.direction_probs, probe.lightgbm_probs(feat_t), t.direction)
    report: dict = {"direction": direction_report}
    if volatility is None:
        return OutputStack(weights, boosters, report)
    hw, hit_report = fit_binary_pool(np.asarray(raw[:, HITS], dtype=np.float64), volatility.hit_logits(feat_t, history),
                                     np.concatenate([t.long_hit, t.short_hit], axis=1))
    rw, risk_report = fit_linear_pool(np.asarray(raw[:, RISK], dtype=np.float64), volatility.risk_values(feat_t, history),
                                      t.risk)
    report["hits"] = hit_report
    report["risk"] = risk_report
    return OutputStack(weights, boosters, report, volatility, hw, rw)
