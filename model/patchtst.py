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

Returns and risks are predicted in units of their training-split standard deviation and scaled
back by the ``return_scale`` / ``risk_scale`` buffers (saved with the weights), so the raw
tensor carries fractions as the contract says.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import ModelConfig
from model.contract import N_CLASSES, N_HORIZONS


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
        self.register_buffer("return_scale", torch.ones(N_HORIZONS))
        self.register_buffer("risk_scale", torch.ones(4))

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, F] standardized features -> raw [B, 28] in the contract layout."""
        z = self.encode(x)
        returns = self.head_returns(z) * self.return_scale
        # softplus keeps the excursion forecasts >= 0 as the contract says
        risk = nn.functional.softplus(self.head_risk(z)) * self.risk_scale
        return torch.cat([returns, self.head_direction(z), self.head_hits(z), risk], dim=-1)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
