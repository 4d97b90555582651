"""Helpers every subcommand shares: candle files, JSON output, one-line failures."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from features.candles import read_candles_csv, symbol_from_path, validate_candles
from mlsignals.errors import MLSignalsError


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


def _clean(o: Any) -> Any:
    """NaN/inf are not JSON: emit null so that every consumer can parse the output."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def emit_json(obj: Any) -> None:
    print(json.dumps(_clean(json.loads(json.dumps(obj, default=_default))), indent=2))


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
