"""`mlsignals signals notify`: post signals to a webhook and/or Telegram (see mlsignals/notify.py)."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from mlsignals.commands.common import fail

SECRET_ENV = "MLSIGNALS_WEBHOOK_SECRET"
TOKEN_ENV, CHAT_ENV, TELEGRAM_API_ENV = "MLSIGNALS_TELEGRAM_TOKEN", "MLSIGNALS_TELEGRAM_CHAT_ID", "MLSIGNALS_TELEGRAM_API"


def register(group: typer.Typer) -> None:
    @group.command("notify")
    def notify(
        webhook: Annotated[str | None, typer.Option("--webhook", help=f"POST signals here, signed with ${SECRET_ENV}")] = None,
        telegram: Annotated[bool, typer.Option("--telegram", help=f"send to Telegram (${TOKEN_ENV}, ${CHAT_ENV})")] = False,
        include_neutral: Annotated[bool, typer.Option("--include-neutral", help="NEUTRAL signals too")] = False,
        group_name: Annotated[str, typer.Option("--group")] = "notify",
        consumer: Annotated[str, typer.Option("--consumer")] = "notify-1",
        count: Annotated[int, typer.Option("--count", help="stop after N stream entries (0: until Ctrl-C)")] = 0,
        block_ms: Annotated[int, typer.Option("--block-ms")] = 5000,
        exit_when_idle: Annotated[bool, typer.Option("--exit-when-idle", help="stop at the first empty read")] = False,
        timeout_s: Annotated[float, typer.Option("--timeout-s", help="per request")] = 10.0,
        retry_base_s: Annotated[float, typer.Option("--retry-base-s")] = 0.5,
        retry_cap_s: Annotated[float, typer.Option("--retry-cap-s", help="longest wait between retries")] = 30.0,
        redis_url: Annotated[str | None, typer.Option("--redis-url", help="default: settings")] = None,
        prefix: Annotated[str | None, typer.Option("--prefix", help="override delivery.prefix")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON line per signal sent")] = False,
    ) -> None:
        """Post LONG/SHORT signals (and NEUTRAL with --include-neutral) at least once, in order,
        retrying failures with capped backoff; receivers de-duplicate by signal id."""
        import httpx
        import redis

        from mlsignals.commands.signals import _connections, _reader
        from mlsignals.notify import Backoff, Notifier, PermanentDeliveryError, TelegramSink, WebhookSink
        from signals.redis_conn import mask_url

        if not webhook and not telegram:
            fail("nothing to notify: give --webhook URL and/or --telegram")
        if retry_base_s <= 0 or retry_cap_s < retry_base_s:
            fail("--retry-base-s must be > 0 and --retry-cap-s >= --retry-base-s")
        http = httpx.Client(timeout=timeout_s)
        sinks: list = []
        if webhook:
            if not webhook.startswith(("http://", "https://")):
                fail("--webhook must be an http(s) URL")
            secret = os.environ.get(SECRET_ENV)
            if not secret:
                fail(f"--webhook needs the signing secret in ${SECRET_ENV}")
            sinks.append(WebhookSink(webhook, secret.encode(), http))
        if telegram:
            token, chat = os.environ.get(TOKEN_ENV), os.environ.get(CHAT_ENV)
            if not token or not chat:
                fail(f"--telegram needs ${TOKEN_ENV} and ${CHAT_ENV}")
            kw = {"api": os.environ[TELEGRAM_API_ENV]} if os.environ.get(TELEGRAM_API_ENV) else {}
            sinks.append(TelegramSink(token, chat, http, **kw))
        delivery, r_url, _, embedded = _connections(redis_url, None)
        if prefix:
            delivery = delivery.model_copy(update={"prefix": prefix})

        def printed(entry_id: str, sig) -> None:
            out = {"sent": sig.id, "stream_id": entry_id, "symbol": sig.symbol, "direction": sig.direction.value}
            print(json.dumps(out) if as_json else f"sent {sig.symbol} {sig.direction.value} {sig.id}", flush=True)

        notifier = Notifier(_reader(r_url, embedded, delivery, group_name, consumer), sinks, include_neutral,
                            Backoff(retry_base_s, retry_cap_s), on_sent=printed)
        try:
            notifier.run(count=count, block_ms=block_ms, exit_when_idle=exit_when_idle)
        except PermanentDeliveryError as exc:
            fail(f"{exc}; the signal stays pending for the next run")
        except redis.ConnectionError:
            fail(f"redis at {mask_url(r_url)} unreachable")
        finally:
            http.close()
