"""Scores: a direction-blind forecaster gets direction AUC 0.5; log-loss/ECE sanity."""

from __future__ import annotations

import numpy as np

from model.metrics import direction_auc, ece, log_loss


def test_direction_blind_forecast_has_auc_one_half() -> None:
    """A forecast whose LONG:SHORT ratio is constant cannot rank directions (AUC exactly 0.5)."""
    rng = np.random.default_rng(0)
    pm = rng.uniform(0.2, 0.9, 500)  # P(move) varies with volatility
    p = np.stack([pm * 0.47, pm * 0.53, 1 - pm], axis=1)
    y = np.where(pm > 0.6, 1, rng.integers(0, 3, 500))  # outcome correlated with P(move) only
    assert direction_auc(p, y) == 0.5


def test_log_loss_and_ece_of_perfect_and_uniform_forecasts() -> None:
    y = np.array([0, 1, 2, 0])
    assert log_loss(np.eye(3)[y], y) < 1e-6
    assert abs(log_loss(np.full((4, 3), 1 / 3), y) - np.log(3)) < 1e-9
    assert ece(np.eye(3)[y], y) == 0.0
