"""The Signal: what goes onto Redis for the trading engine and into the prediction log.

Its JSON schema is exported by ``mlsignals signals schema`` and documented in README.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Direction(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"
    NEUTRAL = "NEUTRAL"


def signal_id(symbol: str, bar_time: datetime, model_version: str) -> str:
    """Deterministic id: the same symbol, bar and model always give the same id, so a
    repeated tick is idempotent downstream (outbox, stream consumers, prediction log)."""
    key = f"{symbol}|{bar_time.isoformat()}|{model_version}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class HorizonForecast(BaseModel):
    """The calibrated move forecast of one model horizon: what the model knows about how far the
    price goes, whichever way. Probabilities are calibrated on validation (model.calibration)."""

    model_config = ConfigDict(frozen=True)

    horizon: str = Field(description="e.g. '15m', '1h'")
    p_long: float = Field(ge=0.0, le=1.0, description="P(return > +band)")
    p_short: float = Field(ge=0.0, le=1.0, description="P(return < -band)")
    p_move: float = Field(ge=0.0, le=1.0, description="P(|return| > band) = p_long + p_short")
    band: float = Field(ge=0.0, description="FLAT band as a fraction of entry")
    expected_abs_move: float | None = Field(
        default=None, ge=0.0, description="expected |return| over the horizon (fraction); None for older bundles"
    )
    expected_return: float = Field(description="the return head's forecast (fraction)")
    level: float = Field(ge=0.0, description="long/short level distance (fraction of entry)")
    p_long_level: float = Field(ge=0.0, le=1.0, description="P(high reaches entry * (1 + level))")
    p_short_level: float = Field(ge=0.0, le=1.0, description="P(low reaches entry * (1 - level))")


class Signal(BaseModel):
    """One trading signal. Prices are in quote currency; times are UTC."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="sha256(symbol|bar_time|model_version)[:24]; idempotency key")
    symbol: str
    direction: Direction
    confidence: float = Field(ge=0.0, le=1.0, description="probability-like confidence of the direction")
    strength: float = Field(ge=0.0, le=1.0, description="quality score combining agreement, edge and risk")
    entry: float | None = Field(
        default=None, gt=0, description="last close the signal was computed from; None when no candles were usable"
    )
    stop_loss: float | None = Field(default=None, gt=0, description="absolute price; None for NEUTRAL")
    take_profit: float | None = Field(default=None, gt=0, description="absolute price; None for NEUTRAL")
    horizon: str = Field(description="the horizon the signal is meant for, e.g. '1h'")
    bar_time: datetime = Field(description="open time of the last closed 1-minute candle used")
    created_at: datetime
    expires_at: datetime
    model_version: str
    feature_spec_hash: str
    reasons: list[str] = Field(default_factory=list, description="why; for NEUTRAL why not")
    expected_edge: float | None = Field(
        default=None,
        description="expected net return per trade after fees and slippage (fraction) that the signal was "
        "issued on: the validated policy's figure for its horizon; None for NEUTRAL",
    )
    forecast: list[HorizonForecast] = Field(
        default_factory=list, description="per model horizon, the calibrated move forecast (NEUTRAL included)"
    )

    @model_validator(mode="after")
    def _levels_on_the_right_side(self) -> Signal:
        if self.direction is Direction.NEUTRAL:
            return self
        if self.entry is None or self.stop_loss is None or self.take_profit is None:
            raise ValueError("LONG/SHORT signals need entry, stop_loss and take_profit")
        if self.direction is Direction.LONG and not (self.stop_loss < self.entry < self.take_profit):
            raise ValueError("LONG needs stop_loss < entry < take_profit")
        if self.direction is Direction.SHORT and not (self.take_profit < self.entry < self.stop_loss):
            raise ValueError("SHORT needs take_profit < entry < stop_loss")
        return self


def signal_json_schema() -> dict:
    """JSON schema of Signal for consumers (committed as docs/signal_schema.json)."""
    schema = Signal.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = (
        "One trading signal as published on the Redis stream (field 'signal' of each entry, "
        "also in the per-symbol latest hash and the notify channel). Prices in quote currency, "
        "times UTC ISO-8601. LONG: stop_loss < entry < take_profit; SHORT: take_profit < entry < "
        "stop_loss; NEUTRAL: no levels, reasons say why. The id repeats for the same symbol, "
        "bar and model: treat a repeated id as already handled."
    )
    return schema
