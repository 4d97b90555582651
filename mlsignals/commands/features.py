"""`mlsignals features`: the feature row of one symbol at one minute, with the spec hash."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.errors import MLSignalsError
from mlsignals.commands.common import candle_source, emit_json, parse_time


def features_cmd(
    symbol: Annotated[str, typer.Option(help="symbol, e.g. ETHUSDT")],
    candles: Annotated[
        list[Path] | None, typer.Option("--candles", help="1-minute candle files (BTC's too for non-BTC)")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="open time of the last 1-minute candle to use (default: latest)")
    ] = None,
    bar_minutes: Annotated[int, typer.Option(help="bar size the features are computed on")] = 15,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON (the only output format)")] = True,
) -> None:
    """Print every feature of SYMBOL's bar ending at --at (names in spec order) and the spec hash."""
    from features.calculator import BTC_SYMBOL, RealTimeIndicatorCalculator, find_btc, is_btc

    symbol = symbol.upper()
    source = candle_source(candles, symbol)
    calc = RealTimeIndicatorCalculator(bar_minutes=bar_minutes, n_rows=1)
    end = parse_time(at)
    frames = {symbol: source.get_candles(symbol, calc.required_minutes, end)}
    if not is_btc(symbol):
        btc = find_btc(source.symbols()) or BTC_SYMBOL
        frames[btc] = source.get_candles(btc, calc.required_minutes, end)
    if frames[symbol].empty:
        raise MLSignalsError(f"{symbol}: no candles at or before {end or 'now'}")
    anchor = frames[symbol].index[-1]
    if end is not None and anchor != end:
        raise MLSignalsError(f"{symbol}: no candle at {end.isoformat()} (latest before it: {anchor.isoformat()})")
    batch = calc.compute(frames, anchor=anchor)
    if symbol in batch.errors:
        raise MLSignalsError(batch.errors[symbol])
    i = batch.symbols.index(symbol)
    emit_json(
        {
            "symbol": symbol,
            "time": anchor.isoformat(),
            "bar_open": batch.bar_times[i].isoformat(),
            "bar_minutes": bar_minutes,
            "spec_hash": batch.spec_hash,
            "features": dict(zip(batch.feature_names, batch.values[i, -1].astype(float).tolist(), strict=True)),
        }
    )


def register(app: typer.Typer) -> None:
    app.command("features")(features_cmd)
