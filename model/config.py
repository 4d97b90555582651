"""Typed configuration of the model and of a training run.

``ModelConfig`` fixes the network's shapes (it is stored in the bundle and read back to rebuild
the network); ``TrainConfig`` says how a bundle is trained (data, split, optimiser, seed). Both
load from plain dicts (JSON/YAML) through pydantic: unknown keys and values of the wrong type
are refused (as ConfigError naming the key), so a typo fails at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.errors import ConfigError


class _StrictConfig(BaseModel):
    """Frozen, no unknown keys; every validation failure is a ConfigError."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            name = type(self).__name__
            problems = "; ".join(
                ": ".join(x for x in (".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, ")) if x)
                for e in exc.errors(include_url=False)
            )
            if any(e["type"] == "extra_forbidden" for e in exc.errors()):
                problems += f" (allowed: {', '.join(sorted(type(self).model_fields))})"
            raise ConfigError(f"{name}: {problems}") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(**d)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied."""
        return type(self)(**{**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists)."""
        return self.model_dump(mode="json")


class ModelConfig(_StrictConfig):
    """Shapes of UnifiedPatchTST.

    n_features: F, the width of one feature row; context_length: bars of history per sample;
    patch_len / stride: patching along time (in bars); d_model / n_heads / n_layers: encoder.
    Reference configuration of the original system: context 96, patch 16/8, 256/4/3.
    """

    n_features: int
    context_length: int = 96
    patch_len: int = 16
    stride: int = 8
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 3
    ff_mult: int = 2
    dropout: float = 0.1
    revin: bool = True
    # direction-blind volatility base (see model/patchtst.py): column indices of its inputs in
    # the feature row (empty = no base, the network alone) and its hidden width
    base_inputs: tuple[int, ...] = ()
    base_hidden: int = 32
    # base_log_volatility (the recipe): the base reads scale-free indicators of the last bar and
    # the window's log volatility (model.window_volatility) instead of volatility levels;
    # base_history: the (1-bar log return, bar range) columns it reads that from (filled in by
    # model.training_run.resolve_base)
    base_log_volatility: bool = False
    base_history: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _shapes(self) -> Self:
        if self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        if self.patch_len > self.context_length or self.stride < 1:
            raise ValueError(
                f"need 1 <= stride and patch_len <= context_length "
                f"(patch_len={self.patch_len}, stride={self.stride}, context={self.context_length})"
            )
        if len(self.base_history) not in (0, 2):
            raise ValueError(f"base_history names the (log return, range) columns: 2 indices, got {self.base_history}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self

    @property
    def n_patches(self) -> int:
        return (self.context_length - self.patch_len) // self.stride + 1


class TrainConfig(_StrictConfig):
    """One training run.

    train_dirs: candle folders for train+validation (chronological order); val_fraction: the last
    part of the *latest* period is validation (walk-forward: validation is after training);
    embargo_minutes: gap between the last training target and the first validation anchor
    (0 = the longest horizon). Flat bands / levels are quantiles of the training split.
    The shipped bundle's recipe is ``configs/train/default.yaml`` (copied to
    models/default/train_config.yaml; its network is smaller than the ModelConfig reference);
    the defaults here are a small two-period run.
    """

    train_dirs: tuple[str, ...] = (
        "data/candles/binance_spot_2024-10",
        "data/candles/binance_spot_2025-01",
    )
    # calendar windows [start, end] (ISO, UTC) held out of training and validation, e.g. the
    # project's test period; purged and embargoed like a CV fold
    test_windows: tuple[tuple[str, str], ...] = ()
    bar_minutes: int = 15
    horizons: tuple[int, int, int, int] = (1, 4, 16, 48)
    # FLAT band: this quantile of |return| on the training split (1/3 -> roughly balanced classes)
    flat_quantile: float = 0.33
    # level distance: this quantile of the max favourable excursion on the training split
    level_quantile: float = 0.5
    val_fraction: float = 0.3
    embargo_minutes: int = 0
    # rows per epoch (drawn from every anchor, so from all bar alignments); 0 = all rows
    samples_per_epoch: int = 80_000
    val_samples: int = 30_000
    epochs: int = 5
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.1
    patience: int = 4  # validations without improvement before stopping
    eval_every_steps: int = 50  # validate every N steps (0 = once per epoch)
    # regularisation of the inputs during training (standardized units): Gaussian noise std and
    # the probability of zeroing a whole feature column of a sample; neighbouring anchors share
    # almost all of their window, so without it the network memorises the training period
    input_noise: float = 0.3
    feature_dropout: float = 0.2
    seed: int = 7
    # loss weights of the blocks: returns, direction, level hits, risk
    loss_weights: tuple[float, float, float, float] = (1.0, 1.0, 0.5, 0.5)
    # baselines fitted on this many training rows (logistic regression, LightGBM, volatility-only)
    baseline_samples: int = 40_000
    max_minutes_per_file: int = 0  # 0 = whole file; tests use small slices
    # bar alignments kept from 1-minute files (0 = all of them); see model.series.split_alignments
    alignments_1m: int = 0
    # CPU threads for torch. 1 by default: on a shared 2-core machine two OpenMP threads that
    # meet another busy process slow down ~10x (spin-waiting), one thread degrades gracefully.
    torch_threads: int = 1
    # steps of the direction-blind base fit (full-batch-ish Adam on the last feature row only)
    base_steps: int = 300
    # validation rows for the post-hoc calibration (model.calibration)
    calibration_samples: int = 40_000
    # pool the LightGBM baseline's direction probabilities into the model's (model.stacking),
    # weights fitted on the same validation rows as the calibration
    stack_lightgbm: bool = True
    model: dict[str, Any] = Field(default_factory=dict)  # ModelConfig overrides (not n_features)

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.bar_minutes < 1:
            raise ValueError(f"bar_minutes must be >= 1, got {self.bar_minutes}")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        import json

        import yaml

        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no such config file")
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of TrainConfig keys")
        return cls.from_dict(data)
