"""Log volatility read off a context window: the volatility baseline's own inputs.

One definition for the network's volatility base (``model.patchtst``, torch, inside the
compiled forward) and the stack's feature-volatility forecast (``model.feature_volatility``,
numpy rows): log realized volatility over the last 4, 16 and 96 bars from the window's 1-bar
log returns (``model.series`` computes the baseline's from candles the same way) and the log
mean bar range over 16 bars. Logs of volatility stay in range when a regime is several times
calmer or wilder than the training years; the volatility levels of the last bar, standardized
on those years, do not (cross-validation fold 2020-05..2021-07: 5.6 % of its rows beyond the
scaler's clip).
"""

from __future__ import annotations

import torch

HISTORY_FEATURES = ("returns.logret_1", "candle.shape.range_pct")  # read over the whole window
RV_BARS = (4, 16, 96)  # realized-volatility windows of the volatility baseline (model.series)
RANGE_BARS = 16
N_LOG_VOL = len(RV_BARS) + 1


def log_volatility(history: torch.Tensor) -> torch.Tensor:
    """history [B, L, 2] unscaled (1-bar log return, bar range), oldest bar first -> [B, 4]:
    log realized volatility over the last 4, 16, 96 bars (fewer when L is shorter), log mean range."""
    r, rng = history[..., 0], history[..., 1]
    cols = [0.5 * torch.log((r[:, -k:] ** 2).mean(dim=1) + 1e-12) for k in RV_BARS]
    cols.append(torch.log(rng[:, -RANGE_BARS:].mean(dim=1).clamp_min(0.0) + 1e-9))  # ranges are >= 0
    return torch.stack(cols, dim=1)
