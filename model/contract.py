"""The output contract of UnifiedPatchTST: one typed definition used by the loss, the signal
processor, the prediction log and the backtest.

20 named outputs over 4 horizons (horizons are counted in model bars, see ``TargetSpec``):

==================  =====  ==========================================================
block               count  meaning
==================  =====  ==========================================================
``return_h{h}``       4    expected return close(t+h)/close(t) - 1, a fraction
``direction_h{h}``    4    3-class distribution over LONG / SHORT / FLAT (12 logits raw)
``long_hit_h{h}``     4    P(max high in (t, t+h] >= close(t) * (1 + level_h))
``short_hit_h{h}``    4    P(min low in (t, t+h] <= close(t) * (1 - level_h))
``risk``              4    max drawdown and max rally (fractions >= 0) over the two
                           longest horizons: drawdown_h{H3}, rally_h{H3}, drawdown_h{H4},
                           rally_h{H4}
==================  =====  ==========================================================

The raw model tensor is ``[batch, RAW_SIZE]`` (RAW_SIZE = 28) laid out as
``returns(4) | direction logits(4x3, horizon-major) | long-hit logits(4) | short-hit logits(4)
| risk(4)``. ``ModelOutput.from_raw`` turns one row into probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_HORIZONS = 4
DIRECTIONS: tuple[str, str, str] = ("LONG", "SHORT", "FLAT")
N_CLASSES = len(DIRECTIONS)
LONG_INDEX, SHORT_INDEX, FLAT_INDEX = 0, 1, 2  # positions of DIRECTIONS in every class axis

# Slices of the raw tensor's last dimension.
RETURNS = slice(0, 4)
DIRECTION_LOGITS = slice(4, 16)
LONG_HIT_LOGITS = slice(16, 20)
SHORT_HIT_LOGITS = slice(20, 24)
RISK = slice(24, 28)
RAW_SIZE = 28


@dataclass(frozen=True)
class TargetSpec:
    """How the targets were defined for a model; stored in the bundle.

    horizons: in bars of ``bar_minutes`` minutes (reference: 1, 4, 16, 48 bars of 15 min).
    flat_bands: per horizon, |return| below this fraction is FLAT.
    levels: per horizon, the long/short level distance as a fraction of close(t).
    abs_move_flat / abs_move_moved: per horizon, the mean |return| of FLAT and of non-FLAT
    training rows, so a class distribution also gives an expected absolute move
    (``expected_abs_move``); None in bundles trained before they were recorded.
    """

    bar_minutes: int = 15
    horizons: tuple[int, int, int, int] = (1, 4, 16, 48)
    flat_bands: tuple[float, float, float, float] = (0.001, 0.002, 0.004, 0.007)
    levels: tuple[float, float, float, float] = (0.002, 0.004, 0.008, 0.014)
    abs_move_flat: tuple[float, float, float, float] | None = None
    abs_move_moved: tuple[float, float, float, float] | None = None

    def expected_abs_move(self, direction_probs: np.ndarray) -> np.ndarray | None:
        """[..., 4, 3] class probabilities -> [..., 4] expected |return| (None if not recorded)."""
        if self.abs_move_flat is None or self.abs_move_moved is None:
            return None
        p_flat = np.asarray(direction_probs)[..., FLAT_INDEX]
        return p_flat * np.asarray(self.abs_move_flat) + (1 - p_flat) * np.asarray(self.abs_move_moved)

    def __post_init__(self) -> None:
        for name in ("horizons", "flat_bands", "levels"):
            if len(getattr(self, name)) != N_HORIZONS:
                raise ValueError(f"TargetSpec.{name} needs {N_HORIZONS} values")
        if list(self.horizons) != sorted(set(self.horizons)) or self.horizons[0] < 1:
            raise ValueError(f"TargetSpec.horizons must be increasing and >= 1, got {self.horizons}")

    @property
    def risk_horizons(self) -> tuple[int, int]:
        return self.horizons[2], self.horizons[3]

    def horizon_minutes(self, i: int) -> int:
        return self.horizons[i] * self.bar_minutes

    def output_names(self) -> list[str]:
        """The 20 documented output names, in contract order."""
        h = self.horizons
        r3, r4 = self.risk_horizons
        return (
            [f"return_h{x}" for x in h]
            + [f"direction_h{x}" for x in h]
            + [f"long_hit_h{x}" for x in h]
            + [f"short_hit_h{x}" for x in h]
            + [f"drawdown_h{r3}", f"rally_h{r3}", f"drawdown_h{r4}", f"rally_h{r4}"]
        )

    def to_dict(self) -> dict:
        return {
            "bar_minutes": self.bar_minutes,
            "horizons": list(self.horizons),
            "flat_bands": list(self.flat_bands),
            "levels": list(self.levels),
            **({"abs_move_flat": list(self.abs_move_flat)} if self.abs_move_flat is not None else {}),
            **({"abs_move_moved": list(self.abs_move_moved)} if self.abs_move_moved is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> TargetSpec:
        return cls(
            bar_minutes=int(d["bar_minutes"]),
            horizons=tuple(int(x) for x in d["horizons"]),
            flat_bands=tuple(float(x) for x in d["flat_bands"]),
            levels=tuple(float(x) for x in d["levels"]),
            abs_move_flat=tuple(float(x) for x in d["abs_move_flat"]) if "abs_move_flat" in d else None,
            abs_move_moved=tuple(float(x) for x in d["abs_move_moved"]) if "abs_move_moved" in d else None,
        )


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow warnings


@dataclass(frozen=True)
class RawOutputs:
    """The contract of N rows, vectorised: returns [N, 4]; direction_probs [N, 4, 3] (DIRECTIONS
    order); long_hit, short_hit [N, 4]; risk [N, 4]. The one reader of the raw layout."""

    returns: np.ndarray
    direction_probs: np.ndarray
    long_hit: np.ndarray
    short_hit: np.ndarray
    risk: np.ndarray

    @classmethod
    def read(cls, raw: np.ndarray) -> RawOutputs:
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != RAW_SIZE:
            raise ValueError(f"raw model output must be [N, {RAW_SIZE}], got {list(raw.shape)}")
        return cls(
            returns=raw[:, RETURNS].copy(),
            direction_probs=softmax(raw[:, DIRECTION_LOGITS].reshape(-1, N_HORIZONS, N_CLASSES)),
            long_hit=sigmoid(raw[:, LONG_HIT_LOGITS]),
            short_hit=sigmoid(raw[:, SHORT_HIT_LOGITS]),
            # the risk head is trained on non-negative excursions; clip guards the interpretation
            risk=np.clip(raw[:, RISK], 0.0, None),
        )


@dataclass(frozen=True)
class ModelOutput:
    """Interpreted outputs for one symbol at one bar.

    returns: [4] expected returns (fractions); direction_probs: [4, 3] rows sum to 1 in
    DIRECTIONS order; long_hit, short_hit: [4] probabilities; risk: [4] fractions >= 0;
    raw: [RAW_SIZE] the untouched model row.
    """

    returns: np.ndarray
    direction_probs: np.ndarray
    long_hit: np.ndarray
    short_hit: np.ndarray
    risk: np.ndarray
    raw: np.ndarray = field(repr=False)

    @classmethod
    def from_raw(cls, raw: np.ndarray) -> ModelOutput:
        raw = np.asarray(raw, dtype=np.float64).reshape(-1)
        if raw.shape[0] != RAW_SIZE:
            raise ValueError(f"raw model output must have {RAW_SIZE} values, got {raw.shape[0]}")
        r = RawOutputs.read(raw[None, :])
        return cls(r.returns[0], r.direction_probs[0], r.long_hit[0], r.short_hit[0], r.risk[0], raw=raw)

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.raw).all())

    def to_dict(self, spec: TargetSpec) -> dict:
        """The interpreted contract as named plain numbers (for logs and JSON)."""
        h = spec.horizons
        r3, r4 = spec.risk_horizons
        out: dict = {}
        for i, x in enumerate(h):
            out[f"return_h{x}"] = float(self.returns[i])
            out[f"direction_h{x}"] = {d: float(self.direction_probs[i, j]) for j, d in enumerate(DIRECTIONS)}
            out[f"long_hit_h{x}"] = float(self.long_hit[i])
            out[f"short_hit_h{x}"] = float(self.short_hit[i])
        for name, v in zip(
            (f"drawdown_h{r3}", f"rally_h{r3}", f"drawdown_h{r4}", f"rally_h{r4}"), self.risk, strict=True
        ):
            out[name] = float(v)
        return out
