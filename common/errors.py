"""Typed errors shared by every stage.

They are plain exceptions with simple constructor arguments so that they pickle across Ray
actors; the HTTP ingress maps them to status codes (see serve_app/ingress.py) and the CLI
prints their message as one line.
"""

from __future__ import annotations


class MLSignalsError(Exception):
    """Base class: the message is meant for the user and names what to fix."""


class ConfigError(MLSignalsError):
    """An invalid configuration value (names key, value and what is allowed)."""


class CandleValidationError(MLSignalsError):
    """A candle broke a validation rule; names symbol, time and rule."""

    def __init__(self, symbol: str, time: object, rule: str) -> None:
        self.symbol, self.time, self.rule = symbol, str(time), rule
        super().__init__(f"{symbol} @ {self.time}: {rule}")

    def __reduce__(self):  # keep the three fields when pickled across Ray
        return (type(self), (self.symbol, self.time, self.rule))


class InsufficientDataError(MLSignalsError):
    """Fewer candles than the feature spec / model needs."""

    def __init__(self, symbol: str, needed: int, got: int) -> None:
        self.symbol, self.needed, self.got = symbol, needed, got
        super().__init__(f"{symbol}: needs {needed} candles, got {got}")

    def __reduce__(self):
        return (type(self), (self.symbol, self.needed, self.got))


class MissingCrossAssetError(MLSignalsError):
    """Cross-asset features need BTC candles over the same minutes and they are missing."""


class UnknownSymbolError(MLSignalsError):
    """The symbol is not served by the configured market-data source."""


class DataSourceError(MLSignalsError):
    """The market-data source failed (network, exchange, database)."""


class ArtifactError(MLSignalsError):
    """A model bundle is missing, tampered with, or was built for another feature spec."""


class ModelInputError(MLSignalsError):
    """Model input for a symbol is unusable (NaN/inf, wrong shape)."""
