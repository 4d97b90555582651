"""Helpers every subcommand shares: candle files, JSON output, one-line failures."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from features.candles import read_candles_csv, symbol_from_path, validate_candles
from mlsignals.errors import MissingCrossAssetError, MLSignalsError
from mlsignals.jsonsafe import json_safe


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit with a one-line reason on stderr (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _default(o: Any) -> Any:
    if isinstance(o, (datetime, date, pd.Timestamp)):
        return o.isoformat()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def emit_json(obj: Any) -> None:
    print(json.dumps(json_safe(json.loads(json.dumps(obj, default=_default))), indent=2))


def load_candle_files(
    paths: Sequence[Path], symbol: str | None = None, timeframe_minutes: int = 1
) -> dict[str, pd.DataFrame]:
    """Read and validate candle files. A file's symbol is the leading part of its name; a
    single file given with ``symbol`` may have any name. Raises MLSignalsError on bad input."""
    out: dict[str, pd.DataFrame] = {}
    for p in paths:
        sym = symbol.upper() if (symbol and len(paths) == 1) else symbol_from_path(p)
        if sym in out:
            raise MLSignalsError(f"two candle files for {sym}; pass one file per symbol")
        out[sym] = validate_candles(read_candles_csv(p), sym, timeframe_minutes)
    return out


def parse_time(text: str | None) -> pd.Timestamp | None:
    if text is None:
        return None
    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise MLSignalsError(f"--at {text!r}: not a time; use ISO-8601, e.g. 2025-06-01T12:14Z") from None
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).floor("min")


def candle_source(candle_files: list[Path] | None, symbol: str):
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
