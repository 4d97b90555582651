"""Notifications: a consumer-group reader that posts signals to a webhook and/or Telegram.

At least once: a stream entry is acknowledged only after every sink accepted it; a transient
failure (network, timeout, 408/425/429, 5xx) is retried with capped exponential backoff and full
jitter, for as long as it takes, in stream order; a permanent one (another 4xx) stops the
notifier with the entry still pending, so a restart after the fix delivers it. A restart may
repeat an entry whose ack was lost: receivers de-duplicate by the signal id (body ``id`` and
header ``X-MLSignals-Id``).

Webhook request: ``POST`` JSON ``{"type": "signal", "id", "stream_id", "signal": {...}}`` with
``X-MLSignals-Timestamp: <unix seconds>`` and ``X-MLSignals-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``"<timestamp>.<raw body>"`` under the secret from ``MLSIGNALS_WEBHOOK_SECRET``
(see ``verify_signature``). Telegram: ``sendMessage`` with the bot token and chat id from
``MLSIGNALS_TELEGRAM_TOKEN`` / ``MLSIGNALS_TELEGRAM_CHAT_ID``. Secrets and URLs that may carry
them are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from signals.consumer import SignalConsumer
from signals.schema import Direction, Signal

log = logging.getLogger(__name__)
TELEGRAM_API = "https://api.telegram.org"
_TRANSIENT = {408, 425, 429}


class PermanentDeliveryError(RuntimeError):
    """The receiver refused the request in a way a retry cannot fix (e.g. 400, 401, 404)."""


class TransientDeliveryError(RuntimeError):
    pass


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str, max_age_s: float = 300,
                     now: float | None = None) -> bool:
    """What a receiver does: constant-time compare, and refuse old timestamps (replays)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def safe_host(url: str) -> str:
    """Only the scheme and host of a URL, for logs (paths and queries may hold tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def _raise_for(res: httpx.Response, what: str) -> None:
    if res.status_code < 300:
        return
    if res.status_code in _TRANSIENT or res.status_code >= 500:
        raise TransientDeliveryError(f"{what}: HTTP {res.status_code}")
    raise PermanentDeliveryError(f"{what}: HTTP {res.status_code}")


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, secret: bytes, http: httpx.Client) -> None:
        self.url, self._secret, self._http = url, secret, http

    def send(self, entry_id: str, sig: Signal) -> None:
        body = json.dumps({"type": "signal", "id": sig.id, "stream_id": entry_id,
                           "signal": sig.model_dump(mode="json")}, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-MLSignals-Id": sig.id, "X-MLSignals-Timestamp": ts,
                   "X-MLSignals-Signature": sign(self._secret, ts, body)}
        try:
            res = self._http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientDeliveryError(f"webhook {safe_host(self.url)}: {type(exc).__name__}") from None
        _raise_for(res, f"webhook {safe_host(self.url)}")


def telegram_text(sig: Signal) -> str:
    if sig.direction is Direction.NEUTRAL:
        return f"{sig.symbol} NEUTRAL ({sig.horizon})\n" + "\n".join(f"- {r}" for r in sig.reasons[:5])
    return (f"{sig.symbol} {sig.direction.value} {sig.horizon} · conf {sig.confidence:.0%}\n"
            f"entry {sig.entry:.6g} · SL {sig.stop_loss:.6g} · TP {sig.take_profit:.6g}\n"
            f"expires {sig.expires_at:%Y-%m-%d %H:%M} UTC · {sig.model_version}\nid {sig.id}")


class TelegramSink:
    name = "telegram"

    def __init__(self, token: str, chat_id: str, http: httpx.Client, api: str = TELEGRAM_API) -> None:
        self._url = f"{api.rstrip('/')}/bot{token}/sendMessage"  # the token is in the path: never log it
        self.chat_id, self._http = chat_id, http

    def send(self, entry_id: str, sig: Signal) -> None:
        try:
            res = self._http.post(self._url, json={"chat_id": self.chat_id, "text": telegram_text(sig),
                                                   "disable_web_page_preview": True})
        except httpx.HTTPError as exc:
            raise TransientDeliveryError(f"telegram: {type(exc).__name__}") from None
        _raise_for(res, "telegram")


@dataclass
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**(failures-1)))."""
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** max(0, min(failures - 1, 30))))


class Notifier:
    def __init__(self, consumer: SignalConsumer, sinks: list, include_neutral: bool = False,
                 backoff: Backoff | None = None, sleep: Callable[[float], None] = time.sleep,
                 on_sent: Callable[[str, Signal], None] | None = None) -> None:
        if not sinks:
            raise ValueError("at least one sink (webhook or Telegram)")
        self.consumer, self.sinks, self.include_neutral = consumer, sinks, include_neutral
        self.backoff = backoff or Backoff()
        self._sleep, self._on_sent = sleep, on_sent
        self.sent = self.skipped = self.retries = 0

    def wanted(self, sig: Signal) -> bool:
        return self.include_neutral or sig.direction is not Direction.NEUTRAL

    def deliver(self, entry_id: str, sig: Signal, stop: threading.Event | None = None) -> bool:
        """Every sink once, retrying transient failures; False only when stopped first."""
        pending = list(self.sinks)
        failures = 0
        while pending:
            sink = pending[0]
            try:
                sink.send(entry_id, sig)
            except TransientDeliveryError as exc:
                failures += 1
                self.retries += 1
                delay = self.backoff.delay(failures)
                log.warning("notify %s: %s; retry %d in %.2fs", sig.id, exc, failures, delay)
                if stop is not None and stop.is_set():
                    return False
                self._sleep(delay)
                continue
            pending.pop(0)  # a sink that took it is not asked again for this entry
            failures = 0
        return True

    def run(self, count: int = 0, block_ms: int = 5000, exit_when_idle: bool = False,
            stop: threading.Event | None = None) -> int:
        """Read, deliver, acknowledge; returns the number of signals sent. PermanentDeliveryError
        propagates with the entry left pending."""
        handled = 0
        while (count <= 0 or handled < count) and not (stop is not None and stop.is_set()):
            batch = self.consumer.read(count=100 if count <= 0 else min(100, count - handled), block_ms=block_ms)
            if not batch:
                if exit_when_idle:
                    break
                continue
            for entry_id, sig in batch:
                if self.wanted(sig):
                    if not self.deliver(entry_id, sig, stop):
                        return self.sent
                    self.sent += 1
                    if self._on_sent:
                        self._on_sent(entry_id, sig)
                else:
                    self.skipped += 1
                self.consumer.ack([entry_id])  # only now: at least once
                handled += 1
        return self.sent
