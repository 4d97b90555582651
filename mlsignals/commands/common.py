"""Helpers every subcommand shares: candle sources, JSON output, one-line failures."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from common.errors import MLSignalsError
from common.jsonsafe import json_safe
from features.candle_files import load_candle_files, require_btc


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


def parse_time(text: str | None, option: str = "--at") -> pd.Timestamp | None:
    if text is None:
        return None
    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise MLSignalsError(f"{option} {text!r}: not a time; use ISO-8601, e.g. 2025-06-01T12:14Z") from None
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).floor("min")


def candle_source(candle_files: list[Path] | None, symbol: str):
    """A FrameSource over the given files, else the configured market-data source."""
    if candle_files:
        from features.sources.base import FrameSource

        frames = load_candle_files(candle_files, symbol if len(candle_files) == 1 else None)
        if symbol not in frames:
            raise MLSignalsError(f"no candle file for {symbol} among --candles ({', '.join(frames)})")
        require_btc(frames)
        return FrameSource(frames)
    from mlsignals.factories import build_source
    from mlsignals.settings import load_settings

    return build_source(load_settings())
