"""`mlsignals predict`: candles -> features -> model -> signal in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.errors import MLSignalsError
from mlsignals.commands.common import candle_source, emit_json, parse_time


def predict_cmd(
    symbol: Annotated[str, typer.Option(help="symbol, e.g. BTCUSDT")],
    candles: Annotated[
        list[Path] | None, typer.Option("--candles", help="1-minute candle files (BTC's too for non-BTC)")
    ] = None,
    at: Annotated[str | None, typer.Option(help="open time of the last 1-minute candle to use (default: latest)")] = None,
    model: Annotated[Path | None, typer.Option(help="model bundle directory (default: the configured one)")] = None,
    publish: Annotated[bool, typer.Option(help="also publish the signal onto Redis (through the outbox)")] = False,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (pays off only for many calls)")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the signal as JSON")] = False,
) -> None:
    """Print the signal for SYMBOL (LONG / SHORT / NEUTRAL with its reasons)."""
    from mlsignals.factories import in_process_pipeline
    from mlsignals.settings import load_settings

    symbol = symbol.upper()
    settings = load_settings()
    source = candle_source(candles, symbol)
    end = parse_time(at)
    if candles and end is None:
        end = source.frame(symbol).index[-1]  # files: their last candle, not the wall clock
    pipeline = in_process_pipeline(settings, source, model, publish=publish, compile=compile)
    fr, signal = pipeline.run_detailed([symbol], end=end, publish=False)[0]
    if fr.error:  # bad or too short input is the user's to fix: say so, publish nothing, exit non-zero
        raise MLSignalsError(fr.error + _hint(fr.error, source, symbol, end))
    if publish and pipeline.sink.publisher is not None:
        pipeline.sink.publisher.publish(signal)
        pipeline.sink.publisher.relay.relay_once()
    if json_out:
        emit_json(signal.model_dump(mode="json"))
        return
    s = signal
    levels = f" entry={s.entry} SL={s.stop_loss} TP={s.take_profit}" if s.stop_loss else ""
    typer.echo(f"{s.symbol} {s.direction.value} conf={s.confidence:.3f} horizon={s.horizon}{levels}")
    for r in s.reasons:
        typer.echo(f"  - {r}")


def _hint(error: str, source, symbol: str, end) -> str:
    """What to do about a data error: a past minute asked with --at, another store label."""
    if "stale data" in error and end is None and "last candle " in error:
        return f"; for a past minute pass --at (e.g. --at {error.rsplit('last candle ', 1)[1]})"
    from features.sources.sql_store import SqlCandleStore

    if "no candles" in error and isinstance(source, SqlCandleStore):
        labels = [ex for ex in source.exchanges() if ex != source.exchange
                  and symbol in SqlCandleStore(source.engine, ex, source.timeframe).symbols()]
        if labels:
            return (f"; the candle store has {symbol} under exchange label {', '.join(labels)}, the service "
                    f"reads {source.exchange!r}: set MLSIGNALS_DATA__EXCHANGE={labels[0]}")
    return ""


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
