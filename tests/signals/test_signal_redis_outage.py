"""Kill a real redis-server while signals keep coming; restart it; count lost and duplicate ids.

A second redis-server runs on a spare port. Variant "aof" (appendfsync always) is killed at an
arbitrary moment; variant "none" (--save "" --appendonly no) loses its whole dataset when
killed, so there the kill comes once the consumer has read what was delivered (entries that
only lived in a dead, non-persistent Redis are gone by Redis's own design, not the outbox's).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from common.db import make_engine
from signals.config import DeliveryConfig
from signals.consumer import SignalConsumer
from signals.outbox import Outbox
from signals.publisher import OutboxRelay, SignalPublisher
from signals.redis_conn import quick_retry
from signals.schema import Direction, Signal, signal_id

pytestmark = [pytest.mark.services, pytest.mark.slow]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
N_PER_PHASE = 12  # signals per symbol before, during and after the outage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, workdir, persistence: str) -> subprocess.Popen:
    args = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
            "--dir", str(workdir), "--bind", "127.0.0.1"]
    args += ["--appendonly", "yes", "--appendfsync", "always"] if persistence == "aof" else [
        "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(port=port, socket_connect_timeout=0.2)
    for _ in range(100):
        try:
            if probe.ping():
                return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def _signal(symbol: str, i: int) -> Signal:
    bar = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(minutes=i)
    return Signal(
        id=signal_id(symbol, bar, "v1"), symbol=symbol, direction=Direction.NEUTRAL, confidence=0.0,
        strength=0.0, entry=100.0, horizon="1h", bar_time=bar, created_at=bar,
        expires_at=bar + timedelta(hours=1), model_version="v1", feature_spec_hash="fh",
    )


class Consumer(threading.Thread):
    """Reads the stream through a consumer group, acks, records ids; rides out outages."""

    def __init__(self, port: int, cfg: DeliveryConfig) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=0.2,
                                  decode_responses=True, retry=quick_retry())
        self.cfg, self.ids, self.stop = cfg, [], threading.Event()

    def run(self) -> None:
        # the reference consumer: it replays entries whose read reply was lost in the crash
        consumer = SignalConsumer(self.client, self.cfg, "engine", "c1")
        while not self.stop.is_set():
            try:
                got = consumer.read(count=50, block_ms=100)
                self.ids.extend((sig.symbol, sig.id) for _, sig in got)
                consumer.ack([entry_id for entry_id, _ in got])
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                time.sleep(0.05)


@pytest.mark.parametrize("persistence", ["aof", "none"])
def test_redis_killed_mid_stream_loses_and_duplicates_nothing(tmp_path, persistence):
    port = _free_port()
    server = _start(port, tmp_path, persistence)
    cfg = DeliveryConfig(prefix=f"outage:{uuid.uuid4().hex[:8]}", retry_base_s=0.05, retry_cap_s=0.4,
                         poll_interval_s=0.05)
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.2, decode_responses=True,
                         retry=quick_retry())
    outbox = Outbox(make_engine(f"sqlite:///{tmp_path / 'outbox.db'}"))
    relay = OutboxRelay(outbox, client, cfg)
    publisher = SignalPublisher(outbox, relay)
    stop = threading.Event()
    relay_thread = threading.Thread(target=relay.run_forever, args=(stop,), daemon=True)
    consumer = Consumer(port, cfg)
    relay_thread.start()
    consumer.start()
    produced: list[tuple[str, str]] = []

    def produce(phase: int) -> None:
        for i in range(phase * N_PER_PHASE, (phase + 1) * N_PER_PHASE):
            for sym in SYMBOLS:
                s = _signal(sym, i)
                assert publisher.publish(s) == "queued"
                produced.append((sym, s.id))
            time.sleep(0.01)

    try:
        produce(0)
        if persistence == "none":
            deadline = time.monotonic() + 10
            while len(consumer.ids) < len(produced) and time.monotonic() < deadline:
                time.sleep(0.02)
        server.kill()  # SIGKILL, no goodbye
        server.wait()
        produce(1)  # Redis is down: these wait in the outbox
        time.sleep(0.5)
        failures_during_outage = relay.consecutive_failures
        server = _start(port, tmp_path, persistence)
        produce(2)
        deadline = time.monotonic() + 20
        while (outbox.pending_count() or len(consumer.ids) < len(produced)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        consumer.stop.set()
        relay_thread.join(5)
        consumer.join(5)
        server.kill()
        server.wait()

    consumed_ids = [i for _, i in consumer.ids]
    lost = {i for _, i in produced} - set(consumed_ids)
    duplicates = len(consumed_ids) - len(set(consumed_ids))
    print(f"[{persistence}] produced={len(produced)} consumed={len(consumed_ids)} lost={len(lost)} "
          f"duplicates={duplicates} relay failures during outage={failures_during_outage}")
    assert failures_during_outage > 0  # the relay really saw Redis gone
    assert (len(lost), duplicates) == (0, 0)
    for sym in SYMBOLS:  # order per symbol survives the outage
        assert [i for s, i in consumer.ids if s == sym] == [i for s, i in produced if s == sym]
