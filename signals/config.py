"""Typed configuration of the signal processor and of delivery onto Redis.

The lead composes these into the process settings (``settings.signals``, ``settings.delivery``);
pydantic validation errors name the offending key (``signals.min_confidence``...).
Fractions are of the entry price (0.01 = 1 %); times are minutes unless named ``_s``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strategy = Literal["validated", "conservative", "moderate", "aggressive"]

# Thresholds per preset. Confidence is the weighted vote probability of the chosen direction
# (3 classes, so 1/3 is chance); entropy is normalised to [0, 1] (1 = uniform).
_PRESETS: dict[str, dict[str, Any]] = {
    "conservative": {
        "min_confidence": 0.55,
        "min_agreement": 0.75,
        "min_quality": 0.60,
        "max_entropy": 0.85,
        "sl_atr_mult": 1.5,
        "tp_atr_mult": 3.0,
    },
    "moderate": {
        "min_confidence": 0.45,
        "min_agreement": 0.60,
        "min_quality": 0.50,
        "max_entropy": 0.93,
        "sl_atr_mult": 1.5,
        "tp_atr_mult": 2.5,
    },
    "aggressive": {
        "min_confidence": 0.40,
        "min_agreement": 0.50,
        "min_quality": 0.40,
        "max_entropy": 0.97,
        "sl_atr_mult": 1.0,
        "tp_atr_mult": 2.0,
    },
}


# ``validated`` trades only what the bundle's validated policy (signals.policy) allows; it does not
# use the vote thresholds, and takes its level rules (ATR multiples) from ``moderate``
_PRESETS["validated"] = dict(_PRESETS["moderate"])


class SignalConfig(BaseModel):
    """Everything that decides how a ModelOutput becomes a Signal.

    horizon_weights: one weight per model horizon (short to long), normalised on use.
    expiry_minutes: per horizon; ``None`` means "the horizon's own length".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = "validated"
    horizon_weights: tuple[float, float, float, float] = (0.15, 0.25, 0.30, 0.30)
    min_confidence: float = Field(0.45, ge=0.0, le=1.0)
    min_agreement: float = Field(0.60, ge=0.0, le=1.0)
    min_quality: float = Field(0.50, ge=0.0, le=1.0)
    max_entropy: float = Field(0.93, ge=0.0, le=1.0, description="normalised entropy of the vote")
    require_return_agreement: bool = Field(
        True, description="reject when the weighted expected return points the other way"
    )
    ood_z_limit: float = Field(8.0, gt=0.0, description="|z| above this marks a feature out of range")
    ood_max_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="NEUTRAL when more than this fraction of features is out"
    )
    sl_atr_mult: float = Field(1.5, gt=0.0)
    tp_atr_mult: float = Field(2.5, gt=0.0)
    sl_min: float = Field(0.002, gt=0.0, lt=1.0)
    sl_max: float = Field(0.05, gt=0.0, lt=1.0)
    tp_min: float = Field(0.003, gt=0.0, lt=1.0)
    tp_max: float = Field(0.10, gt=0.0, lt=1.0)
    expiry_minutes: tuple[int, int, int, int] | None = None
    # costs per side (bps of price) the hand-set presets subtract from the model's expected return
    # to state a signal's expected net edge; the validated policy carries its own
    fee_bps: float = Field(4.0, ge=0.0)
    slippage_bps: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _consistent(self) -> SignalConfig:
        if any(w < 0 for w in self.horizon_weights) or sum(self.horizon_weights) <= 0:
            raise ValueError("horizon_weights must be >= 0 with a positive sum")
        if self.sl_min > self.sl_max:
            raise ValueError(f"sl_min ({self.sl_min}) must be <= sl_max ({self.sl_max})")
        if self.tp_min > self.tp_max:
            raise ValueError(f"tp_min ({self.tp_min}) must be <= tp_max ({self.tp_max})")
        if self.expiry_minutes is not None and any(m <= 0 for m in self.expiry_minutes):
            raise ValueError("expiry_minutes must all be > 0")
        return self

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SignalConfig:
        """The named strategy preset with ``overrides`` on top (validated together)."""
        if name not in _PRESETS:
            raise ValueError(f"strategy must be one of {', '.join(_PRESETS)}, got {name!r}")
        return cls(**{"strategy": name, **_PRESETS[name], **overrides})


class DeliveryConfig(BaseModel):
    """Redis keys and retry behaviour of the outbox relay.

    Keys: stream ``{prefix}:{stream}``, channel ``{prefix}:{channel}``, latest hash
    ``{prefix}:{latest_prefix}:{symbol}``, dedup ``{prefix}:dedup:{signal_id}``. Tests use a
    unique ``prefix`` so runs never collide.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field("mlsignals", min_length=1)
    stream: str = Field("signals", min_length=1)
    maxlen: int = Field(100_000, gt=0, description="approximate stream bound (XADD MAXLEN ~)")
    channel: str = Field("signals:notify", min_length=1)
    latest_prefix: str = Field("latest", min_length=1)
    dedup_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="how long a delivered id is remembered")
    retry_base_s: float = Field(0.5, gt=0.0)
    retry_cap_s: float = Field(30.0, gt=0.0)
    poll_interval_s: float = Field(0.5, gt=0.0, description="relay idle wait when nothing is pending")
    batch_size: int = Field(200, gt=0)

    @model_validator(mode="after")
    def _cap_above_base(self) -> DeliveryConfig:
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError(
                f"retry_cap_s ({self.retry_cap_s}) must be >= retry_base_s ({self.retry_base_s})"
            )
        return self

    @property
    def stream_key(self) -> str:
        return f"{self.prefix}:{self.stream}"

    @property
    def channel_key(self) -> str:
        return f"{self.prefix}:{self.channel}"

    def latest_key(self, symbol: str) -> str:
        return f"{self.prefix}:{self.latest_prefix}:{symbol}"

    def dedup_key(self, signal_id: str) -> str:
        return f"{self.prefix}:dedup:{signal_id}"


class StreamConfig(BaseModel):
    """The HTTP signal stream (``GET /signals/stream``, Server-Sent Events).

    Serve's proxy buffers a response without back-pressure to the replica, so a replica cannot
    see a stalled socket; what one client may cost is bounded instead: a client more than
    ``max_lag`` entries behind the stream head is dropped (``event: overflow``), every stream
    ends after ``max_duration_s`` (clients reconnect with ``Last-Event-ID`` and lose nothing),
    and at most ``max_clients`` streams run per ingress replica (503 beyond).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_s: float = Field(15.0, gt=0.0, le=300.0, description="idle time before a heartbeat event")
    max_clients: int = Field(32, ge=1, le=10_000)
    max_lag: int = Field(2000, ge=1, description="entries a client may be behind before it is dropped")
    max_duration_s: float = Field(900.0, gt=0.0, description="a stream ends after this; clients resume")
    batch: int = Field(100, ge=1, le=10_000, description="entries read from Redis at a time")
    retry_ms: int = Field(2000, ge=0, description="reconnect delay advertised to EventSource clients")
