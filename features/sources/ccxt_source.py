"""Live exchange source on ccxt: closed 1-minute candles only, ccxt's rate limiter, retries
with capped exponential backoff on network errors. No exchange is reachable from the build
machine, so tests drive it with recorded ccxt-format payloads (``[[ms, o, h, l, c, v], ...]``)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from common.errors import DataSourceError, UnknownSymbolError
from features.candles import CANDLE_COLUMNS, validate_candles
from features.sources.base import last_closed_minute

log = logging.getLogger(__name__)
_MINUTE = pd.Timedelta(minutes=1)
_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "USD", "BTC", "ETH", "EUR")


def ccxt_symbol(symbol: str, market_type: str = "spot") -> str:
    """BTCUSDT -> BTC/USDT (spot) or BTC/USDT:USDT (linear perpetual)."""
    for q in _QUOTES:
        if symbol.endswith(q) and len(symbol) > len(q):
            base = symbol[: -len(q)]
            return f"{base}/{q}" if market_type == "spot" else f"{base}/{q}:{q}"
    raise UnknownSymbolError(f"cannot map {symbol!r} to an exchange market (unknown quote currency)")


def ohlcv_frame(rows: list[list[float]]) -> pd.DataFrame:
    """ccxt OHLCV rows -> a candle frame (not validated; the last of duplicate times kept)."""
    df = pd.DataFrame(rows, columns=["ms", *CANDLE_COLUMNS]).drop_duplicates("ms", keep="last")
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("ms").astype("int64"), unit="ms", utc=True)).as_unit("ns")
    df.index.name = "timestamp"
    return df.astype("float64")


def make_exchange(exchange_id: str, timeout_ms: int = 10_000) -> Any:
    import ccxt  # imported lazily: it is large and only the live source needs it

    try:
        cls = getattr(ccxt, exchange_id)
    except AttributeError:
        raise DataSourceError(f"ccxt has no exchange {exchange_id!r}") from None
    return cls({"enableRateLimit": True, "timeout": timeout_ms})


class CcxtSource:
    """MarketDataSource over any ccxt exchange object exposing ``fetch_ohlcv``."""

    def __init__(
        self,
        exchange: Any,
        symbols: list[str],
        market_type: str = "spot",
        max_retries: int = 4,
        backoff_s: float = 0.5,
        clock: Callable[[], pd.Timestamp] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.exchange, self._symbols, self.market_type = exchange, list(symbols), market_type
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self._clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self._closed: dict[str, pd.DataFrame] = {}  # closed candles fetched before, per symbol
        self._keep_minutes = 20_000
        self._sleep = sleep

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def _fetch(self, market: str, since_ms: int, limit: int) -> list[list[float]]:
        import ccxt

        for attempt in range(self.max_retries + 1):
            try:
                return self.exchange.fetch_ohlcv(market, timeframe="1m", since=since_ms, limit=limit)
            except (ccxt.NetworkError, ccxt.RateLimitExceeded, ccxt.ExchangeNotAvailable) as exc:
                if attempt == self.max_retries:
                    raise DataSourceError(
                        f"{market}: exchange unreachable after {attempt + 1} tries ({type(exc).__name__})"
                    ) from None
                delay = min(30.0, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                log.warning("fetch_ohlcv %s failed (%s), retry in %.2fs", market, type(exc).__name__, delay)
                self._sleep(delay)
            except ccxt.BadSymbol:
                raise UnknownSymbolError(f"{market}: the exchange does not list this market") from None
            except ccxt.BaseError as exc:
                raise DataSourceError(f"{market}: exchange error ({type(exc).__name__})") from None
        raise AssertionError("unreachable")

    def iter_pages(self, market: str, start: pd.Timestamp, last: pd.Timestamp, limit: int = 1000,
                   ) -> Iterator[list[list[float]]]:
        """Pages of closed candles (ccxt rows ``[ms, o, h, l, c, v]``) with open times from
        ``start`` to ``last`` inclusive, paging forward; each page fetched with the retries and
        backoff of ``_fetch``. Stops when the exchange has nothing more."""
        cursor = int(start.value // 1_000_000)
        end_ms = int(last.value // 1_000_000)
        while cursor <= end_ms:  # exchanges cap one page (often 1000 candles): page forward
            page = self._fetch(market, cursor, limit)
            page = [r for r in page if r[0] >= cursor]
            if not page:
                return
            next_cursor = int(page[-1][0]) + 60_000
            # The exchange's newest candle may still be forming: keep only candles closed by `last`.
            page = [r for r in page if r[0] <= end_ms]
            if page:
                yield page
            cursor = next_cursor

    def _fetch_closed(self, market: str, start: pd.Timestamp, last: pd.Timestamp, n: int) -> pd.DataFrame:
        """Closed candles from ``start`` to ``last`` (open times, inclusive), paging forward."""
        rows = [r for page in self.iter_pages(market, start, last, min(1000, n)) for r in page]
        return ohlcv_frame(rows)

    def get_candles(self, symbol: str, n: int, end: pd.Timestamp | None = None) -> pd.DataFrame:
        """Closed candles never change, so those fetched before are kept per symbol and each
        call fetches only the minutes after them (one small page a minute instead of ~10)."""
        last = last_closed_minute(self._clock()) if end is None else pd.Timestamp(end).floor("min")
        market = ccxt_symbol(symbol, self.market_type)
        since = last - pd.Timedelta(minutes=n - 1)
        known = self._closed.get(symbol)
        if known is not None and not known.empty and known.index[0] <= since <= known.index[-1] + _MINUTE:
            start, keep = known.index[-1] + _MINUTE, known
        else:
            start, keep = since, None
        new = self._fetch_closed(market, start, last, n) if start <= last else keep.iloc[0:0]
        frame = new if keep is None else pd.concat([keep, new])
        frame = frame[~frame.index.duplicated(keep="last")].sort_index()
        self._closed[symbol] = frame.iloc[-max(n, self._keep_minutes):]
        return validate_candles(frame.loc[since:last].iloc[-n:], symbol)
