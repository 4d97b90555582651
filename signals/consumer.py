"""The reference trading-engine consumer: reads the signal stream through a consumer group.

Entries are acknowledged after the caller has handled them (``ack``), so a consumer that dies
mid-way gets its unacknowledged entries again (``read`` first replays this consumer's pending
entries). Consumers must treat a repeated ``Signal.id`` as already handled.
"""

from __future__ import annotations

import redis

from signals.config import DeliveryConfig
from signals.schema import Signal


class SignalConsumer:
    def __init__(self, client: redis.Redis, config: DeliveryConfig, group: str, consumer: str) -> None:
        self.client, self.config, self.group, self.consumer = client, config, group, consumer
        self._replay_pending = True

    def ensure_group(self) -> None:
        """Create the group at the start of the stream (idempotent)."""
        try:
            self.client.xgroup_create(self.config.stream_key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int = 100, block_ms: int = 5000) -> list[tuple[str, Signal]]:
        """Up to ``count`` (stream entry id, Signal) pairs; first this consumer's unacknowledged
        ones, then new ones (blocking up to ``block_ms``)."""
        self.ensure_group()
        if self._replay_pending:
            got = self._read("0", count, None)
            if got:
                return got
            self._replay_pending = False
        return self._read(">", count, block_ms)

    def _read(self, start: str, count: int, block_ms: int | None) -> list[tuple[str, Signal]]:
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.config.stream_key: start}, count=count, block=block_ms
        )
        out, gone = [], []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                if fields and "signal" in fields:
                    out.append((entry_id, Signal.model_validate_json(fields["signal"])))
                else:  # trimmed away by MAXLEN while pending: nothing left to handle
                    gone.append(entry_id)
        self.ack(gone)
        return out

    def ack(self, entry_ids: list[str]) -> int:
        return int(self.client.xack(self.config.stream_key, self.group, *entry_ids)) if entry_ids else 0
