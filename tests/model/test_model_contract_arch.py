"""UnifiedPatchTST produces the raw contract tensor; ModelOutput interprets it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from model.config import ModelConfig
from model.contract import RAW_SIZE, RETURNS, RISK, ModelOutput
from model.patchtst import UnifiedPatchTST


def _tiny(n_features: int = 12) -> ModelConfig:
    return ModelConfig(
        n_features=n_features,
        context_length=32,
        patch_len=8,
        stride=4,
        d_model=16,
        n_heads=2,
        n_layers=1,
        dropout=0.0,
    )


def _random_heads(model: UnifiedPatchTST) -> UnifiedPatchTST:
    """The residual heads start at zero (an untrained network is its base); give them weights
    as training would, so the tests below see the network's own outputs."""
    for head in (model.head_returns, model.head_direction, model.head_hits, model.head_risk):
        torch.nn.init.normal_(head.weight, std=0.3)
        torch.nn.init.normal_(head.bias, std=0.3)
    return model


def test_untrained_network_is_its_base() -> None:
    """Zero residual heads: the output does not depend on the window, only on the base's
    inputs in the last row; with random heads it does."""
    torch.manual_seed(4)
    cfg = ModelConfig(**{**_tiny().to_dict(), "base_inputs": [0, 1, 2]})
    model = UnifiedPatchTST(cfg).eval()
    x = torch.randn(2, 32, 12)
    x2 = x.clone()
    x2[:, :-1] += 1.0  # every bar but the last
    x2[:, -1, 3:] += 1.0  # the last bar outside the base's inputs
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x2))
        torch.testing.assert_close(model(x), model.finish(model.base_pre(x)))
        torch.testing.assert_close(model(x), model(x, x2))  # the network's own input: no effect at zero heads
        x3 = x.clone()
        x3[:, -1, 1] += 1.0  # a base input moves the forecast
        assert not torch.allclose(model(x), model(x3))
        _random_heads(model)
        assert not torch.allclose(model(x), model(x2))
        # the base reads x, the network x3 (training: only the network's input is augmented);
        # x3 differs in a base input, so a base reading the network's input would differ
        torch.testing.assert_close(model(x, x3), model.finish(model.base_pre(x) + model.residual(x3)))
        assert not torch.allclose(model(x, x3), model(x3))


def test_log_volatility_base_reads_the_window() -> None:
    """With ``base_history`` the base reads the whole window of the (log return, range)
    columns as log volatility - the stack's feature-volatility numbers, computed on unscaled
    values - and no other column of earlier bars; a regime 10x wilder moves that input by
    log 10 where the clipped level features would saturate."""
    from model.feature_volatility import history_inputs

    torch.manual_seed(5)
    cfg = ModelConfig(**{**_tiny().to_dict(), "base_inputs": [0, 1], "base_history": [2, 3]})
    model = UnifiedPatchTST(cfg).eval()
    center, scale = torch.tensor([0.0, 0.006]), torch.tensor([0.004, 0.003])
    unscaled = torch.zeros(64, 32, 2)
    unscaled[..., 0] = 0.004 * torch.randn(64, 32)
    unscaled[..., 1] = 0.006 * torch.rand(64, 32) + 1e-4
    hist = (unscaled - center) / scale
    model.base.set_history_scaling(center, scale, hist)
    torch.testing.assert_close(model.base.log_volatility(hist).double(),
                               torch.from_numpy(history_inputs(unscaled.double().numpy())), atol=1e-5, rtol=0)
    lv = (model.base.log_volatility(hist) - model.base.log_vol_mean) / model.base.log_vol_std
    torch.testing.assert_close(lv.mean(dim=0), torch.zeros(4), atol=1e-5, rtol=0)
    wild = model.base.log_volatility((unscaled * 10 - center) / scale) - model.base.log_volatility(hist)
    torch.testing.assert_close(wild[:, :3], torch.full((64, 3), float(np.log(10))), atol=1e-4, rtol=0)
    x = torch.randn(2, 32, 12)
    x[:, :, 2:4] = hist[:2]
    with torch.no_grad():
        other = x.clone()
        other[:, :-1, 5] += 1.0  # an earlier bar of a column the base does not read
        torch.testing.assert_close(model(x), model(other))
        moved = x.clone()
        moved[:, :-8, 2] *= 3.0  # earlier returns: the 96- (here 32-) bar volatility moves
        assert not torch.allclose(model(x), model(moved))


def test_resolve_base_fills_the_recipe() -> None:
    from features.spec import FEATURE_NAMES
    from model.training_run import BASE_FEATURES, BASE_SCALE_FREE_FEATURES, resolve_base
    from model.window_volatility import HISTORY_FEATURES

    names = list(FEATURE_NAMES)
    levels = resolve_base({}, names)
    assert [names[i] for i in levels["base_inputs"]] == list(BASE_FEATURES) and "base_history" not in levels
    logs = resolve_base({"base_log_volatility": True}, names)
    assert [names[i] for i in logs["base_inputs"]] == list(BASE_SCALE_FREE_FEATURES)
    assert [names[i] for i in logs["base_history"]] == list(HISTORY_FEATURES)
    assert resolve_base({"base_log_volatility": True}, None) == {"base_log_volatility": True}
    with pytest.raises(ConfigError, match="base_history"):
        ModelConfig(**{**_tiny().to_dict(), "base_inputs": [0], "base_history": [2]})


def test_forward_shape_and_contract() -> None:
    torch.manual_seed(0)
    model = UnifiedPatchTST(_tiny()).eval()
    x = torch.randn(5, 32, 12)
    raw = model(x)
    assert raw.shape == (5, RAW_SIZE)
    out = ModelOutput.from_raw(raw[0].detach().numpy())
    assert out.direction_probs.shape == (4, 3)
    np.testing.assert_allclose(out.direction_probs.sum(axis=1), 1.0, rtol=1e-9)
    assert ((out.long_hit > 0) & (out.long_hit < 1)).all()
    assert (out.risk >= 0).all()


def test_every_feature_reaches_every_output() -> None:
    """Patch tokens mix features: perturbing one feature changes all 28 raw outputs."""
    torch.manual_seed(1)
    model = _random_heads(UnifiedPatchTST(_tiny()).eval())
    x = torch.randn(1, 32, 12)
    x2 = x.clone()
    x2[0, :, 7] += torch.linspace(0, 3, 32)
    with torch.no_grad():
        diff = (model(x) - model(x2)).abs()[0]
    assert (diff > 0).all()


def test_level_information_survives_instance_norm() -> None:
    """RevIN removes the level; the statistics token must carry it back."""
    torch.manual_seed(2)
    model = _random_heads(UnifiedPatchTST(_tiny()).eval())
    x = torch.randn(1, 32, 12)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x + 2.0))


def test_risk_and_returns_scaled_to_fractions() -> None:
    """Returns and risks leave the network multiplied by the training targets' scales (per
    horizon, kept with the weights); logits are untouched by them."""
    torch.manual_seed(3)
    model = _random_heads(UnifiedPatchTST(_tiny()).eval())
    x = torch.randn(3, 32, 12)
    with torch.no_grad():
        unit = model(x)
        ret_scale, risk_scale = torch.tensor([0.01, 0.02, 0.03, 0.04]), torch.tensor([0.002, 0.004, 0.006, 0.008])
        model.set_target_scales(ret_scale, risk_scale)
        raw = model(x)
        reloaded = UnifiedPatchTST(_tiny()).eval()
        reloaded.load_state_dict(model.state_dict())
        again = reloaded(x)
    torch.testing.assert_close(raw[:, RETURNS], unit[:, RETURNS] * ret_scale)
    torch.testing.assert_close(raw[:, RISK], unit[:, RISK] * risk_scale)
    assert (raw[:, RISK] >= 0).all() and (unit[:, RISK] > 0).all()
    torch.testing.assert_close(raw[:, RETURNS.stop : RISK.start], unit[:, RETURNS.stop : RISK.start])
    torch.testing.assert_close(again, raw)


def test_config_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError):
        ModelConfig(n_features=10, d_model=30, n_heads=4)
    with pytest.raises(ConfigError):
        ModelConfig(n_features=10, context_length=8, patch_len=16)
    with pytest.raises(ConfigError, match="dmodel"):
        ModelConfig.from_dict({"n_features": 3, "dmodel": 8})


def test_train_config_is_strict_and_round_trips() -> None:
    from model.config import TrainConfig

    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({"epochs": "five"})
    with pytest.raises(ConfigError, match="horizons"):
        TrainConfig.from_dict({"horizons": [1, 2]})
    with pytest.raises(ConfigError, match="val_fraction"):
        TrainConfig().replace(val_fraction=1.5)
    cfg = TrainConfig.from_dict({"horizons": [1, 2, 3, 4], "test_windows": [["2025-06-01", "2025-06-30"]]})
    assert cfg.horizons == (1, 2, 3, 4) and TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(epochs=2).epochs == 2 and cfg.epochs != 2


def test_reference_configuration_size() -> None:
    cfg = ModelConfig(n_features=240)  # 96 context, patch 16/8, 256/4/3
    model = UnifiedPatchTST(cfg)
    assert cfg.n_patches == 11
    assert 1_000_000 < model.n_parameters() < 5_000_000
