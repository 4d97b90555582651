"""The trading policy a model was validated with (``policy.json`` in its bundle).

``mlsignals policy`` (``mlsignals.backtest.policy``) chooses it on validation candles with the
backtest engine and the real signal processor: per horizon, a LONG-minus-SHORT probability
margin, enabled only where choosing the margin walk-forward over calendar blocks made money
after fees and slippage out of sample with a significant (day-clustered) t; otherwise the
horizon is disabled. The ``validated`` strategy of ``MLSignalProcessor`` trades only
enabled horizons above their margin; everything else is NEUTRAL with the reason, so a model
without a validated edge publishes no LONG/SHORT at all.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model.contract import N_HORIZONS

POLICY_FILE = "policy.json"


class HorizonPolicy(BaseModel):
    """One horizon's validated rule and the validation figures it was chosen on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool
    min_margin: float | None = Field(None, ge=0.0, le=1.0, description="|P(LONG) - P(SHORT)| needed to trade")
    val_trades: int = Field(0, ge=0)
    val_mean_net: float | None = Field(None, description="mean net return per trade on validation, walk-forward "
                                                          "(out of sample for the margin's choice; fraction)")
    val_t: float | None = Field(None, description="day-clustered t-statistic of those trades' net returns")
    why: str = ""


class TradingPolicy(BaseModel):
    """Per-horizon rules (short to long) plus how they were validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizons: tuple[HorizonPolicy, ...]
    fee_bps: float = Field(ge=0.0)
    slippage_bps: float = Field(ge=0.0)
    validation: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, _: Any) -> None:
        if len(self.horizons) != N_HORIZONS:
            raise ValueError(f"a policy needs {N_HORIZONS} horizons, got {len(self.horizons)}")

    @property
    def any_enabled(self) -> bool:
        return any(h.enabled for h in self.horizons)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TradingPolicy:
        return cls.model_validate(d)
