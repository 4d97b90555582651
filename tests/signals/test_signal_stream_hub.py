"""The SSE generator behind GET /signals/stream against the real Redis (no Ray): resume after
an id without loss or repeats, symbol filter, heartbeats, the gap and overflow events, the
duration limit. Signals are put on the stream by the service's own delivery script."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
import redis.asyncio as aioredis

from mlsignals.client import parse_sse
from serve_app.stream import StreamHub
from signals.config import DeliveryConfig, StreamConfig
from signals.publisher import RedisDeliverer
from signals.schema import Direction, Signal, signal_id
from tests.conftest import REDIS_TEST_URL

pytestmark = pytest.mark.services
T0 = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


def make_signal(symbol: str, minute: int) -> Signal:
    bar = T0 + timedelta(minutes=minute)
    return Signal(id=signal_id(symbol, bar, "m1"), symbol=symbol, direction=Direction.NEUTRAL, confidence=0.4,
                  strength=0.1, entry=100.0, horizon="1h", bar_time=bar, created_at=bar,
                  expires_at=bar + timedelta(hours=1), model_version="m1", feature_spec_hash="h",
                  reasons=[f"low confidence {minute}"])


def deliver(delivery: DeliveryConfig, signals: list[Signal]) -> list[str]:
    d = RedisDeliverer(redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True), delivery)
    return [d.deliver(s.id, s.symbol, s.model_dump_json())[1] for s in signals]


def collect(delivery: DeliveryConfig, config: StreamConfig, last_id: str | None, symbols=None,
            stop_after: int = 100, until_heartbeat: bool = True, before_read=None) -> list:
    """Frames of one stream, parsed, until a heartbeat (caught up) or the generator ends."""

    async def run() -> list:
        client = aioredis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
        hub = StreamHub(client, delivery, config)
        cursor, gap = await hub.start_cursor(last_id)
        if before_read:
            before_read()
        text = []
        async for frame in hub.events(cursor, frozenset(symbols) if symbols else None, gap):
            text.append(frame)
            if (until_heartbeat and "event: heartbeat" in frame) or len(text) > stop_after:
                break
        await client.aclose()
        return list(parse_sse(iter("".join(text).split("\n"))))

    return asyncio.run(run())


@pytest.fixture
def delivery(redis_prefix: str) -> DeliveryConfig:
    return DeliveryConfig(prefix=redis_prefix.rstrip(":"))


FAST = StreamConfig(heartbeat_s=0.3, max_duration_s=30)


def test_resume_after_an_id_gives_exactly_the_later_signals(delivery):
    ids = deliver(delivery, [make_signal(s, m) for m in range(3) for s in ("BTCUSDT", "ETHUSDT")])
    events = collect(delivery, FAST, ids[1])
    got = [e for e in events if e.event == "signal"]
    assert [e.id for e in got] == ids[2:]  # nothing before or at the id, nothing lost, no repeat
    assert [json.loads(e.data)["id"] for e in got] == [make_signal(s, m).id for m in (1, 2)
                                                     for s in ("BTCUSDT", "ETHUSDT")]
    assert events[-1].event == "heartbeat" and json.loads(events[-1].data)["cursor"] == ids[-1]


def test_new_client_gets_only_what_arrives_after_it_connected(delivery):
    deliver(delivery, [make_signal("BTCUSDT", 0)])
    later = [make_signal("BTCUSDT", 1), make_signal("ETHUSDT", 1)]
    ids: list[str] = []
    events = collect(delivery, StreamConfig(heartbeat_s=2), None, before_read=lambda: ids.extend(deliver(delivery, later)))
    assert [e.id for e in events if e.event == "signal"] == ids


def test_symbol_filter(delivery):
    ids = deliver(delivery, [make_signal(s, m) for m in range(2) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")])
    events = collect(delivery, FAST, "0-0", symbols={"ETHUSDT"})
    got = [e for e in events if e.event == "signal"]
    assert [e.id for e in got] == [ids[1], ids[4]]
    assert {json.loads(e.data)["symbol"] for e in got} == {"ETHUSDT"}


def test_trimmed_entries_are_reported_as_a_gap(delivery):
    ids = deliver(delivery, [make_signal("BTCUSDT", m) for m in range(6)])
    r = redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    r.xtrim(delivery.stream_key, maxlen=2, approximate=False)  # what MAXLEN does to an old reader
    events = collect(delivery, FAST, ids[0])
    assert events[0].event == "gap" and json.loads(events[0].data)["first_available"] == ids[4]
    assert [e.id for e in events if e.event == "signal"] == ids[4:]
    clean = collect(delivery, FAST, ids[4])  # the id is still on the stream: no gap
    assert [e.event for e in clean][0] == "signal"


def test_a_client_too_far_behind_is_dropped_not_buffered(delivery):
    ids = deliver(delivery, [make_signal("BTCUSDT", m) for m in range(12)])
    cfg = StreamConfig(heartbeat_s=0.3, batch=4, max_lag=8)
    events = collect(delivery, cfg, "0-0")
    assert events[-1].event == "overflow"
    assert len([e for e in events if e.event == "signal"]) == 8  # two batches, then dropped
    ok = collect(delivery, cfg, ids[3])  # 8 behind: within the limit, read to the end
    assert [e.id for e in ok if e.event == "signal"] == ids[4:]


def test_stream_ends_after_max_duration(delivery):
    events = collect(delivery, StreamConfig(heartbeat_s=0.2, max_duration_s=1.0), None, until_heartbeat=False)
    assert 2 <= len([e for e in events if e.event == "heartbeat"]) <= 6  # then the generator returned
