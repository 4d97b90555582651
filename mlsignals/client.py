"""A small Python client of the HTTP service: predict, latest, and the signal stream with resume.

    from mlsignals.client import SignalClient
    client = SignalClient("http://127.0.0.1:8000")          # api_key: $MLSIGNALS_API_KEY if set
    client.predict("ETHUSDT").direction
    client.latest("BTCUSDT")                                 # None before the first delivery
    for sig in client.stream(symbols=["BTCUSDT"]):           # reconnects with Last-Event-ID
        print(sig.symbol, sig.direction, client.last_event_id)

The API key travels only in the ``X-API-Key`` header. ``stream`` keeps ``last_event_id`` (the
Redis stream entry id of the last signal it yielded); pass it to a later ``stream`` call to
resume exactly after it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from signals.schema import Signal


class ClientError(RuntimeError):
    """The service answered with an error status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class StreamGapError(RuntimeError):
    """Signals after ``last_event_id`` were trimmed from the stream before we resumed (``gap``),
    or the server dropped this client for falling too far behind (``overflow``)."""

    def __init__(self, kind: str, data: dict) -> None:
        super().__init__(f"signal stream {kind}: {data}")
        self.kind, self.data = kind, data


@dataclass(frozen=True)
class StreamEvent:
    event: str  # signal | heartbeat | gap | overflow
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Server-Sent Events framing: fields until a blank line; comments and ``retry`` ignored."""
    event, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data:
                yield StreamEvent(event, "\n".join(data), event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


class SignalClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout_s: float = 60.0) -> None:
        key = api_key if api_key is not None else os.environ.get("MLSIGNALS_API_KEY")
        headers = {"X-API-Key": key} if key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.last_event_id: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SignalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def _check(res: httpx.Response) -> httpx.Response:
        if res.status_code >= 400:
            try:
                detail = res.json().get("detail", res.text)
            except ValueError:
                detail = res.text
            raise ClientError(res.status_code, str(detail))
        return res

    def predict(self, symbol: str, candles: list[dict] | None = None,
                btc_candles: list[dict] | None = None) -> Signal:
        """The signal for ``symbol`` now, or for the 1-minute candles given."""
        body: dict[str, Any] = {"symbol": symbol}
        if candles is not None:
            body["candles"] = candles
        if btc_candles is not None:
            body["btc_candles"] = btc_candles
        return Signal.model_validate_json(self._check(self._http.post("/predict", json=body)).content)

    def latest(self, symbol: str) -> Signal | None:
        """The last signal delivered onto the stream for ``symbol``; None before the first."""
        res = self._http.get(f"/signals/latest/{symbol}")
        if res.status_code == 404:
            return None
        return Signal.model_validate_json(self._check(res).content)

    def events(self, symbols: list[str] | None = None, last_event_id: str | None = None) -> Iterator[StreamEvent]:
        """One connection's events, as sent (heartbeats included); ends when the server ends it."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        params = {"symbols": ",".join(symbols)} if symbols else None
        with self._http.stream("GET", "/signals/stream", headers=headers, params=params) as res:
            if res.status_code >= 400:
                res.read()
                self._check(res)
            yield from parse_sse(res.iter_lines())

    def stream(self, symbols: list[str] | None = None, last_event_id: str | None = None, *,
               reconnect: bool = True, retry_s: float = 1.0, max_retry_s: float = 30.0) -> Iterator[Signal]:
        """Signals as they are delivered, across reconnects: each connection resumes after
        ``self.last_event_id``, so nothing is skipped or repeated. Raises StreamGapError when
        the server reports signals it can no longer send."""
        if last_event_id is not None:
            self.last_event_id = last_event_id
        failures = 0
        while True:
            try:
                for ev in self.events(symbols, self.last_event_id):
                    failures = 0
                    if ev.event == "signal":
                        sig = Signal.model_validate_json(ev.data)
                        self.last_event_id = ev.id
                        yield sig
                    elif ev.event in ("gap", "overflow"):
                        raise StreamGapError(ev.event, ev.json())
            except (httpx.TransportError, httpx.RemoteProtocolError):
                failures += 1
            except ClientError as exc:
                if exc.status != 503:
                    raise
                failures += 1
            if not reconnect:
                return
            if failures:
                time.sleep(min(max_retry_s, retry_s * 2 ** (failures - 1)))
