"""Delivery of outbox rows onto Redis, exactly once per signal id, in order.

Per row, one Lua script does atomically: skip if the id's dedup key exists; else XADD to the
bounded stream (MAXLEN ~), SET the dedup key (value: stream entry id, with TTL), HSET the
symbol's "latest" hash and PUBLISH the signal on the notify channel. Because the dedup key and
the XADD commit together, a crash between XADD and marking the row delivered cannot duplicate:
the retry finds the key and only marks the row. (The guard lives as long as Redis keeps its
data: a Redis restart without persistence forgets both the stream and the keys.)

OutboxRelay delivers pending rows oldest-first and stops a batch at the first failure, so a
later signal never overtakes an earlier one. ``run_forever`` retries with capped exponential
backoff and full jitter. SignalPublisher is the producer's entry: outbox first; if the
database is down, it delivers straight to Redis (same idempotent script) and keeps the signal
in a bounded buffer (signals/spool.py: a local file in the service, so a crash during the
outage loses none; in memory for one-off CLI runs) that is written to the outbox when the
database returns.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass

import redis
from sqlalchemy.exc import SQLAlchemyError

from signals.config import DeliveryConfig
from signals.outbox import Outbox
from signals.schema import Signal
from signals.spool import DiskSpool

log = logging.getLogger(__name__)

# KEYS: dedup, stream, latest hash, channel. ARGV: id, symbol, payload, maxlen, ttl_s.
_DELIVER_LUA = """
local seen = redis.call('GET', KEYS[1])
if seen then return {0, seen} end
local sid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
                       'id', ARGV[1], 'symbol', ARGV[2], 'signal', ARGV[3])
redis.call('SET', KEYS[1], sid, 'EX', ARGV[5])
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'stream_id', sid, 'signal', ARGV[3])
redis.call('PUBLISH', KEYS[4], ARGV[3])
return {1, sid}
"""

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)


@dataclass(frozen=True)
class RelayResult:
    delivered: int  # rows newly put on the stream
    already: int  # rows whose id Redis had already seen (only marked)
    error: str | None  # why the batch stopped early, if it did


class RedisDeliverer:
    """Runs the idempotent delivery script against one Redis client."""

    def __init__(self, client: redis.Redis, config: DeliveryConfig) -> None:
        self.client, self.config = client, config
        self._script = client.register_script(_DELIVER_LUA)

    def deliver(self, signal_id: str, symbol: str, payload: str) -> tuple[bool, str]:
        """(True, stream id) when added now; (False, stream id) when the id was already there."""
        c = self.config
        keys = [c.dedup_key(signal_id), c.stream_key, c.latest_key(symbol), c.channel_key]
        added, sid = self._script(keys=keys, args=[signal_id, symbol, payload, c.maxlen, c.dedup_ttl_s])
        return bool(int(added)), str(sid)


class OutboxRelay:
    """Moves pending outbox rows onto Redis. Keep one task per process; many are safe (dedup)."""

    def __init__(
        self, outbox: Outbox, client: redis.Redis, config: DeliveryConfig, rng: random.Random | None = None
    ) -> None:
        self.outbox, self.config = outbox, config
        self.deliverer = RedisDeliverer(client, config)
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_success_at: float | None = None  # time.monotonic()
        # Generation counters: the outbox is known empty when the last successful drain started
        # after the last enqueue. A direct (DB-down) delivery is allowed only then, so that it
        # cannot overtake an older pending row.
        self._enqueued_gen = 0
        self._drained_gen = -1

    def note_enqueued(self) -> None:
        """A producer added a row: the outbox is no longer known to be empty."""
        self._enqueued_gen += 1
        self._wake.set()

    @property
    def drained(self) -> bool:
        return self._drained_gen >= self._enqueued_gen

    def wake(self) -> None:
        """Ask ``run_forever`` to look at the outbox now (called after a publish)."""
        self._wake.set()

    def relay_once(self) -> RelayResult:
        """Deliver up to ``batch_size`` pending rows in order; stop at the first failure."""
        gen = self._enqueued_gen
        try:
            rows = self.outbox.pending(self.config.batch_size)
        except SQLAlchemyError as exc:
            return self._failed(f"database: {type(exc).__name__}")
        delivered = already = 0
        for row in rows:
            try:
                added, sid = self.deliverer.deliver(row.signal_id, row.symbol, row.payload)
            except (*REDIS_ERRORS, redis.RedisError) as exc:
                with contextlib.suppress(SQLAlchemyError):  # the row stays pending either way
                    self.outbox.mark_failed(row.seq, f"{type(exc).__name__}: {exc}")
                return self._failed(f"redis: {type(exc).__name__}: {exc}", delivered, already)
            try:
                self.outbox.mark_delivered(row.seq, sid)
            except SQLAlchemyError as exc:
                # Redis has it; the retry will find the dedup key and only mark the row.
                return self._failed(f"database: {type(exc).__name__}", delivered, already)
            delivered += added
            already += not added
        self.consecutive_failures, self.last_error = 0, None
        self.last_success_at = time.monotonic()
        if len(rows) < self.config.batch_size:
            self._drained_gen = gen
        return RelayResult(delivered, already, None)

    def backoff_s(self, failures: int) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**(failures-1)))."""
        c = self.config
        ceiling = min(c.retry_cap_s, c.retry_base_s * 2 ** max(0, min(failures - 1, 30)))
        return self._rng.uniform(0.0, ceiling)

    def run_forever(self, stop_event: threading.Event) -> None:
        """Relay until ``stop_event`` is set: drain, then wait for a wake-up or the poll interval;
        after a failure wait the backoff (never longer than ``retry_cap_s``)."""
        while not stop_event.is_set():
            result = self.relay_once()
            if result.error:
                delay = self.backoff_s(self.consecutive_failures)
                log.warning("outbox relay: %s; retry %d in %.2fs", result.error, self.consecutive_failures,
                            delay)
                stop_event.wait(delay)
                continue
            if result.delivered + result.already >= self.config.batch_size:
                continue  # more may be pending
            self._wake.wait(self.config.poll_interval_s)
            self._wake.clear()

    def _failed(self, error: str, delivered: int = 0, already: int = 0) -> RelayResult:
        self.consecutive_failures += 1
        self.last_error = error
        return RelayResult(delivered, already, error)


class SignalPublisher:
    """Producer side: ``publish`` never raises for an unreachable database or Redis."""

    def __init__(self, outbox: Outbox, relay: OutboxRelay, max_buffer: int = 10_000,
                 buffer_path: str | None = None) -> None:
        self.outbox, self.relay = outbox, relay
        # Signals not yet in the outbox, oldest first: {"signal": JSON, "sent": already sent
        # straight to Redis}. Past max_buffer the oldest are dropped (counted, logged).
        self._buffer = DiskSpool(buffer_path or ":memory:", max_buffer)
        self._pending = len(self._buffer) > 0  # left by a process that crashed: flushed first
        self._lock = threading.Lock()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def dropped(self) -> int:
        """Signals lost because the buffer overflowed during a long DB outage."""
        return self._buffer.dropped

    def publish(self, signal: Signal) -> str:
        """'queued' (in the outbox), 'duplicate' (id already there), 'direct' (DB down, sent
        straight to Redis and buffered for the outbox) or 'buffered' (DB down and Redis down, or
        older rows still pending so a direct send could overtake them)."""
        with self._lock:
            if self._flush_buffer():
                try:
                    added = self.outbox.add(signal)
                except SQLAlchemyError:
                    pass
                else:
                    self.relay.note_enqueued()
                    return "queued" if added else "duplicate"
            self._buffer.push({"signal": signal.model_dump_json(), "sent": False})
            self._pending = True
            self._send_buffer_direct()
            last = self._buffer.peek_last()
            return "direct" if last is not None and last[1]["sent"] else "buffered"

    def flush(self) -> bool:
        """Write buffered signals to the outbox; True when the buffer is empty afterwards."""
        with self._lock:
            return self._flush_buffer()

    def _flush_buffer(self) -> bool:
        if not self._pending:  # the usual case: nothing buffered, no query
            return True
        while rows := self._buffer.peek(100):
            for seq, doc in rows:
                try:
                    self.outbox.add(Signal.model_validate_json(doc["signal"]))
                except SQLAlchemyError:
                    return False
                self._buffer.remove_through(seq)  # after the insert: a crash here only repeats it
                self.relay.note_enqueued()
        self._pending = False
        return True

    def _send_buffer_direct(self) -> None:
        """While the DB is down, send buffered signals to Redis in order, but only when the
        outbox held nothing older (else they would overtake it)."""
        if not self.relay.drained:
            return
        for seq, doc in self._buffer.peek(self._buffer.max_rows):
            if doc["sent"]:
                continue
            sig = Signal.model_validate_json(doc["signal"])
            try:
                self.relay.deliverer.deliver(sig.id, sig.symbol, doc["signal"])
            except (*REDIS_ERRORS, redis.RedisError):
                return
            self._buffer.replace(seq, {**doc, "sent": True})
