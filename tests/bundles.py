"""Small real bundles for tests: the real feature spec and a scaler fitted on real candles,
with a tiny untrained UnifiedPatchTST (tests check plumbing, not skill)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from features.calculator import compute_features
from features.spec import FEATURE_NAMES, SPEC_HASH
from model.bundle import save_bundle
from model.config import ModelConfig
from model.contract import TargetSpec
from model.patchtst import UnifiedPatchTST
from model.scaler import FeatureScaler, FeatureStats
from model.training_run import resolve_base


def make_test_bundle(out: Path, candles: dict[str, pd.DataFrame], bar_minutes: int = 1, context: int = 32,
                     seed: int = 0) -> Path:
    btc = candles["BTCUSDT"].iloc[:3000]
    x = compute_features(btc, None, "BTCUSDT").dropna().to_numpy()
    torch.manual_seed(seed)
    # the shipped recipe's base: scale-free indicators and the window's log volatility
    base = resolve_base({"base_log_volatility": True}, list(FEATURE_NAMES))
    cfg = ModelConfig(n_features=len(FEATURE_NAMES), context_length=context, patch_len=8, stride=4,
                      d_model=16, n_heads=2, n_layers=1, **base)
    model = UnifiedPatchTST(cfg).eval()
    scaler = FeatureScaler.fit(x)
    cols = list(cfg.base_history)
    windows = np.lib.stride_tricks.sliding_window_view(x[:, cols], context, axis=0).transpose(0, 2, 1)  # [N, L, 2]
    hist = scaler.subset(cols).transform(np.ascontiguousarray(windows))
    model.base.set_history_scaling(torch.tensor(scaler.mean[cols], dtype=torch.float32),
                                   torch.tensor(scaler.scale[cols], dtype=torch.float32),
                                   torch.from_numpy(hist))
    # those are 1-minute windows; a bundle of longer bars reads bar returns and ranges about
    # sqrt(bar_minutes) larger, which would put every window far off the standardization
    model.base.log_vol_mean += 0.5 * float(np.log(bar_minutes))
    # residual heads start at zero (the network is its base until trained); random weights
    # stand in for training so outputs vary with the window as a trained network's do
    for head in (model.head_returns, model.head_direction, model.head_hits, model.head_risk):
        torch.nn.init.normal_(head.weight, std=0.3)
        torch.nn.init.normal_(head.bias, std=0.3)
    return save_bundle(
        out, model, TargetSpec(bar_minutes=bar_minutes), FEATURE_NAMES, SPEC_HASH,
        scaler, FeatureStats.from_matrix(np.asarray(x), FEATURE_NAMES),
        {"note": "untrained test bundle"}, {},
    )
