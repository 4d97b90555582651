"""UnifiedPatchTST: one network, all symbols, the 28-value raw contract of ``model/contract.py``.

Shapes (B = batch, L = context bars, F = features, P = patches, D = d_model):

    x [B, L, F] standardized features
      -> RevIN: per sample and feature, subtract the mean over time and divide by the std;
         the removed statistics (mean, log std) [B, 2F] become one extra "statistics token"
         so the level information (e.g. RSI at 80 vs 20) is not lost
      -> patches along time: [B, P, patch_len * F]; every token sees every feature
         (a channel-independent PatchTST would ignore the cross-feature information)
      -> Linear -> [B, P, D] + learned positions; prepend the statistics token -> [B, P+1, D]
      -> TransformerEncoder (pre-norm, GELU)
      -> pool: [statistics token output, mean of patch tokens] -> [B, 2D]
      -> multi-task heads -> raw [B, 28]

Every head is a residual on a direction-blind volatility base (``VolatilityBase``): a small MLP
of the last bar's volatility/activity/time features (or, with ``base_log_volatility``, of
scale-free ones plus the window's log volatility) that gives the move-vs-FLAT logit, level-hit
logits and risk, with constant LONG/SHORT offsets (so it knows nothing of direction). The
network's heads start at zero, so an untrained network *is* the base, and training moves away
from it only as far as validation allows. Two calibration buffers finish each output
(fitted on validation after training, see ``model.calibration``): ``residual_weight`` shrinks
the network's contribution and ``inv_temperature`` scales the logits (temperature scaling).
Serving, evaluation and the backtest all call this one forward, so all see calibrated numbers.

Returns and risks are predicted in units of their training-split standard deviation and scaled
back by the ``return_scale`` / ``risk_scale`` buffers (saved with the weights), so the raw
tensor carries fractions as the contract says.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import ModelConfig
from model.contract import DIRECTION_LOGITS, N_CLASSES, N_HORIZONS, RAW_SIZE, RETURNS, RISK
from model.window_volatility import N_LOG_VOL, log_volatility


class VolatilityBase(nn.Module):
    """Direction-blind forecast from volatility inputs: pre-activations [B, 28].

    Inputs: the ``inputs`` columns of the last bar and, when ``history`` names the (1-bar log
    return, bar range) columns, the window's log volatility (``model.window_volatility``: the
    volatility baseline's own inputs, unscaled with the scaler's numbers and standardized on
    training rows, see ``set_history_scaling``). Direction logits per horizon are
    (m + c_LONG, m + c_SHORT, 0): ``m`` (how likely a move beyond the FLAT band is) depends on
    the inputs, the LONG/SHORT split only on constants. Returns are a constant per horizon;
    level hits and risk depend on the inputs.
    """

    def __init__(self, inputs: tuple[int, ...], hidden: int, history: tuple[int, ...] = ()) -> None:
        super().__init__()
        n_log = N_LOG_VOL if history else 0
        self.register_buffer("inputs", torch.tensor(list(inputs), dtype=torch.long))
        self.register_buffer("history", torch.tensor(list(history), dtype=torch.long))
        self.register_buffer("history_center", torch.zeros(len(history)))  # scaler mean of the columns
        self.register_buffer("history_scale", torch.ones(len(history)))  # scaler scale of the columns
        self.register_buffer("log_vol_mean", torch.zeros(n_log))
        self.register_buffer("log_vol_std", torch.ones(n_log))
        self.mlp = nn.Sequential(nn.Linear(len(inputs) + n_log, hidden), nn.GELU(), nn.Linear(hidden, 16))
        self.ret = nn.Parameter(torch.zeros(N_HORIZONS))
        self.side = nn.Parameter(torch.zeros(N_HORIZONS, 2))  # LONG, SHORT offsets

    def log_volatility(self, history: torch.Tensor) -> torch.Tensor:
        """history [B, L, 2] scaled columns -> [B, 4] log volatility (not standardized). In
        float64: a float32 mean over the window rounds differently with the batch's size, and
        serving must give a symbol the same forecast in a tick of many symbols and alone."""
        h = history.double() * self.history_scale.double() + self.history_center.double()
        return log_volatility(h).to(history.dtype)

    @torch.no_grad()
    def set_history_scaling(self, center: torch.Tensor, scale: torch.Tensor, history: torch.Tensor) -> None:
        """The scaler's mean/scale of the history columns, then the mean/std of the log
        volatility over ``history`` [N, L, 2] (scaled training windows)."""
        self.history_center.copy_(center)
        self.history_scale.copy_(scale)
        lv = self.log_volatility(history)
        self.log_vol_mean.copy_(lv.mean(dim=0))
        self.log_vol_std.copy_(lv.std(dim=0) + 1e-6)

    def forward(self, last_row: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """last_row [B, F] scaled features, history [B, L, len(history)] scaled window columns
        -> pre-activations [B, 28] in the contract layout."""
        z = last_row[:, self.inputs]
        if self.history.numel():
            z = torch.cat([z, (self.log_volatility(history) - self.log_vol_mean) / self.log_vol_std], dim=-1)
        h = self.mlp(z)
        move, hits, risk = h[:, :4], h[:, 4:12], h[:, 12:16]
        b = last_row.shape[0]
        direction = torch.cat(
            [move.unsqueeze(-1) + self.side.unsqueeze(0), torch.zeros(b, N_HORIZONS, 1, dtype=h.dtype, device=h.device)],
            dim=-1,
        ).reshape(b, N_HORIZONS * N_CLASSES)
        return torch.cat([self.ret.expand(b, -1), direction, hits, risk], dim=-1)


def logit_mask() -> torch.Tensor:
    """[28] 1 where the raw value is a logit (direction, long/short hit), else 0."""
    m = torch.zeros(RAW_SIZE)
    m[DIRECTION_LOGITS.start : RISK.start] = 1.0
    return m


class RevIN(nn.Module):
    """Instance normalisation over time with a learnable per-feature affine map."""

    def __init__(self, n_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_features))
        self.bias = nn.Parameter(torch.zeros(n_features))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, F] -> (normalised [B, L, F], statistics [B, 2F] = mean | log std)."""
        mean = x.mean(dim=1, keepdim=True)
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps)
        z = (x - mean) / std * self.weight + self.bias
        stats = torch.cat([mean.squeeze(1), torch.log(std.squeeze(1))], dim=-1)
        return z, stats


class UnifiedPatchTST(nn.Module):
    """PatchTST-style encoder with feature-mixing patch tokens and multi-task heads."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f, d = cfg.n_features, cfg.d_model
        self.revin = RevIN(f) if cfg.revin else None
        self.patch_embed = nn.Linear(cfg.patch_len * f, d)
        self.stats_embed = nn.Linear(2 * f, d)
        self.pos = nn.Parameter(torch.randn(1, cfg.n_patches + 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=cfg.n_heads,
            dim_feedforward=cfg.ff_mult * d,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(2 * d)
        self.trunk = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(cfg.dropout))
        # one head per block so that each task has its own last layer
        self.head_returns = nn.Linear(d, N_HORIZONS)
        self.head_direction = nn.Linear(d, N_HORIZONS * N_CLASSES)
        self.head_hits = nn.Linear(d, 2 * N_HORIZONS)
        self.head_risk = nn.Linear(d, 4)
        for head in (self.head_returns, self.head_direction, self.head_hits, self.head_risk):
            nn.init.zeros_(head.weight)  # residual heads start at zero: the model starts as its base
            nn.init.zeros_(head.bias)
        self.base = VolatilityBase(cfg.base_inputs, cfg.base_hidden, cfg.base_history) if cfg.base_inputs else None
        self.register_buffer("return_scale", torch.ones(N_HORIZONS))
        self.register_buffer("risk_scale", torch.ones(4))
        # calibration (model.calibration): pre = base + residual_weight * network;
        # logits *= inv_temperature (1 on non-logit entries)
        self.register_buffer("residual_weight", torch.ones(RAW_SIZE))
        self.register_buffer("inv_temperature", torch.ones(RAW_SIZE))

    def set_target_scales(self, return_scale: torch.Tensor, risk_scale: torch.Tensor) -> None:
        """Training-split std of returns [4] and mean of risks [4] (fractions)."""
        self.return_scale.copy_(return_scale)
        self.risk_scale.copy_(risk_scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, F] -> pooled representation [B, D]."""
        b = x.shape[0]
        if self.revin is not None:
            x, stats = self.revin(x)
        else:
            stats = torch.cat([x.mean(dim=1), torch.zeros_like(x[:, 0])], dim=-1)
        # [B, P, F, patch_len] -> [B, P, patch_len * F]: each token holds all features of a patch
        patches = x.unfold(1, self.cfg.patch_len, self.cfg.stride).reshape(b, self.cfg.n_patches, -1)
        tokens = torch.cat([self.stats_embed(stats).unsqueeze(1), self.patch_embed(patches)], dim=1)
        h = self.encoder(tokens + self.pos)
        pooled = torch.cat([h[:, 0], h[:, 1:].mean(dim=1)], dim=-1)
        return self.trunk(self.norm(pooled))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The network's pre-activations [B, 28] (before base, calibration and output maps)."""
        z = self.encode(x)
        return torch.cat([self.head_returns(z), self.head_direction(z), self.head_hits(z), self.head_risk(z)], dim=-1)

    def base_pre(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, F] standardized window -> the base's pre-activations [B, 28] (0 without a base)."""
        if self.base is None:
            return torch.zeros(x.shape[0], RAW_SIZE, dtype=x.dtype, device=x.device)
        return self.base(x[:, -1], x[:, :, self.base.history])

    def finish(self, pre: torch.Tensor) -> torch.Tensor:
        """Pre-activations [B, 28] -> raw contract values: calibrated logits, returns and risks
        as fractions (softplus keeps excursion forecasts >= 0 as the contract says)."""
        pre = pre * self.inv_temperature
        returns = pre[:, RETURNS] * self.return_scale
        risk = nn.functional.softplus(pre[:, RISK]) * self.risk_scale
        return torch.cat([returns, pre[:, DIRECTION_LOGITS.start : RISK.start], risk], dim=-1)

    def forward(self, x: torch.Tensor, x_network: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, F] standardized features -> raw [B, 28] in the contract layout.
        ``x_network``: what the network reads instead of x (training augments the network's
        input only; the fixed base keeps reading clean volatility)."""
        pre = self.base_pre(x) + self.residual_weight * self.residual(x if x_network is None else x_network)
        return self.finish(pre)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
