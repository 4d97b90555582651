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
    """Print every feature of SYMBOL's bar ending at --at (names in spec order) and the spec hash.
    Candles go through the service's feature stage (validation, gap filling) before the features."""
    from features.calculator import RealTimeIndicatorCalculator
    from mlsignals.factories import gap_policy
    from mlsignals.pipeline import FeatureStage
    from mlsignals.settings import load_settings

    symbol = symbol.upper()
    source = candle_source(candles, symbol)
    calc = RealTimeIndicatorCalculator(bar_minutes=bar_minutes, n_rows=1)
    end = parse_time(at)
    if end is None:  # the latest candle: explicit, so that old files are not refused as stale
        latest = source.get_candles(symbol, 1)
        end = latest.index[-1] if len(latest) else None
    if end is None:
        raise MLSignalsError(f"{symbol}: no candles")
    frames, errors = FeatureStage(source, calc, gap_policy(load_settings())).load_candles([symbol], end, None)
    if symbol in errors:
        raise MLSignalsError(errors[symbol])
    anchor = frames[symbol].index[-1]
    if anchor != end:
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
