"""Per-feature training statistics: written into the bundle by training, read by the scaler's
loader and by the OOD gate (signals.ood). It lives in model/ so both layers reach it downward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature training statistics, each a float64 array of shape [F] in spec column order.

    mean, std: moments of the (unscaled) training features; lo, hi: low/high training quantiles
    (e.g. 0.1 % / 99.9 %); names: optional column names for readable reasons.
    """

    mean: np.ndarray
    std: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.mean)
        for a in ("std", "lo", "hi"):
            if len(getattr(self, a)) != n:
                raise ValueError(f"FeatureStats.{a} has {len(getattr(self, a))} values, mean has {n}")
        if self.names and len(self.names) != n:
            raise ValueError(f"FeatureStats.names has {len(self.names)} entries, mean has {n}")

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @classmethod
    def from_matrix(
        cls, x: np.ndarray, names: Sequence[str] = (), quantiles: tuple[float, float] = (0.001, 0.999)
    ) -> FeatureStats:
        """Statistics of a training matrix ``x`` [N, F] (NaN ignored)."""
        x = np.asarray(x, dtype=np.float64)
        lo, hi = np.nanquantile(x, quantiles, axis=0)
        return cls(np.nanmean(x, axis=0), np.nanstd(x, axis=0), lo, hi, tuple(names))

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureStats:
        return cls(
            mean=np.asarray(d["mean"], dtype=np.float64),
            std=np.asarray(d["std"], dtype=np.float64),
            lo=np.asarray(d["lo"], dtype=np.float64),
            hi=np.asarray(d["hi"], dtype=np.float64),
            names=tuple(d.get("names") or ()),
        )
