"""`mlsignals features`: the feature row of one symbol at one minute, with the spec hash."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from mlsignals.commands.common import emit_json, load_candle_files
from mlsignals.errors import MissingCrossAssetError, MLSignalsError


def _parse_time(text: str | None) -> pd.Timestamp | None:
    if text is None:
        return None
    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise MLSignalsError(f"--at {text!r}: not a time; use ISO-8601, e.g. 2025-06-01T12:14Z") from None
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).floor("min")


def _source(candle_files: list[Path] | None, symbol: str):
    """A FrameSource over the given files, else the configured market-data source."""
    from features.calculator import find_btc, is_btc

    if candle_files:
        from features.sources.base import FrameSource

        frames = load_candle_files(candle_files, symbol if len(candle_files) == 1 else None)
        if symbol not in frames:
            raise MLSignalsError(f"no candle file for {symbol} among --candles ({', '.join(frames)})")
        if not is_btc(symbol) and find_btc(list(frames)) is None:
            raise MissingCrossAssetError(
                f"{symbol}: cross-asset features need BTC candles; add BTC's file to --candles "
                "(e.g. --candles BTCUSDT_1m.csv.gz)"
            )
        return FrameSource(frames)
    from features.sources import build_source
    from mlsignals.settings import load_settings

    return build_source(load_settings())


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
    from features.calculator import RealTimeIndicatorCalculator, find_btc, is_btc

    symbol = symbol.upper()
    source = _source(candles, symbol)
    calc = RealTimeIndicatorCalculator(bar_minutes=bar_minutes, n_rows=1)
    end = _parse_time(at)
    frames = {symbol: source.get_candles(symbol, calc.required_minutes, end)}
    if not is_btc(symbol):
        btc = find_btc(source.symbols()) or "BTCUSDT"
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
