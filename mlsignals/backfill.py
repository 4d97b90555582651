"""Start-up backfill for a live (ccxt) source: the history the model needs is downloaded into
the SQL candle store, a bounded number of symbols at a time, before those symbols are served;
afterwards each request fetches only the minutes after the stored ones.

``Backfill`` runs the downloads (in a background thread, retrying failed symbols) and reports
"backfilling k/n symbols"; ``BackfilledSource`` is the MarketDataSource the feature stage reads:
a symbol still backfilling raises a ``DataSourceError`` saying so, which the feature stage turns
into a NEUTRAL signal with that reason, never a crash. Plain classes, no Ray."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from common.errors import DataSourceError, MLSignalsError
from features.sources.download import CandleDownloader, utc_minute

log = logging.getLogger(__name__)
_MINUTE = pd.Timedelta(minutes=1)


class Backfill:
    """Downloads the last ``minutes`` closed minutes of every symbol into the store, at most
    ``concurrency`` symbols at a time; symbols that fail are tried again every ``retry_s``."""

    def __init__(
        self,
        downloader: CandleDownloader,
        symbols: list[str],
        minutes: int,
        concurrency: int = 4,
        retry_s: float = 30.0,
    ) -> None:
        if concurrency < 1 or minutes < 1:
            raise ValueError("concurrency and minutes must be positive")
        self.downloader, self.minutes, self.concurrency, self.retry_s = downloader, minutes, concurrency, retry_s
        self.symbols = list(dict.fromkeys(s.upper() for s in symbols))
        self._lock = threading.Lock()
        self._done: set[str] = set()
        self._failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state -------------------------------------------------------------------------------
    def is_done(self, symbol: str) -> bool:
        with self._lock:
            return symbol.upper() in self._done

    @property
    def complete(self) -> bool:
        with self._lock:
            return len(self._done) == len(self.symbols)

    def status(self) -> dict:
        """For /readyz: state, k/n, the message, and the reason of each symbol that failed."""
        with self._lock:
            k, n, failed = len(self._done), len(self.symbols), dict(self._failed)
        state = "done" if k == n else "backfilling"
        message = f"backfilled {n} symbols" if k == n else f"backfilling {k}/{n} symbols"
        return {"state": state, "done": k, "total": n, "message": message, "failed": failed}

    # -- work --------------------------------------------------------------------------------
    def _one(self, symbol: str) -> None:
        since = self.downloader.last_closed() - (self.minutes - 1) * _MINUTE
        try:
            res = self.downloader.download(symbol, since)
        except MLSignalsError as exc:
            with self._lock:
                self._failed[symbol] = str(exc)
            log.warning("backfill %s failed (%s); retrying in %.0fs", symbol, exc, self.retry_s)
            return
        except Exception as exc:  # noqa: BLE001 - one symbol's failure must not stop the others
            with self._lock:
                self._failed[symbol] = f"{type(exc).__name__}: {exc}"
            log.exception("backfill %s failed", symbol)
            return
        if res.gaps:
            log.warning("backfill %s: exchange gaps %s", symbol, [g.to_dict() for g in res.gaps])
        with self._lock:
            self._done.add(symbol)
            self._failed.pop(symbol, None)
        log.info("backfill %s: %d candles written (%s)", symbol, res.written, self.status()["message"])

    def run_once(self) -> dict:
        """One round over the symbols not done yet, ``concurrency`` at a time; returns status()."""
        with self._lock:
            todo = [s for s in self.symbols if s not in self._done]
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo)),
                                    thread_name_prefix="backfill") as pool:
                list(pool.map(self._one, todo))
        return self.status()

    def run(self) -> dict:
        """Rounds until every symbol is done or ``stop()`` is called."""
        while not self._stop.is_set():
            if self.run_once()["state"] == "done":
                break
            self._stop.wait(self.retry_s)
        return self.status()

    def start(self) -> Backfill:
        """Run in a daemon thread (the service keeps serving meanwhile)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="backfill", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until complete (tests, CLI); True when it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.complete:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


class BackfilledSource:
    """MarketDataSource over the SQL candle store kept current from the exchange: a symbol is
    served once its backfill is done, each call first fetching only the minutes after the stored
    ones; when the exchange fails, the stored candles are served (the feature stage's staleness
    rule decides whether they are recent enough). Untracked symbols are read live."""

    def __init__(self, backfill: Backfill) -> None:
        self.backfill = backfill
        self.downloader = backfill.downloader
        self.store = backfill.downloader.store
        self.live = backfill.downloader.source

    def symbols(self) -> list[str]:
        return list(self.backfill.symbols)

    def status(self) -> dict:
        return self.backfill.status()

    def start_backfill(self) -> BackfilledSource:
        self.backfill.start()
        return self

    def get_candles(self, symbol: str, n: int, end: pd.Timestamp | None = None) -> pd.DataFrame:
        symbol = symbol.upper()
        if symbol not in self.backfill.symbols:
            return self.live.get_candles(symbol, n, end)
        if not self.backfill.is_done(symbol):
            raise DataSourceError(f"{symbol}: history still backfilling ({self.backfill.status()['message']})")
        stored = self.store.time_range(symbol)
        wanted = self.downloader.last_closed() if end is None else utc_minute(end)
        if stored is not None and stored[1] < wanted:
            try:  # only the new minutes: the download resumes after the stored candles
                self.downloader.download(symbol, stored[1] + _MINUTE, wanted)
            except MLSignalsError as exc:
                log.warning("%s: new candles not fetched (%s); serving the stored ones", symbol, exc)
        return self.store.get_candles(symbol, n, end)
