"""Market-data sources behind one interface (see base.MarketDataSource); the configured one is
built by ``mlsignals.factories.build_source`` (the application layer owns Settings)."""

from __future__ import annotations

from features.sources.base import FrameSource, MarketDataSource, last_closed_minute

__all__ = ["FrameSource", "MarketDataSource", "last_closed_minute"]
