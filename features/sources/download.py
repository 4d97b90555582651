"""History download from an exchange (ccxt) into the SQL candle store, freqtrade-style:
incremental (only the minutes the store lacks between ``since`` and ``until``), closed candles
only, the paging, rate limit and retries of ``CcxtSource``, every page validated before it is
written and written in one transaction (a failure leaves whole pages only, and the next run
resumes after them), gaps in the exchange's data reported, never filled."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from features.candles import Gap, validate_candles
from features.sources.base import last_closed_minute
from features.sources.ccxt_source import CcxtSource, ccxt_symbol, ohlcv_frame
from features.sources.sql_store import SqlCandleStore

_MINUTE = pd.Timedelta(minutes=1)


@dataclass
class DownloadResult:
    symbol: str
    exchange: str
    requested: tuple[pd.Timestamp, pd.Timestamp]  # [since, last closed minute wanted]
    written: int = 0
    pages: int = 0
    fetched: list[tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=list)  # ranges asked for
    gaps: list[Gap] = field(default_factory=list)  # minutes the exchange has no candle for
    first_available: pd.Timestamp | None = None  # the exchange's data starts after `since`

    @property
    def missing_minutes(self) -> int:
        return sum(g.missing for g in self.gaps)

    def to_dict(self) -> dict:
        return {
            "symbol": self.symbol, "exchange": self.exchange,
            "since": self.requested[0].isoformat(), "until": self.requested[1].isoformat(),
            "written": self.written, "pages": self.pages,
            "fetched": [[a.isoformat(), b.isoformat()] for a, b in self.fetched],
            "gaps": [g.to_dict() for g in self.gaps], "missing_minutes": self.missing_minutes,
            "first_available": None if self.first_available is None else self.first_available.isoformat(),
        }


def utc_minute(t: pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).floor("min").as_unit("ns")


class CandleDownloader:
    """Downloads 1-minute candles of one exchange into ``store`` (whose exchange label they get)."""

    def __init__(
        self,
        source: CcxtSource,
        store: SqlCandleStore,
        page_limit: int = 1000,
        clock: Callable[[], pd.Timestamp] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.source, self.store, self.page_limit = source, store, page_limit
        self._clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self.progress = sys.stderr.isatty() if progress is None else progress

    def last_closed(self) -> pd.Timestamp:
        """Open time of the last closed minute by this downloader's clock."""
        return last_closed_minute(self._clock())

    def missing_ranges(self, symbol: str, since: pd.Timestamp, last: pd.Timestamp,
                       ) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """What the store lacks of [since, last]: before its first and after its last candle.
        (Holes inside the stored range are the exchange's gaps, reported when downloaded.)"""
        stored = self.store.time_range(symbol)
        if stored is None:
            return [(since, last)] if since <= last else []
        first, stored_last = stored
        out = []
        if since < first:
            out.append((since, min(last, first - _MINUTE)))
        start = max(since, stored_last + _MINUTE)
        if start <= last:
            out.append((start, last))
        return out

    def download(self, symbol: str, since: pd.Timestamp | str, until: pd.Timestamp | str | None = None,
                 ) -> DownloadResult:
        """Fetch and store what is missing of [since, until] (until: the last closed minute by
        default, and never later). Raises the source's error (DataSourceError after the
        retries, CandleValidationError on a bad candle) with every earlier page kept."""
        symbol = symbol.upper()
        since = utc_minute(since)
        last = self.last_closed()
        if until is not None:
            last = min(last, utc_minute(until))
        result = DownloadResult(symbol, self.store.exchange, (since, last))
        ranges = self.missing_ranges(symbol, since, last)
        total = sum(int((b - a) / _MINUTE) + 1 for a, b in ranges)
        bar = None
        if self.progress and total:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="min", desc=f"{self.store.exchange} {symbol}", file=sys.stderr,
                       leave=False, dynamic_ncols=True)
        try:
            for start, end in ranges:
                result.fetched.append((start, end))
                self._download_range(symbol, start, end, result, bar)
        finally:
            if bar is not None:
                bar.refresh()  # the last count is always drawn (tqdm skips redraws within mininterval)
                bar.close()
        return result

    def _download_range(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp, result: DownloadResult,
                        bar) -> None:
        market = ccxt_symbol(symbol, self.source.market_type)
        stored = self.store.time_range(symbol)
        # The candle before this range (stored), to see a gap at the range's start.
        prev: pd.Timestamp | None = None
        if stored is not None and stored[1] < start:
            prev = stored[1]
        done_to = start - _MINUTE
        for page in self.source.iter_pages(market, start, end, self.page_limit):
            frame = validate_candles(ohlcv_frame(page), symbol)  # a bad row refuses the whole page
            first = frame.index[0]
            if prev is None:
                if first > start:
                    if result.first_available is None and start == result.requested[0]:
                        result.first_available = first  # the exchange's history begins later
                    else:
                        result.gaps.append(Gap(start, int((first - start) / _MINUTE)))
            elif first - prev > _MINUTE:
                result.gaps.append(Gap(prev + _MINUTE, int((first - prev) / _MINUTE) - 1))
            steps = frame.index.to_series().diff().iloc[1:]
            for t, d in steps[steps > _MINUTE].items():
                result.gaps.append(Gap(t - d + _MINUTE, int(d / _MINUTE) - 1))
            result.written += self.store.upsert(symbol, frame)  # one transaction per page
            result.pages += 1
            prev = frame.index[-1]
            if bar is not None:
                bar.update(int((prev - done_to) / _MINUTE))
            done_to = prev
        # The exchange had nothing more before `end`: the minutes after its last candle are missing.
        if prev is None:
            if start == result.requested[0] and stored is not None and stored[0] == end + _MINUTE:
                result.first_available = stored[0]  # before the stored history the exchange has none
            else:
                result.gaps.append(Gap(start, int((end - start) / _MINUTE) + 1))
        elif prev < end:
            result.gaps.append(Gap(prev + _MINUTE, int((end - prev) / _MINUTE)))
        if bar is not None and end > done_to:
            bar.update(int((end - done_to) / _MINUTE))
