"""mlsignals.client's stream across server-ended connections, over real HTTP (the stream router
under uvicorn, no Ray) on the real Redis: each stream ends after ``max_duration_s`` and the
client reconnects with Last-Event-ID; signals delivered meanwhile arrive once each, in order."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from mlsignals.client import SignalClient, StreamGapError
from serve_app import stream as stream_module
from serve_app.stream import StreamHub
from signals.config import DeliveryConfig, StreamConfig
from signals.publisher import RedisDeliverer
from tests.conftest import REDIS_TEST_URL, free_port
from tests.signals.test_signal_stream_hub import make_signal

pytestmark = pytest.mark.services


@pytest.fixture
def server(redis_prefix: str):
    delivery = DeliveryConfig(prefix=redis_prefix.rstrip(":"))
    app = FastAPI()
    app.include_router(stream_module.router)
    # a short stream lifetime forces reconnects; metrics are Serve's, not needed here
    cfg = StreamConfig(heartbeat_s=0.2, max_duration_s=0.8)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

    def run() -> None:
        async def main() -> None:
            app.state.stream_hub = StreamHub(aioredis.Redis.from_url(REDIS_TEST_URL, decode_responses=True),
                                             delivery, cfg)
            await srv.serve()

        asyncio.run(main())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", delivery
    srv.should_exit = True
    t.join(timeout=10)


class _NoMetrics:
    def __getattr__(self, _name):
        return lambda: self

    def set(self, *_a, **_k) -> None:
        pass

    def inc(self, *_a, **_k) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_serve_metrics(monkeypatch):
    monkeypatch.setattr(stream_module, "metrics", _NoMetrics())


def test_client_resumes_across_server_ended_streams_without_loss_or_repeats(server):
    url, delivery = server
    d = RedisDeliverer(redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True), delivery)
    first = make_signal("BTCUSDT", 0)
    start_id = d.deliver(first.id, first.symbol, first.model_dump_json())[1]
    sent = [make_signal(s, m) for m in range(1, 6) for s in ("BTCUSDT", "ETHUSDT")]

    def producer() -> None:  # one minute's signals every 0.5 s: across several reconnects
        for i in range(0, len(sent), 2):
            time.sleep(0.5)
            for sig in sent[i:i + 2]:
                d.deliver(sig.id, sig.symbol, sig.model_dump_json())

    threading.Thread(target=producer, daemon=True).start()
    client = SignalClient(url)
    got = []
    t0 = time.monotonic()
    for sig in client.stream(last_event_id=start_id, retry_s=0.05):
        got.append(sig.id)
        if len(got) == len(sent) or time.monotonic() - t0 > 30:
            break
    assert got == [s.id for s in sent]  # none lost, none twice, in order, across reconnects
    assert time.monotonic() - t0 > 2.0  # it did span several 0.8 s streams


def test_client_raises_on_a_gap(server):
    url, delivery = server
    d = RedisDeliverer(redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True), delivery)
    ids = [d.deliver(s.id, s.symbol, s.model_dump_json())[1]
           for s in (make_signal("BTCUSDT", m) for m in range(5))]
    redis.Redis.from_url(REDIS_TEST_URL).xtrim(delivery.stream_key, maxlen=2, approximate=False)
    with pytest.raises(StreamGapError) as err:
        next(iter(SignalClient(url).stream(last_event_id=ids[0])))
    assert err.value.kind == "gap"


def test_stream_rejects_a_malformed_id(server):
    url, _ = server
    res = httpx.get(url + "/signals/stream", headers={"Last-Event-ID": "abc"}, timeout=5)
    assert res.status_code == 400
