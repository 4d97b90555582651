"""`mlsignals signals notify` as a real process against local HTTP servers that fail the first
attempts: every LONG/SHORT signal is accepted exactly once by id, in stream order, signed; a
permanent refusal stops the notifier with the signal pending and the next run delivers it;
Telegram through its sendMessage API; secrets in no output."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from mlsignals.notify import Backoff, sign, verify_signature
from signals.config import DeliveryConfig
from signals.publisher import RedisDeliverer
from signals.schema import Direction, Signal, signal_id
from tests.conftest import REDIS_TEST_URL

pytestmark = pytest.mark.services
SECRET = "whsec-" + "9f" * 16
T0 = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


def make_signal(symbol: str, minute: int, direction: Direction) -> Signal:
    bar = T0 + timedelta(minutes=minute)
    levels = {Direction.LONG: (99.0, 102.0), Direction.SHORT: (101.0, 98.0), Direction.NEUTRAL: (None, None)}
    sl, tp = levels[direction]
    return Signal(id=signal_id(symbol, bar, "m1"), symbol=symbol, direction=direction, confidence=0.6,
                  strength=0.5, entry=100.0, stop_loss=sl, take_profit=tp, horizon="1h", bar_time=bar,
                  created_at=bar, expires_at=bar + timedelta(hours=1), model_version="m1",
                  feature_spec_hash="h", reasons=["vote LONG 0.60" if sl else "low confidence 0.41 < 0.45"])


class Receiver:
    """A local HTTP server answering from a plan (status codes, or "drop" to close the socket
    without an answer) and 200 after the plan ends; records every request."""

    def __init__(self, plan: list) -> None:
        self.plan, self.requests, self.accepted = list(plan), [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, dict(self.headers), body))
                step = outer.plan.pop(0) if outer.plan else 200
                if step == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if step == 200:
                    outer.accepted.append((self.path, dict(self.headers), body))
                payload = b'{"ok": true}'
                self.send_response(step)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def stream(redis_prefix: str):
    delivery = DeliveryConfig(prefix=redis_prefix.rstrip(":"))
    d = RedisDeliverer(redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True), delivery)
    signals = [make_signal("BTCUSDT", 0, Direction.LONG), make_signal("ETHUSDT", 0, Direction.NEUTRAL),
               make_signal("ETHUSDT", 1, Direction.SHORT), make_signal("SOLUSDT", 1, Direction.LONG),
               make_signal("BTCUSDT", 2, Direction.SHORT)]
    for s in signals:
        d.deliver(s.id, s.symbol, s.model_dump_json())
    return delivery, signals


def notify(delivery: DeliveryConfig, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "mlsignals"), "signals", "notify", "--redis-url", REDIS_TEST_URL,
           "--prefix", delivery.prefix, "--exit-when-idle", "--block-ms", "300", "--retry-base-s", "0.05",
           "--retry-cap-s", "0.2", "--timeout-s", "5", "--json", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLSIGNALS_WEBHOOK_SECRET": SECRET, **(env or {})})


def pending(delivery: DeliveryConfig, group: str = "notify") -> int:
    r = redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    return int(r.xpending(delivery.stream_key, group)["pending"])


def test_webhook_gets_every_signal_once_despite_failing_attempts(stream):
    delivery, signals = stream
    hook = Receiver([500, "drop", 503, 200, 429])  # 3 failures before the first, 1 before the third
    try:
        res = notify(delivery, "--webhook", hook.url + "/hook?token=path-secret")
    finally:
        hook.close()
    assert res.returncode == 0, res.stderr
    wanted = [s.id for s in signals if s.direction is not Direction.NEUTRAL]
    got = [json.loads(body)["id"] for _, _, body in hook.accepted]
    assert got == wanted  # every one, once, in stream order; the NEUTRAL not posted
    assert len(hook.requests) == len(wanted) + 4  # the failed attempts were retried
    assert [json.loads(line)["sent"] for line in res.stdout.splitlines()] == wanted
    for _, headers, body in hook.requests:
        assert headers["X-MLSignals-Id"] == json.loads(body)["id"]
        assert verify_signature(SECRET.encode(), headers["X-MLSignals-Timestamp"], body,
                                headers["X-MLSignals-Signature"])
        assert not verify_signature(b"other", headers["X-MLSignals-Timestamp"], body, headers["X-MLSignals-Signature"])
    assert json.loads(hook.accepted[0][2])["signal"]["stop_loss"] == 99.0
    assert pending(delivery) == 0  # acknowledged only after delivery, all of them
    assert SECRET not in res.stdout + res.stderr and "path-secret" not in res.stdout + res.stderr


def test_a_refused_signal_stays_pending_and_the_next_run_delivers_it(stream):
    delivery, signals = stream
    wanted = [s.id for s in signals if s.direction is not Direction.NEUTRAL]
    hook = Receiver([200, 400])  # the receiver rejects the second signal (a bug on its side)
    try:
        first = notify(delivery, "--webhook", hook.url)
        assert first.returncode == 2 and "HTTP 400" in first.stderr and "pending" in first.stderr
        assert pending(delivery) >= 1
        second = notify(delivery, "--webhook", hook.url)  # the receiver was fixed
    finally:
        hook.close()
    assert second.returncode == 0, second.stderr
    accepted = [json.loads(body)["id"] for _, _, body in hook.accepted]
    assert accepted == wanted and len(set(accepted)) == len(wanted)
    assert pending(delivery) == 0


def test_telegram_with_token_and_chat_from_env(stream):
    delivery, signals = stream
    token = "123456:" + "AbC" * 10
    tg = Receiver([502])
    try:
        res = notify(delivery, "--telegram", "--include-neutral",
                     env={"MLSIGNALS_TELEGRAM_TOKEN": token, "MLSIGNALS_TELEGRAM_CHAT_ID": "-1001",
                          "MLSIGNALS_TELEGRAM_API": tg.url})
    finally:
        tg.close()
    assert res.returncode == 0, res.stderr
    assert len(tg.accepted) == len(signals) and len(tg.requests) == len(signals) + 1
    assert {path for path, _, _ in tg.requests} == {f"/bot{token}/sendMessage"}
    bodies = [json.loads(b) for _, _, b in tg.accepted]
    assert {b["chat_id"] for b in bodies} == {"-1001"}
    assert "ETHUSDT NEUTRAL" in bodies[1]["text"] and "low confidence" in bodies[1]["text"]
    assert bodies[0]["text"].startswith("BTCUSDT LONG 1h") and signals[0].id in bodies[0]["text"]
    assert token not in res.stdout + res.stderr


def test_missing_secret_or_sink_is_a_one_line_error(stream):
    delivery, _ = stream
    res = notify(delivery, "--webhook", "http://127.0.0.1:9/x", env={"MLSIGNALS_WEBHOOK_SECRET": ""})
    assert res.returncode == 2 and "MLSIGNALS_WEBHOOK_SECRET" in res.stderr
    assert notify(delivery).returncode == 2


def test_backoff_is_capped_with_full_jitter_and_signatures_expire():
    b = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(1))
    delays = [b.delay(n) for n in range(1, 60)]
    assert max(delays) <= 4.0 and all(d >= 0 for d in delays) and max(delays[5:]) > 2.0
    assert all(b.delay(1) <= 0.5 for _ in range(100))
    body, ts = b'{"id":"x"}', str(int(time.time()) - 600)
    assert not verify_signature(b"s", ts, body, sign(b"s", ts, body))  # too old: a replay
