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
    # control: on the same outcomes, a forecast that leans to the realised side does rank
    lean = np.where(y == 0, 0.6, 0.4)
    ranked = np.stack([pm * lean, pm * (1 - lean), 1 - pm], axis=1)
    assert direction_auc(ranked, y) == 1.0


def test_direction_auc_ranks_long_against_short_and_ignores_flat() -> None:
    """The same metric scores a forecaster that does rank: 1 when perfect, 0 when reversed, and
    the rank AUC of P(L) / (P(L) + P(S)) in between; FLAT outcomes never enter it."""
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 1, 0, 1, 2, 2])
    right = np.array([[0.6, 0.1, 0.3], [0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.5, 0.3], [0.9, 0.0, 0.1],
                      [0.0, 0.9, 0.1]])
    assert direction_auc(right, y) == 1.0
    assert direction_auc(right[:, [1, 0, 2]], y) == 0.0
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(3), 400)
    y = rng.integers(0, 3, 400)
    m = y != 2
    expected = roc_auc_score((y[m] == 0).astype(int), p[m, 0] / (p[m, 0] + p[m, 1]))
    assert abs(direction_auc(p, y) - expected) < 1e-9
    flat_changed = p.copy()
    flat_changed[~m] = rng.dirichlet(np.ones(3), int((~m).sum()))
    assert direction_auc(flat_changed, y) == direction_auc(p, y)


def test_log_loss_and_ece_of_perfect_and_uniform_forecasts() -> None:
    y = np.array([0, 1, 2, 0])
    assert log_loss(np.eye(3)[y], y) < 1e-6
    assert abs(log_loss(np.full((4, 3), 1 / 3), y) - np.log(3)) < 1e-9
    assert ece(np.eye(3)[y], y) == 0.0
    # uniform: top-label confidence 1/3, top label (class 0) right on half the rows
    assert abs(ece(np.full((4, 3), 1 / 3), y) - (0.5 - 1 / 3)) < 1e-12


def test_ece_weights_each_bin_by_its_share_of_rows() -> None:
    """Confident 0.9 on 8 rows with 4 right (gap 0.4), 0.5 on 2 rows with both right (gap 0.5):
    ECE = 0.8 * 0.4 + 0.2 * 0.5."""
    p = np.array([[0.9, 0.05, 0.05]] * 8 + [[0.5, 0.3, 0.2]] * 2)
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 0, 0])
    assert abs(ece(p, y) - (0.8 * 0.4 + 0.2 * 0.5)) < 1e-12
