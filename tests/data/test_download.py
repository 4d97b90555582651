"""`CandleDownloader`: ccxt history into the SQL candle store, driven by recorded ccxt-format
payloads (``[[ms, o, h, l, c, v], ...]`` of the shipped real candles) from a stand-in exchange
that pages like a real one and fails where told (no exchange is reachable here)."""

from __future__ import annotations

import ccxt
import pandas as pd
import pytest

from common.db import make_engine
from common.errors import CandleValidationError, DataSourceError
from features.sources.ccxt_source import CcxtSource, make_exchange
from features.sources.download import CandleDownloader
from features.sources.sql_store import SqlCandleStore

_MIN = pd.Timedelta(minutes=1)


def recorded_rows(df: pd.DataFrame) -> list[list[float]]:
    ms = df.index.as_unit("ns").asi8 // 1_000_000
    return [[int(t), *map(float, v)] for t, v in zip(ms, df.to_numpy(), strict=True)]


class PagedExchange:
    """fetch_ohlcv over recorded rows, at most `page` rows a call (the exchange's newest candle
    included, still forming); `fail` maps a call number (1-based) to the exception it raises."""

    def __init__(self, rows: list[list[float]], page: int = 500, fail: dict[int, Exception] | None = None):
        self.rows, self.page, self.fail, self.calls, self.since = rows, page, dict(fail or {}), 0, []

    def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None):
        self.calls += 1
        self.since.append(since)
        if self.calls in self.fail:
            raise self.fail[self.calls]
        out = [list(r) for r in self.rows if since is None or r[0] >= since]
        return out[: min(limit or self.page, self.page)]


@pytest.fixture
def store(tmp_path):
    return SqlCandleStore(make_engine(f"sqlite:///{tmp_path / 'candles.db'}"), exchange="binance")


@pytest.fixture
def rec(shipped_candles) -> pd.DataFrame:
    return shipped_candles["BTCUSDT"].iloc[:2000]


def downloader(ex, store, now, sleeps=None, **kw) -> CandleDownloader:
    src = CcxtSource(ex, ["BTCUSDT"], sleep=(sleeps.append if sleeps is not None else lambda s: None),
                     backoff_s=0.1, **kw)
    return CandleDownloader(src, store, page_limit=500, clock=lambda: now, progress=False)


def stored(store: SqlCandleStore) -> pd.DataFrame:
    return store.get_candles("BTCUSDT", 1_000_000)


def test_pages_closed_candles_only_into_the_store(rec, store):
    now = rec.index[-1] + pd.Timedelta(seconds=20)  # the last recorded candle is still forming
    ex = PagedExchange(recorded_rows(rec))
    res = downloader(ex, store, now).download("BTCUSDT", since=rec.index[0])
    assert res.pages == 4 and ex.calls >= 4  # 1999 closed candles in pages of 500
    assert res.written == 1999 and res.gaps == [] and res.first_available is None
    pd.testing.assert_frame_equal(stored(store), rec.iloc[:-1], check_freq=False)
    assert ex.since[0] == rec.index[0].value // 10**6


def test_until_bounds_the_download(rec, store):
    now = rec.index[-1] + pd.Timedelta(minutes=5)
    res = downloader(PagedExchange(recorded_rows(rec)), store, now).download(
        "BTCUSDT", since=rec.index[100], until=rec.index[399])
    assert res.written == 300
    pd.testing.assert_frame_equal(stored(store), rec.iloc[100:400], check_freq=False)


@pytest.mark.parametrize("exc", [ccxt.NetworkError("reset"), ccxt.RateLimitExceeded("429 too many requests")])
def test_a_failing_page_is_retried_with_growing_backoff(rec, store, exc):
    now = rec.index[-1] + _MIN
    ex = PagedExchange(recorded_rows(rec), fail={2: exc, 3: exc, 4: exc})
    sleeps: list[float] = []
    res = downloader(ex, store, now, sleeps).download("BTCUSDT", since=rec.index[0])
    assert res.written == 2000
    assert len(sleeps) == 3 and sleeps[2] > sleeps[0]  # capped exponential backoff with jitter
    assert ex.since[1] == ex.since[2] == ex.since[3] == ex.since[4]  # the same page asked again
    pd.testing.assert_frame_equal(stored(store), rec, check_freq=False)


def test_exchange_gap_is_reported_not_filled(rec, store):
    # the exchange has no candles for half an hour right after the first page of 500, for an
    # hour inside a page and for 3 minutes at the end
    missing = {*range(500, 530), *range(1200, 1260), *range(1997, 2000)}
    rows = [r for i, r in enumerate(recorded_rows(rec)) if i not in missing]
    now = rec.index[-1] + _MIN
    res = downloader(PagedExchange(rows), store, now).download("BTCUSDT", since=rec.index[0])
    assert [(g.start, g.missing) for g in res.gaps] == [
        (rec.index[500], 30), (rec.index[1200], 60), (rec.index[1997], 3)]
    assert res.missing_minutes == 93 and res.written == 2000 - 93
    got = stored(store)
    assert len(got) == 1907 and not set(rec.index[sorted(missing)]) & set(got.index)  # nothing invented


def test_history_starting_after_since_is_not_a_gap(rec, store):
    now = rec.index[-1] + _MIN
    res = downloader(PagedExchange(recorded_rows(rec.iloc[300:])), store, now).download(
        "BTCUSDT", since=rec.index[0])
    assert res.first_available == rec.index[300] and res.gaps == []


def test_bad_row_refuses_its_page_and_writes_nothing_of_it(rec, store):
    rows = recorded_rows(rec)
    rows[620][2] = rows[620][3] / 2  # high below low, in the second page
    now = rec.index[-1] + _MIN
    with pytest.raises(CandleValidationError, match=r"BTCUSDT @ .*high below"):
        downloader(PagedExchange(rows), store, now).download("BTCUSDT", since=rec.index[0])
    got = stored(store)
    assert len(got) == 500 and got.index[-1] == rec.index[499]  # only the whole first page
    # a first page with a bad row: nothing at all
    other = SqlCandleStore(store.engine, exchange="bybit")
    rows[5][4] = float("nan")
    with pytest.raises(CandleValidationError, match="NaN"):
        CandleDownloader(CcxtSource(PagedExchange(rows), ["BTCUSDT"], sleep=lambda s: None), other,
                         page_limit=500, clock=lambda: now, progress=False).download("BTCUSDT", rec.index[0])
    assert other.time_range("BTCUSDT") is None


def test_resume_after_an_interruption_fetches_only_what_is_missing(rec, store):
    now = rec.index[-1] + _MIN
    down = PagedExchange(recorded_rows(rec), fail={i: ccxt.NetworkError("down") for i in range(3, 20)})
    with pytest.raises(DataSourceError, match="unreachable after 3 tries"):
        downloader(down, store, now, max_retries=2).download("BTCUSDT", since=rec.index[0])
    assert store.time_range("BTCUSDT") == (rec.index[0], rec.index[999])  # two whole pages kept
    ex = PagedExchange(recorded_rows(rec))
    res = downloader(ex, store, now).download("BTCUSDT", since=rec.index[0])
    assert ex.since[0] == rec.index[1000].value // 10**6  # resumed after the stored candles
    assert res.written == 1000 and res.gaps == []
    pd.testing.assert_frame_equal(stored(store), rec, check_freq=False)
    # nothing new yet: no fetch at all; an earlier `since` fetches only the minutes before
    ex2 = PagedExchange(recorded_rows(rec))
    assert downloader(ex2, store, now).download("BTCUSDT", since=rec.index[0]).written == 0
    assert ex2.calls == 0


def test_earlier_since_prepends_only_the_missing_minutes(rec, store):
    now = rec.index[-1] + _MIN
    downloader(PagedExchange(recorded_rows(rec)), store, now).download("BTCUSDT", since=rec.index[1500])
    ex = PagedExchange(recorded_rows(rec))
    res = downloader(ex, store, now).download("BTCUSDT", since=rec.index[1000])
    assert res.written == 500 and res.fetched == [(rec.index[1000], rec.index[1499])]
    pd.testing.assert_frame_equal(stored(store), rec.iloc[1000:], check_freq=False)


def test_make_exchange_respects_the_exchange_rate_limit():
    ex = make_exchange("binance")
    assert ex.enableRateLimit is True and ex.rateLimit > 0


def test_progress_bar_on_stderr(rec, store, capsys, monkeypatch):
    # tqdm skips redraws within its minimum interval; a long one makes the final count depend
    # on the explicit last redraw, not on how fast the pages came
    monkeypatch.setenv("TQDM_MININTERVAL", "1000")
    now = rec.index[-1] + _MIN
    src = CcxtSource(PagedExchange(recorded_rows(rec)), ["BTCUSDT"], sleep=lambda s: None)
    CandleDownloader(src, store, page_limit=500, clock=lambda: now, progress=True).download("BTCUSDT", rec.index[0])
    err = capsys.readouterr().err
    assert "binance BTCUSDT" in err and "2000/2000" in err


@pytest.mark.services
def test_interrupted_download_resumes_on_postgresql(rec, pg_url):
    """The store's time range (timestamptz on PostgreSQL) drives the resume the same way."""
    pg = SqlCandleStore(make_engine(pg_url), exchange="binance")
    now = rec.index[-1] + _MIN
    down = PagedExchange(recorded_rows(rec), fail={i: ccxt.RateLimitExceeded("429") for i in range(2, 9)})
    with pytest.raises(DataSourceError):
        downloader(down, pg, now, max_retries=1).download("BTCUSDT", since=rec.index[0])
    assert pg.time_range("BTCUSDT") == (rec.index[0], rec.index[499])
    ex = PagedExchange(recorded_rows(rec))
    assert downloader(ex, pg, now).download("BTCUSDT", since=rec.index[0]).written == 1500
    assert ex.since[0] == rec.index[500].value // 10**6
    pd.testing.assert_frame_equal(stored(pg), rec, check_freq=False)
    pg.engine.dispose()
