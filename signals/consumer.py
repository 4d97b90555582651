"""The reference trading-engine consumer: reads the signal stream through a consumer group.

Entries are acknowledged after the caller has handled them (``ack``), so a consumer that dies
mid-way gets its unacknowledged entries again (``read`` first replays this consumer's pending
entries). Consumers must treat a repeated ``Signal.id`` as already handled.
"""

from __future__ import annotations

from collections import OrderedDict

import redis

from signals.config import DeliveryConfig
from signals.schema import Signal


class SignalConsumer:
    def __init__(self, client: redis.Redis, config: DeliveryConfig, group: str, consumer: str) -> None:
        self.client, self.config, self.group, self.consumer = client, config, group, consumer
        self._replay_pending = True
        # ids handed out already: an entry replayed because its ack was lost is skipped (and acked)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_max = 100_000

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
        try:
            self.ensure_group()
            if self._replay_pending:
                got = self._read("0", count, None)
                if got:
                    return got
                self._replay_pending = False
            return self._read(">", count, block_ms)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            # Redis may have recorded the read (entries now pending for us) while the reply was
            # lost with the connection: replay our pending entries before reading new ones.
            self._replay_pending = True
            raise

    def _read(self, start: str, count: int, block_ms: int | None) -> list[tuple[str, Signal]]:
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.config.stream_key: start}, count=count, block=block_ms
        )
        out, gone = [], []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                if fields and "signal" in fields:
                    sig = Signal.model_validate_json(fields["signal"])
                    if sig.id in self._seen:  # handled before; its ack was lost
                        gone.append(entry_id)
                        continue
                    self._seen[sig.id] = None
                    if len(self._seen) > self._seen_max:
                        self._seen.popitem(last=False)
                    out.append((entry_id, sig))
                else:  # trimmed away by MAXLEN while pending: nothing left to handle
                    gone.append(entry_id)
        self.ack(gone)
        return out

    def ack(self, entry_ids: list[str]) -> int:
        return int(self.client.xack(self.config.stream_key, self.group, *entry_ids)) if entry_ids else 0
