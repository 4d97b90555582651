"""Feature scaling and per-feature training statistics, stored as plain numbers (npz, no pickle).

``FeatureScaler`` is scikit-learn's ``StandardScaler`` fitted on the training split only; only
its ``mean_`` / ``scale_`` arrays travel in the bundle and ``transform`` is plain numpy, so
loading never unpickles anything. ``model.feature_stats.FeatureStats`` (mean, std, 0.1% / 99.9% quantiles
``lo`` / ``hi``) feed the signal processor's out-of-distribution gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.preprocessing import StandardScaler

from common.errors import ArtifactError
from model.feature_stats import FeatureStats  # the one definition, shared with the OOD gate

# Standardized values beyond this are clipped: a new exchange or regime can produce values far
# outside the training range, and one extreme feature should not saturate every attention head.
DEFAULT_CLIP = 8.0


@dataclass(frozen=True)
class FeatureScaler:
    """mean [F], scale [F] (float64); transform: clip((x - mean) / scale, -clip, clip)."""

    mean: np.ndarray
    scale: np.ndarray
    clip: float = DEFAULT_CLIP

    @classmethod
    def fit(cls, x: np.ndarray, clip: float = DEFAULT_CLIP) -> FeatureScaler:
        """x [N, F] training rows (NaN ignored, as scikit-learn does)."""
        sk = StandardScaler().fit(x)
        return cls(
            mean=np.asarray(sk.mean_, dtype=np.float64),
            scale=np.asarray(sk.scale_, dtype=np.float64),
            clip=float(clip),
        )

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def subset(self, columns: list[int]) -> FeatureScaler:
        """The scaler of ``columns`` only."""
        return FeatureScaler(self.mean[columns], self.scale[columns], self.clip)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """x [..., F] -> float32 standardized and clipped (NaN stays NaN)."""
        z = (np.asarray(x, dtype=np.float32) - self.mean.astype(np.float32)) / self.scale.astype(np.float32)
        return np.clip(z, -self.clip, self.clip)


def save_preprocessing(path: Path, scaler: FeatureScaler, stats: FeatureStats) -> None:
    np.savez(
        path,
        scaler_mean=scaler.mean,
        scaler_scale=scaler.scale,
        scaler_clip=np.array([scaler.clip]),
        feature_names=np.array(stats.names, dtype=np.str_),
        stats_mean=stats.mean,
        stats_std=stats.std,
        stats_lo=stats.lo,
        stats_hi=stats.hi,
    )


def load_preprocessing(path: Path) -> tuple[FeatureScaler, FeatureStats]:
    """Read the npz with ``allow_pickle=False`` (object arrays are refused)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            scaler = FeatureScaler(z["scaler_mean"], z["scaler_scale"], float(z["scaler_clip"][0]))
            stats = FeatureStats(
                mean=z["stats_mean"],
                std=z["stats_std"],
                lo=z["stats_lo"],
                hi=z["stats_hi"],
                names=tuple(str(n) for n in z["feature_names"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable scaler/feature statistics ({exc})") from None
    if not (scaler.n_features == len(stats.names) == stats.mean.shape[0]):
        raise ArtifactError(f"{path}: scaler and feature statistics disagree on the number of features")
    return scaler, stats
