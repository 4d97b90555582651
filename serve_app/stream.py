"""``GET /signals/stream``: the Redis signal stream as Server-Sent Events.

Each SSE event carries the Redis stream entry id as its ``id``, so a client that reconnects
with ``Last-Event-ID`` resumes with the entry right after the last one it saw: nothing lost
(the stream is the buffer), nothing repeated (XREAD is exclusive of the id given). Events:

- ``signal``: data = the Signal JSON, id = stream entry id
- ``heartbeat``: data = {"time", "cursor"} after ``heartbeat_s`` without a signal (no id)
- ``gap``: the client's id is older than the oldest entry kept (MAXLEN): signals may be lost
- ``overflow``: the client fell more than ``max_lag`` entries behind; the stream ends

Limits per client are in ``signals.config.StreamConfig`` (why they are limits and not socket
back-pressure is said there). Plain module: the ingress only mounts ``router``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import redis.asyncio as aioredis
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from serve_app import metrics
from signals.config import DeliveryConfig, StreamConfig

log = logging.getLogger("ray.serve")
router = APIRouter()
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_SYMBOLS = re.compile(r"^[A-Za-z0-9]{2,20}(,[A-Za-z0-9]{2,20})*$")


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def sse(event: str, data: str, event_id: str | None = None) -> str:
    """One SSE frame. ``data`` must be a single line (compact JSON is)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


class StreamHub:
    """Per ingress replica: the async Redis client and the count of open streams."""

    def __init__(self, client: aioredis.Redis, delivery: DeliveryConfig, config: StreamConfig) -> None:
        self.client, self.delivery, self.config = client, delivery, config
        self.open_streams = 0
        self.dropped = 0  # clients ended for falling behind (overflow)

    @classmethod
    def from_sync(cls, sync_client, delivery: DeliveryConfig, config: StreamConfig) -> StreamHub:
        """Same server as the service's sync client (TCP, TLS or a unix socket, e.g. the
        embedded server), with its credentials; never from a URL string that could be logged."""
        pool = sync_client.connection_pool
        kw = pool.connection_kwargs
        common = {"db": kw.get("db", 0), "username": kw.get("username"), "password": kw.get("password"),
                  "decode_responses": True, "socket_connect_timeout": 5,
                  # XREAD BLOCK waits up to heartbeat_s by design: the read timeout is longer
                  "socket_timeout": config.heartbeat_s + 10}
        if kw.get("path"):
            client = aioredis.Redis(unix_socket_path=kw["path"], **common)
        else:
            client = aioredis.Redis(host=kw.get("host", "127.0.0.1"), port=kw.get("port", 6379),
                                    ssl=pool.connection_class.__name__ == "SSLConnection", **common)
        return cls(client, delivery, config)

    async def start_cursor(self, last_id: str | None) -> tuple[str, str | None]:
        """(cursor to read after, gap event data or None)."""
        key = self.delivery.stream_key
        if last_id is None:  # new client: only what arrives from now on
            head = await self.client.xrevrange(key, count=1)
            return (head[0][0] if head else "0-0"), None
        try:
            info = await self.client.xinfo_stream(key)
        except aioredis.ResponseError:  # no stream yet
            return last_id, None
        # MAXLEN trims from the oldest end: when the client's id is older than the oldest entry
        # kept, signals after it may be gone (Redis keeps no count to tell for sure). XDEL'd
        # entries show in max-deleted-entry-id (Redis >= 7).
        first = info.get("first-entry")
        deleted = str(info.get("max-deleted-entry-id") or "0-0")
        if last_id != "0-0" and ((first and _id_tuple(first[0]) > _id_tuple(last_id))
                                 or _id_tuple(deleted) > _id_tuple(last_id)):
            return last_id, json.dumps({"last_event_id": last_id, "first_available": first[0] if first else None})
        return last_id, None

    async def events(self, cursor: str, symbols: frozenset[str] | None,
                     gap: str | None = None) -> AsyncIterator[str]:
        # A disconnect cancels this generator (Serve cancels the request), so no polling here.
        c, key = self.config, self.delivery.stream_key
        yield f"retry: {c.retry_ms}\n\n"
        if gap:
            yield sse("gap", gap)
        ends_at = time.monotonic() + c.max_duration_s
        behind = 0  # entries read in consecutive full batches: how far behind the head we are
        while time.monotonic() < ends_at:
            block_ms = int(min(c.heartbeat_s, max(0.05, ends_at - time.monotonic())) * 1000)
            reply = await self.client.xread({key: cursor}, count=c.batch, block=block_ms)
            entries = reply[0][1] if reply else []
            if not entries:
                yield sse("heartbeat", json.dumps({"time": datetime.now(UTC).isoformat(), "cursor": cursor}))
                continue
            behind = behind + len(entries) if len(entries) >= c.batch else 0
            if behind > c.max_lag:
                self.dropped += 1
                log.warning("signal stream: client more than %d entries behind; dropped", c.max_lag)
                yield sse("overflow", json.dumps({"cursor": cursor, "max_lag": c.max_lag}))
                return
            for entry_id, fields in entries:
                cursor = entry_id
                payload = fields.get("signal")
                if payload is None or (symbols and fields.get("symbol") not in symbols):
                    continue
                yield sse("signal", payload, entry_id)


def _hub(request: Request) -> StreamHub:
    hub = getattr(request.app.state, "stream_hub", None)
    if hub is None:
        raise HTTPException(503, "signal stream not configured")
    return hub


@router.get(
    "/signals/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 400: {}, 401: {}, 503: {}},
)
async def signal_stream(
    request: Request,
    symbols: str | None = Query(None, description="comma-separated symbols; default: all"),
    last_event_id: str | None = Header(None, description="resume after this stream entry id"),
    after: str | None = Query(None, description="resume after this id (same as Last-Event-ID)"),
) -> StreamingResponse:
    """Signals as they are delivered (Server-Sent Events); resume with ``Last-Event-ID``."""
    hub = _hub(request)
    start = last_event_id or after
    if start is not None and not _ENTRY_ID.match(start):
        raise HTTPException(400, "Last-Event-ID must be a stream entry id like 1733000000000-0")
    if symbols is not None and not _SYMBOLS.match(symbols):
        raise HTTPException(400, "symbols must be comma-separated symbols like BTCUSDT,ETHUSDT")
    wanted = frozenset(s.upper() for s in symbols.split(",")) if symbols else None
    if hub.open_streams >= hub.config.max_clients:
        raise HTTPException(503, f"at most {hub.config.max_clients} signal streams", headers={"Retry-After": "5"})
    cursor, gap = await hub.start_cursor(start)

    async def body() -> AsyncIterator[str]:
        hub.open_streams += 1
        metrics.stream_clients().set(hub.open_streams)
        try:
            async for frame in hub.events(cursor, wanted, gap):
                if frame.startswith("event: overflow"):
                    metrics.stream_dropped().inc()
                yield frame
        except aioredis.RedisError as exc:  # end the stream; the client resumes from its last id
            log.warning("signal stream: redis %s", type(exc).__name__)
        finally:
            hub.open_streams -= 1
            metrics.stream_clients().set(hub.open_streams)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
