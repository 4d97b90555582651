"""Baselines the model is judged against, fitted on the same training split and stored in the
bundle as plain numbers (JSON) and LightGBM text models - never pickle.

- majority: the training class shares (climatology).
- last_return: P(class | sign of the last bar return), from training counts.
- volatility: direction-blind; a logistic model of "the move clears the FLAT band" on
  volatility and time-of-day inputs, the move split by the training LONG share; level hits
  (logistic) and drawdown/rally risk (least squares) from the same inputs.
- logistic: multinomial logistic regression on the standardized features at t.
- lightgbm: gradient-boosted trees on the unscaled features at t.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression

from common.errors import ArtifactError
from model.metrics import Forecast
from model.targets import FLAT, LONG, SHORT, LabelledTargets

BASELINES_JSON = "baselines.json"
NAMES = ("majority", "last_return", "volatility", "logistic", "lightgbm")


@dataclass
class BaselineInputs:
    """Rows [N]: feat_t [N, F] unscaled features at t, feat_scaled [N, F], last_ret [N],
    vol [N, k] volatility/time inputs."""

    feat_t: np.ndarray
    feat_scaled: np.ndarray
    last_ret: np.ndarray
    vol: np.ndarray


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def binary_logistic(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[list[float], float]:
    m = LogisticRegression(C=1.0, max_iter=500, random_state=seed).fit(x, y)
    return m.coef_[0].tolist(), float(m.intercept_[0])


def least_squares(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> tuple[list[float], float]:
    """Linear regression with intercept (a whisker of ridge keeps collinear inputs solvable)."""
    xm, ym = x.mean(axis=0), y.mean()
    xc = x - xm
    coef = np.linalg.solve(xc.T @ xc / len(x) + ridge * np.eye(x.shape[1]), xc.T @ (y - ym) / len(x))
    return coef.tolist(), float(ym - xm @ coef)


# columns of the standardized volatility inputs that are log volatilities (log_rv4, log_rv16,
# log_rv96, log_range16; model.series.VOL_COLUMNS)
VOL_LOG_COLUMNS = slice(0, 4)


def risk_design(z: np.ndarray, log_columns: slice | np.ndarray) -> np.ndarray:
    """Inputs of a drawdown/rally regression: the standardized inputs, plus the volatility
    levels (exp of the standardized log-volatility columns; risk scales with them)."""
    return np.concatenate([z, np.exp(np.clip(z[:, log_columns], -6, 6))], axis=1)


def fit_risk(design: np.ndarray, risk: np.ndarray) -> list[tuple[list[float], float]]:
    """Least squares per drawdown/rally column of ``risk`` [N, 4] on ``design``."""
    return [least_squares(design, risk[:, j]) for j in range(risk.shape[1])]


def predict_risk(design: np.ndarray, params: list) -> np.ndarray:
    """[N, 4] drawdown/rally forecasts of ``fit_risk`` parameters (fractions >= 0)."""
    return np.clip(np.stack([design @ np.asarray(c) + b for c, b in params], axis=1), 0.0, None)


@dataclass
class Baselines:
    """All fitted baselines; ``params`` is the JSON-able part, ``boosters`` the LightGBM models."""

    params: dict = field(default_factory=dict)
    boosters: list[lgb.Booster] = field(default_factory=list)

    @classmethod
    def fit(
        cls, inp: BaselineInputs, t: LabelledTargets, seed: int, lgbm_rounds: int = 150, only_volatility: bool = False,
        logistic_regression: bool = True,
    ) -> Baselines:
        """Fit every baseline (``only_volatility``: majority, last-return and volatility only -
        what cross-validation compares against, without the slow logistic/LightGBM fits;
        ``logistic_regression=False``: no logistic baseline, for cross-validating the stack)."""
        n_h = t.direction.shape[1]
        shares = np.stack([np.bincount(t.direction[:, i], minlength=3) / len(t) for i in range(n_h)])
        sign = (inp.last_ret > 0).astype(int)
        table = np.zeros((n_h, 2, 3))
        for i in range(n_h):
            for s in (0, 1):
                counts = np.bincount(t.direction[sign == s, i], minlength=3) + 1.0  # Laplace smoothing
                table[i, s] = counts / counts.sum()
        vmean, vstd = inp.vol.mean(axis=0), inp.vol.std(axis=0) + 1e-9
        vz = (inp.vol - vmean) / vstd
        vol: dict = {
            "mean": vmean.tolist(),
            "std": vstd.tolist(),
            "move": [],
            "long_share": [],
            "long_hit": [],
            "short_hit": [],
            # drawdown/rally of the two longest horizons (contract order), least squares
            "risk": fit_risk(risk_design(vz, VOL_LOG_COLUMNS), t.risk),
        }
        logistic = []
        boosters = []
        for i in range(n_h):
            y = t.direction[:, i]
            vol["move"].append(binary_logistic(vz, (y != FLAT).astype(int), seed))
            moved = y != FLAT
            vol["long_share"].append(float((y[moved] == LONG).mean()) if moved.any() else 0.5)
            vol["long_hit"].append(binary_logistic(vz, t.long_hit[:, i].astype(int), seed))
            vol["short_hit"].append(binary_logistic(vz, t.short_hit[:, i].astype(int), seed))
            if only_volatility:
                continue
            if logistic_regression:
                lr = LogisticRegression(C=0.05, max_iter=300, random_state=seed).fit(inp.feat_scaled, y)
                coef = np.zeros((3, inp.feat_scaled.shape[1]))
                icpt = np.full(3, -30.0)  # a class never seen in training gets ~0 probability
                coef[lr.classes_] = lr.coef_
                icpt[lr.classes_] = lr.intercept_
                logistic.append({"coef": coef.tolist(), "intercept": icpt.tolist()})
            ds = lgb.Dataset(inp.feat_t, label=y, free_raw_data=True)
            params = {
                "objective": "multiclass",
                "num_class": 3,
                "learning_rate": 0.05,
                "num_leaves": 31,
                "min_data_in_leaf": 200,
                "feature_fraction": 0.5,
                "bagging_fraction": 0.7,
                "bagging_freq": 1,
                "lambda_l2": 1.0,
                "num_threads": 2,
                "deterministic": True,
                "force_row_wise": True,
                "seed": seed,
                "verbose": -1,
            }
            boosters.append(lgb.train(params, ds, num_boost_round=lgbm_rounds))
        params = {"majority": shares.tolist(), "last_return": table.tolist(), "volatility": vol}
        if logistic:
            params["logistic"] = logistic
        return cls(params, boosters)

    def volatility_z(self, vol: np.ndarray) -> np.ndarray:
        """Volatility/time inputs [N, k] standardized as the volatility baseline was fitted."""
        v = self.params["volatility"]
        return (vol - np.asarray(v["mean"])) / np.asarray(v["std"])

    def forecasts(self, inp: BaselineInputs) -> dict[str, Forecast]:
        """Forecasts of every baseline for the rows of ``inp``."""
        n = inp.last_ret.shape[0]
        p = self.params
        shares = np.asarray(p["majority"])
        n_h = shares.shape[0]
        out: dict[str, Forecast] = {"majority": Forecast(np.broadcast_to(shares, (n, n_h, 3)).copy())}
        table = np.asarray(p["last_return"])
        sign = (inp.last_ret > 0).astype(int)
        out["last_return"] = Forecast(
            table[:, sign].transpose(1, 0, 2), returns=np.repeat(inp.last_ret[:, None], n_h, axis=1)
        )
        v = p["volatility"]
        vz = self.volatility_z(inp.vol)
        d = np.zeros((n, n_h, 3))
        lh = np.zeros((n, n_h))
        sh = np.zeros((n, n_h))
        for i in range(n_h):
            c, b = v["move"][i]
            pm = _sigmoid(vz @ np.asarray(c) + b)
            d[:, i, LONG] = pm * v["long_share"][i]
            d[:, i, SHORT] = pm * (1 - v["long_share"][i])
            d[:, i, FLAT] = 1 - pm
            c, b = v["long_hit"][i]
            lh[:, i] = _sigmoid(vz @ np.asarray(c) + b)
            c, b = v["short_hit"][i]
            sh[:, i] = _sigmoid(vz @ np.asarray(c) + b)
        risk = None
        if "risk" in v:  # bundles trained before the risk baseline have none
            risk = predict_risk(risk_design(vz, VOL_LOG_COLUMNS), v["risk"])
        out["volatility"] = Forecast(d, long_hit=lh, short_hit=sh, risk=risk)
        if "logistic" in p:
            lr = np.stack(
                [_softmax(inp.feat_scaled @ np.asarray(m["coef"]).T + np.asarray(m["intercept"]))
                 for m in p["logistic"]],
                axis=1,
            )
            out["logistic"] = Forecast(lr, returns=lr[:, :, LONG] - lr[:, :, SHORT])
        if not self.boosters:
            return out
        gb = np.stack([b.predict(inp.feat_t) for b in self.boosters], axis=1)
        out["lightgbm"] = Forecast(gb, returns=gb[:, :, LONG] - gb[:, :, SHORT])
        return out

    def params_json(self) -> str:
        """The text of baselines.json."""
        return json.dumps(self.params) + "\n"

    def files(self) -> dict[str, str]:
        """Bundle files: baselines.json and one LightGBM text model per horizon."""
        files = {BASELINES_JSON: self.params_json()}
        for i, b in enumerate(self.boosters):
            files[lgbm_file(i)] = b.model_to_string()
        return files

    @classmethod
    def load(cls, root: Path) -> Baselines:
        """Read from a verified bundle directory."""
        path = root / BASELINES_JSON
        if not path.exists():
            raise ArtifactError(f"{root}: no {BASELINES_JSON}; this bundle was saved without baselines")
        params = json.loads(path.read_text())
        return cls(params, load_boosters(root, len(params["majority"])))


def lgbm_file(horizon_index: int) -> str:
    return f"baseline_lgbm_{horizon_index}.txt"


def load_boosters(root: Path, n_horizons: int) -> list[lgb.Booster]:
    """The bundle's LightGBM text models, one per horizon (text, never pickle)."""
    boosters = []
    for i in range(n_horizons):
        f = root / lgbm_file(i)
        if not f.exists():
            raise ArtifactError(f"{root}: missing {f.name}")
        boosters.append(lgb.Booster(model_str=f.read_text()))
    return boosters


__all__ = ["Baselines", "BaselineInputs", "NAMES", "LONG", "SHORT", "FLAT"]
