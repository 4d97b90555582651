"""GET /signals/stream and the board's JSON over real HTTP through Ray Serve, with the API key
configured: a client disconnected across two real ticks resumes and gets exactly the signals
it missed (0 lost, 0 duplicated); symbol filter; stream limit; ``mlsignals.client``."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pandas as pd
import pytest
import redis
import yaml

from mlsignals.client import SignalClient, StreamEvent
from tests.bundles import make_test_bundle
from tests.conftest import CANDLE_DIR, REDIS_TEST_URL, free_port

pytestmark = [pytest.mark.ray, pytest.mark.services, pytest.mark.slow]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
APP = "mlsignals-stream-test"
KEY = f"k-{uuid.uuid4().hex}"
MAX_CLIENTS = 3


@pytest.fixture(scope="module")
def served(ray_session, shipped_candles, tmp_path_factory):
    from ray import serve

    from serve_app.app import build_app

    tmp = tmp_path_factory.mktemp("stream")
    bundle = make_test_bundle(tmp / "tiny", shipped_candles, seed=0)
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    cfg = {
        "symbols": SYMBOLS,
        "data": {"source": "replay", "replay_dir": str(CANDLE_DIR / "bybit_linear_2025-06"), "replay_history": 2000},
        "redis_url": REDIS_TEST_URL, "database_url": f"sqlite:///{tmp / 'db.sqlite'}",
        "model": {"path": str(bundle), "compile": False}, "delivery": {"prefix": prefix},
        "scheduler": {"enabled": False}, "api_key": KEY,
        "stream": {"heartbeat_s": 1.0, "max_clients": MAX_CLIENTS},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    serve.shutdown()  # another module's Serve instance may hold other HTTP options
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"config": str(tmp / "config.yaml")}), name=APP, route_prefix="/")
    yield {"url": f"http://127.0.0.1:{port}", "stream_key": f"{prefix}:signals",
           "scheduler": serve.get_deployment_handle("SignalScheduler", APP)}
    serve.delete(APP)
    r = redis.Redis.from_url(REDIS_TEST_URL)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)


def tick(served, minute: pd.Timestamp) -> None:
    report = served["scheduler"].tick.remote(minute).result(timeout_s=180)
    assert set(report.signals) == set(SYMBOLS), report


def wait_stream_len(served, n: int) -> list:
    r = redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    for _ in range(150):  # the outbox relay delivers asynchronously
        entries = r.xrange(served["stream_key"])
        if len(entries) >= n:
            return entries
        time.sleep(0.2)
    raise AssertionError(f"stream has {len(entries)} entries, expected {n}")


class Reader(threading.Thread):
    """One SSE connection read in the background until ``stop`` (then the socket is closed)."""

    def __init__(self, client: SignalClient, **kw) -> None:
        super().__init__(daemon=True)
        self.client, self.kw = client, kw
        self.events: list[StreamEvent] = []
        self.stop = threading.Event()

    def run(self) -> None:
        for ev in self.client.events(**self.kw):
            self.events.append(ev)
            if self.stop.is_set():
                break

    def signals(self) -> list[StreamEvent]:
        return [e for e in self.events if e.event == "signal"]

    def wait(self, cond, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cond(), self.events[-5:]


def test_the_key_is_needed_for_data_not_for_the_page(served):
    url = served["url"]
    assert httpx.get(url + "/signals/stream", timeout=10).status_code == 401
    assert httpx.get(url + "/board/api/overview", timeout=10).status_code == 401
    page = httpx.get(url + "/board", timeout=10)
    assert page.status_code == 200 and "board.js" in page.text
    assert httpx.get(url + "/board/static/board.js", timeout=10).status_code == 200
    assert httpx.get(url + "/board/static/..%2Fboard.py", timeout=10).status_code in (401, 404)
    bad = httpx.get(url + "/signals/stream", headers={"X-API-Key": KEY, "Last-Event-ID": "x"}, timeout=10)
    assert bad.status_code == 400


def test_disconnected_across_two_ticks_resumes_with_exactly_the_missed_signals(served):
    now = pd.Timestamp.now(tz="UTC").floor("min")
    m0, m1, m2 = (now - pd.Timedelta(minutes=k) for k in (12, 11, 10))
    client = SignalClient(served["url"], api_key=KEY)
    first = Reader(client)
    first.start()
    first.wait(lambda: any(e.event == "heartbeat" for e in first.events))  # connected, at the head
    tick(served, m0)
    first.wait(lambda: len(first.signals()) == len(SYMBOLS))
    first.stop.set()
    first.join(timeout=10)
    assert not first.is_alive()
    seen = first.signals()
    last_id = seen[-1].id

    tick(served, m1)  # two ticks while disconnected
    tick(served, m2)
    entries = wait_stream_len(served, 3 * len(SYMBOLS))
    assert [e.id for e in seen] == [eid for eid, _ in entries[: len(SYMBOLS)]]

    got = []
    for sig in client.stream(last_event_id=last_id):
        got.append(sig)
        if len(got) == 2 * len(SYMBOLS):
            break
    missed = entries[len(SYMBOLS):]
    assert [s.id for s in got] == [f["id"] for _, f in missed]  # 0 lost, 0 duplicated, in order
    assert {(s.symbol, s.bar_time) for s in got} == {(sym, m.to_pydatetime()) for sym in SYMBOLS for m in (m1, m2)}
    assert client.last_event_id == missed[-1][0]
    # ... and nothing more after them: the next event on a resumed connection is a heartbeat
    after = next(e for e in client.events(last_event_id=client.last_event_id))
    assert after.event == "heartbeat"

    # the client's other calls, on the same service
    latest = client.latest("ETHUSDT")
    assert latest is not None and latest.bar_time == m2.to_pydatetime()
    assert client.predict("SOLUSDT").symbol == "SOLUSDT"

    only_eth = Reader(client, symbols=["ETHUSDT"], last_event_id="0-0")
    only_eth.start()
    only_eth.wait(lambda: any(e.event == "heartbeat" for e in only_eth.events))
    only_eth.stop.set()
    only_eth.join(timeout=10)
    assert [e.json()["symbol"] for e in only_eth.signals()] == ["ETHUSDT"] * 3

    # the board's data: the latest of every symbol, candles, the logged signals of the last hours
    h = {"X-API-Key": KEY}
    ov = httpx.get(served["url"] + "/board/api/overview", headers=h, timeout=10).json()
    assert {s: v["id"] for s, v in ov["latest"].items()} == {
        s: next(f["id"] for _, f in reversed(entries) if f["symbol"] == s) for s in SYMBOLS}
    candles = httpx.get(served["url"] + "/board/api/candles/BTCUSDT?minutes=60", headers=h, timeout=30).json()
    assert len(candles["candles"]) == 60 and len(candles["candles"][0]) == 6
    logged = httpx.get(served["url"] + "/board/api/signals/SOLUSDT?hours=1", headers=h, timeout=30)
    assert logged.status_code == 200, logged.text
    logged = logged.json()
    assert {pd.Timestamp(s["bar_time"]) for s in logged["signals"]} >= {m0, m1, m2}
    card = httpx.get(served["url"] + "/board/api/scorecard", headers=h, timeout=30).json()
    assert set(card["windows"]) == {"day", "week"}
    assert httpx.get(served["url"] + "/board/api/candles/XRPUSDT", headers=h, timeout=10).status_code == 404


def test_streams_beyond_the_limit_are_refused(served):
    async def status_of_one_more(c: httpx.AsyncClient) -> int:
        async with c.stream("GET", "/signals/stream") as res:
            return res.status_code

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=served["url"], headers={"X-API-Key": KEY}, timeout=30) as c:
            for _ in range(100):  # streams of the other tests closed
                if (await c.get("/board/api/overview")).json()["stream"]["open"] == 0:
                    break
                await asyncio.sleep(0.1)
            opened = []
            for _ in range(MAX_CLIENTS):
                cm = c.stream("GET", "/signals/stream")
                res = await cm.__aenter__()
                chunks = res.aiter_raw()  # kept: dropping it would close the connection
                await chunks.__anext__()  # the stream is open on the server
                opened.append((cm, res, chunks))
            extra = await asyncio.wait_for(status_of_one_more(c), 20)
            for cm, _, chunks in opened:
                await chunks.aclose()
                await cm.__aexit__(None, None, None)
            await asyncio.sleep(1.5)  # the server notices the closed streams
            again = await asyncio.wait_for(status_of_one_more(c), 20)
            return [r.status_code for _, r, _ in opened] + [extra, again]

    assert asyncio.run(run()) == [200] * MAX_CLIENTS + [503, 200]


def test_stream_survives_in_the_openapi_docs(served):
    spec = httpx.get(served["url"] + "/openapi.json", timeout=10).json()
    assert "/signals/stream" in spec["paths"] and "/board/api/scorecard" in spec["paths"]


def test_service_metrics_are_exported_under_the_dashboards_names(served):
    """What Prometheus really scrapes from this Ray node: the service's metrics under the names
    deploy/grafana/mlsignals.json queries (ray_ prefix; histogram buckets)."""
    import re

    import ray

    from tests.deploy.test_deploy_files import exported_series

    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = {"ray_mlsignals_ticks_total", "ray_mlsignals_signals_total", "ray_mlsignals_stage_latency_ms_bucket",
              "ray_mlsignals_outbox_pending", "ray_mlsignals_stream_clients"}
    live: set[str] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not wanted <= live:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        live = set(re.findall(r"^(ray_mlsignals_\w+?)(?:\{| )", text, re.M))
        time.sleep(2)
    assert wanted <= live, sorted(live)
    assert live <= exported_series(), live - exported_series()
