"""Process settings: one YAML file (configs/default.yaml) validated into typed models, with
environment overrides. This is the one place that decides a configuration value.

Precedence (highest first): explicit keyword arguments (tests), environment variables
(``MLSIGNALS_<KEY>`` with ``__`` for nesting, e.g. ``MLSIGNALS_SCHEDULER__DELAY_SECONDS=5``,
plus the conventional ``REDIS_URL``, ``DATABASE_URL`` and ``MLSIGNALS_API_KEY``), the YAML file,
then the defaults below. An invalid value raises ``ConfigError`` naming key, value and rule.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from common.errors import ConfigError
from signals.config import DeliveryConfig, SignalConfig, StreamConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")


def project_path(p: str | Path) -> Path:
    """Relative paths in the config are relative to the project root, not the CWD."""
    p = Path(p)
    return p if p.is_absolute() else PROJECT_ROOT / p


class CcxtConfig(BaseModel):
    exchange: str = "binance"
    market_type: Literal["spot", "linear"] = "spot"
    timeout_ms: int = Field(10_000, ge=1000, le=120_000)
    max_retries: int = Field(4, ge=0, le=10)
    backoff_s: float = Field(0.5, gt=0, le=30)
    backfill: bool = Field(True, description="the service downloads the history the model needs into the SQL store")
    backfill_concurrency: int = Field(4, ge=1, le=64, description="symbols downloaded at once while backfilling")


class DataConfig(BaseModel):
    source: Literal["replay", "sql", "ccxt"] = "replay"
    replay_dir: Path = Path("data/candles/bybit_linear_2025-06")
    exchange: str = Field("bybit", min_length=1, description="exchange label of the SQL store rows")
    gap_fill_max: int = Field(5, ge=0, le=60, description="fill gaps up to this many minutes with flat candles")
    replay_history: int = Field(12_000, ge=500, le=30_000, description="recorded minutes kept before each replayed one")
    stale_after: int = Field(3, ge=1, le=1440, description="minutes without a new candle before a symbol is stale")
    ccxt: CcxtConfig = CcxtConfig()


class ModelSettings(BaseModel):
    path: Path = Path("models/default")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = True
    batch_buckets: list[int] = Field(default_factory=lambda: [1, 8, 32, 128])

    @field_validator("batch_buckets")
    @classmethod
    def _buckets_increasing(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v) or v != sorted(set(v)):
            raise ValueError("must be a non-empty increasing list of positive integers")
        return v


class SchedulerConfig(BaseModel):
    enabled: bool = True
    delay_seconds: float = Field(2.0, ge=0, le=50, description="wait after the minute boundary for candles to close")
    symbol_timeout_s: float = Field(20.0, gt=0, le=55)
    catch_up: bool = Field(True, description="after a restart, run each missed minute once")
    max_catch_up: int = Field(5, ge=0, le=60, description="missed minutes run at most; older ones are reported")
    # 25: a shard is 0.15-0.4 s of one core's feature work (6 ms a symbol on a quiet core,
    # bench_features; 14-17 ms on the loaded 2-core VM, bench_tick), so the Serve hop and
    # pickling stay a few % of it, while 500 symbols still make 20 shards to spread over the
    # replicas; the 7-symbol embedded default is one shard, as before. Each shard's feature call,
    # its wait for a free replica included, is bounded by symbol_timeout_s: one replica fits
    # about symbol_timeout_s / (per-symbol cost) symbols a tick (~1,200 at 16 ms and 20 s).
    shard_size: int = Field(25, ge=1, le=2000, description="symbols per FeatureCalculator call in a tick")


class ServerConfig(BaseModel):
    max_body_bytes: int = Field(2_000_000, ge=1024, le=50_000_000)
    max_candles: int = Field(20_000, ge=100, le=200_000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MLSIGNALS_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    symbols: list[str] = Field(
        default_factory=lambda: ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT", "DOGEUSDT", "DOTUSDT"]
    )
    timeframe: Literal["1m"] = "1m"
    data: DataConfig = DataConfig()
    redis_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "MLSIGNALS_REDIS_URL", "redis_url")
    )
    database_url: SecretStr = Field(
        SecretStr("sqlite:///var/mlsignals.db"),
        validation_alias=AliasChoices("DATABASE_URL", "MLSIGNALS_DATABASE_URL", "database_url"),
    )
    api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("MLSIGNALS_API_KEY", "api_key"))
    model: ModelSettings = ModelSettings()
    signals: SignalConfig = SignalConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    stream: StreamConfig = StreamConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    server: ServerConfig = ServerConfig()
    var_dir: Path = Path("var")

    @field_validator("symbols")
    @classmethod
    def _symbols_valid(cls, v: list[str]) -> list[str]:
        v = [s.upper() for s in v]
        bad = [s for s in v if not _SYMBOL.match(s)]
        if bad:
            raise ValueError(f"symbols must look like BTCUSDT (A-Z, 0-9), got {bad}")
        if not v or len(set(v)) != len(v):
            raise ValueError("must be a non-empty list without duplicates")
        return v

    @field_validator("signals", mode="before")
    @classmethod
    def _apply_strategy_preset(cls, v: object) -> object:
        """``signals: {strategy: conservative}`` means that preset's thresholds, with any other
        key given beside it overriding the preset."""
        if isinstance(v, dict):
            v = dict(v)
            return SignalConfig.preset(v.pop("strategy", "validated"), **v)
        return v

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("MLSIGNALS_CONFIG", str(DEFAULT_CONFIG))
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))

    # Resolved paths and plain-string secrets for the code that needs them.
    @property
    def model_path(self) -> Path:
        return project_path(self.model.path)

    @property
    def replay_path(self) -> Path:
        return project_path(self.data.replay_dir)

    @property
    def var_path(self) -> Path:
        return project_path(self.var_dir)

    def redis_url_value(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url else None

    def database_url_value(self) -> str:
        url = self.database_url.get_secret_value()
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            # relative SQLite paths are relative to the project root, like every other path
            url = "sqlite:///" + str(project_path(url.removeprefix("sqlite:///")))
        return url


def _describe(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(root)"
    value = err.get("input")
    if any(word in key for word in ("url", "key", "password", "secret")):
        value = "***"  # never echo secrets, even invalid ones
    elif isinstance(value, dict):
        value = "{...}"
    return f"{key} = {value!r}: {err['msg']}"


def load_settings(config_file: str | Path | None = None, **overrides: object) -> Settings:
    """Build the settings for this process; raises ConfigError with every invalid key."""
    path = project_path(config_file) if config_file else Path(os.environ.get("MLSIGNALS_CONFIG", DEFAULT_CONFIG))
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    old = os.environ.get("MLSIGNALS_CONFIG")
    os.environ["MLSIGNALS_CONFIG"] = str(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors(include_url=False))
        raise ConfigError(f"invalid configuration ({path}): {problems}") from None
    finally:
        if old is None:
            os.environ.pop("MLSIGNALS_CONFIG", None)
        else:
            os.environ["MLSIGNALS_CONFIG"] = old
