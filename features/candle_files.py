"""Candle files -> validated frames: the one loader of the CLI, replay, evaluation and backtest.

A file's symbol is the leading part of its name (``ETHUSDT_1m.csv.gz``); cross-asset features
need BTC over the same minutes, so callers that compute features cut the frames to the minutes
all of them share (``common_minutes``) and check BTC is among them (``require_btc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from common.errors import MissingCrossAssetError, MLSignalsError
from features.candles import read_candles_csv, symbol_from_path, validate_candles


def load_candle_files(
    paths: Sequence[Path], symbol: str | None = None, timeframe_minutes: int | None = 1
) -> dict[str, pd.DataFrame]:
    """Read and validate candle files. A single file given with ``symbol`` may have any name;
    ``timeframe_minutes`` None validates each file on its own step (1- or 15-minute files).
    Raises MLSignalsError on bad input (naming symbol, time and rule)."""
    out: dict[str, pd.DataFrame] = {}
    for p in paths:
        sym = symbol.upper() if (symbol and len(paths) == 1) else symbol_from_path(p)
        if sym in out:
            raise MLSignalsError(f"two candle files for {sym}; pass one file per symbol")
        raw = read_candles_csv(p)
        if timeframe_minutes is None:
            from features.calculator import infer_bar_minutes  # indicator libraries load slowly: lazily

            out[sym] = validate_candles(raw, sym, infer_bar_minutes(pd.DatetimeIndex(raw.index)))
        else:
            out[sym] = validate_candles(raw, sym, timeframe_minutes)
    return out


def common_minutes(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every frame cut to the span all of them cover (MLSignalsError when they share none)."""
    if not frames:
        return {}
    start = max(f.index[0] for f in frames.values())
    stop = min(f.index[-1] for f in frames.values())
    if start >= stop:
        raise MLSignalsError("the candle files share no common minutes")
    return {s: f.loc[start:stop] for s, f in frames.items()}


def require_btc(frames: dict[str, pd.DataFrame], where: str = "--candles") -> None:
    """MissingCrossAssetError when any frame is given but none of them is BTC's."""
    from features.calculator import BTC_SYMBOL, find_btc  # indicator libraries load slowly: lazily

    if frames and find_btc(list(frames)) is None:
        raise MissingCrossAssetError(
            f"cross-asset features need BTC candles over the same minutes; add BTC's file to {where} "
            f"(e.g. {BTC_SYMBOL}_1m.csv.gz)"
        )


def load_candle_dir(directory: Path) -> dict[str, pd.DataFrame]:
    """Every ``SYMBOL_*.csv[.gz]`` in a directory, validated, cut to the minutes all share."""
    files = sorted(p for p in Path(directory).glob("*.csv*") if p.is_file())
    if not files:
        raise MLSignalsError(f"no candle files (*.csv, *.csv.gz) in {directory}")
    return common_minutes(load_candle_files(files))
