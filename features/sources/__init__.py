"""Market-data sources behind one interface (see base.MarketDataSource)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from features.sources.base import FrameSource, MarketDataSource, last_closed_minute

if TYPE_CHECKING:
    from mlsignals.settings import Settings

__all__ = ["FrameSource", "MarketDataSource", "build_source", "last_closed_minute"]


def build_source(settings: Settings) -> MarketDataSource:
    """The configured source: replay (embedded default), SQL store or live ccxt."""
    kind = settings.data.source
    if kind == "replay":
        from features.sources.replay import ReplaySource

        return ReplaySource.from_dir(settings.replay_path, history=settings.data.replay_history)
    if kind == "sql":
        from features.sources.sql_store import SqlCandleStore
        from mlsignals.db import make_engine

        return SqlCandleStore(make_engine(settings.database_url_value()), exchange=settings.data.exchange)
    from features.sources.ccxt_source import CcxtSource, make_exchange

    c = settings.data.ccxt
    return CcxtSource(
        make_exchange(c.exchange, c.timeout_ms), settings.symbols, c.market_type, c.max_retries, c.backoff_s
    )
