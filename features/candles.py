"""Candles: the one schema, the one validator, reading CSV files, gaps and resampling.

A candle frame is a DataFrame indexed by a UTC ``DatetimeIndex`` named ``timestamp`` (the
candle's open time, on the timeframe grid) with float64 columns ``open, high, low, close,
volume``. Every source returns frames that passed ``validate_candles``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import CandleValidationError, MLSignalsError

CANDLE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
_SYMBOL_RE = re.compile(r"^([A-Za-z0-9]+)")


def symbol_from_path(path: str | Path) -> str:
    """``BTCUSDT_1m.csv.gz`` -> ``BTCUSDT`` (the leading alphanumeric part, upper-cased)."""
    m = _SYMBOL_RE.match(Path(path).name)
    if not m:
        raise MLSignalsError(f"{path}: cannot tell the symbol from the file name; pass --symbol")
    return m.group(1).upper()


def _parse_timestamps(raw: pd.Series, path: str) -> pd.DatetimeIndex:
    """ISO-8601 (naive means UTC) or epoch milliseconds."""
    if pd.api.types.is_numeric_dtype(raw):
        return pd.DatetimeIndex(pd.to_datetime(raw.astype("int64"), unit="ms", utc=True))
    text = raw.astype(str).str.strip()
    if text.str.fullmatch(r"\d{12,14}").all():
        return pd.DatetimeIndex(pd.to_datetime(text.astype("int64"), unit="ms", utc=True))
    try:
        return pd.DatetimeIndex(pd.to_datetime(text, utc=True, format="ISO8601")).as_unit("ns")
    except (ValueError, TypeError) as exc:
        raise MLSignalsError(f"{path}: timestamp column is neither ISO-8601 nor epoch ms ({exc})") from None


def read_candles_csv(path: str | Path) -> pd.DataFrame:
    """Read ``timestamp,open,high,low,close,volume`` (optionally .gz). Not validated yet."""
    path = str(path)
    try:
        raw = pd.read_csv(path)
    except FileNotFoundError:
        raise MLSignalsError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise MLSignalsError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in ("timestamp", *CANDLE_COLUMNS) if c not in raw.columns]
    if missing:
        raise MLSignalsError(
            f"{path}: missing column(s) {', '.join(missing)}; expected timestamp,open,high,low,close,volume"
        )
    if raw.empty:
        raise MLSignalsError(f"{path}: no rows")
    index = _parse_timestamps(raw["timestamp"], path)
    out = pd.DataFrame(index=index)
    for col in CANDLE_COLUMNS:
        out[col] = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype="float64")
    out.index.name = "timestamp"
    return out


def validate_candles(df: pd.DataFrame, symbol: str, timeframe_minutes: int = 1) -> pd.DataFrame:
    """Check every rule; raise ``CandleValidationError`` naming symbol, time and rule on the
    first (earliest) offending row. Returns the frame with float64 columns."""
    if not isinstance(df.index, pd.DatetimeIndex):
        raise CandleValidationError(symbol, "-", "index is not a DatetimeIndex")
    if df.index.tz is None:
        df = df.tz_localize("UTC")
    elif str(df.index.tz) != "UTC":
        df = df.tz_convert("UTC")
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise CandleValidationError(symbol, "-", f"missing column(s) {', '.join(missing)}")
    df = df.loc[:, list(CANDLE_COLUMNS)].astype("float64")
    df.index = df.index.as_unit("ns")  # pandas 3 infers s/us units; grid checks use ns
    df.index.name = "timestamp"
    if df.empty:
        raise CandleValidationError(symbol, "-", "no candles")

    v = df.to_numpy()
    o, h, lo, c, vol = v.T
    ts = df.index
    ns = ts.asi8
    step = timeframe_minutes * 60 * 10**9
    checks: list[tuple[np.ndarray, str]] = [
        (~np.isfinite(v).all(axis=1), "NaN or infinite value"),
        ((np.nan_to_num(v[:, :4], nan=1.0) <= 0).any(axis=1), "non-positive price"),
        (h < np.maximum(o, c), "high below max(open, close)"),
        (lo > np.minimum(o, c), "low above min(open, close)"),
        (vol < 0, "negative volume"),
        (ns % step != 0, f"timestamp not on the {timeframe_minutes}-minute grid"),
    ]
    diffs = np.diff(ns, prepend=ns[0] - step)
    checks.append((diffs == 0, "duplicate timestamp"))
    checks.append((diffs < 0, "timestamp out of order"))
    first_bad: tuple[int, str] | None = None
    for mask, rule in checks:
        bad = np.flatnonzero(mask)
        if bad.size and (first_bad is None or bad[0] < first_bad[0]):
            first_bad = (int(bad[0]), rule)
    if first_bad is not None:
        i, rule = first_bad
        raise CandleValidationError(symbol, ts[i].isoformat(), rule)
    return df


@dataclass(frozen=True)
class Gap:
    """Missing candles between two present ones: ``start`` is the first missing open time."""

    start: pd.Timestamp
    missing: int

    def to_dict(self) -> dict:
        return {"start": self.start.isoformat(), "missing": self.missing}


def find_gaps(df: pd.DataFrame, timeframe_minutes: int = 1) -> list[Gap]:
    step = pd.Timedelta(minutes=timeframe_minutes)
    if len(df) < 2:
        return []
    d = np.diff(df.index.as_unit("ns").asi8) // step.value
    where = np.flatnonzero(d > 1)
    return [Gap(df.index[i] + step, int(d[i] - 1)) for i in where]


@dataclass(frozen=True)
class GapPolicy:
    """Short gaps (<= max_fill) are filled with flat zero-volume candles at the previous close;
    a symbol whose latest candle is older than ``stale_after`` timeframes is stale."""

    max_fill: int = 5
    stale_after: int = 3


def fill_gaps(df: pd.DataFrame, policy: GapPolicy, timeframe_minutes: int = 1) -> tuple[pd.DataFrame, list[Gap]]:
    """Fill gaps up to ``policy.max_fill`` candles; return the frame and the gaps left open."""
    gaps = find_gaps(df, timeframe_minutes)
    fillable = [g for g in gaps if g.missing <= policy.max_fill]
    if not fillable:
        return df, gaps
    step = pd.Timedelta(minutes=timeframe_minutes)
    new_idx = pd.DatetimeIndex(
        np.concatenate([pd.date_range(g.start, periods=g.missing, freq=step).as_unit("ns").asi8 for g in fillable])
    ).tz_localize("UTC")
    prev_close = df["close"].reindex(new_idx - step, method="ffill")
    filler = pd.DataFrame(index=new_idx)
    for col in ("open", "high", "low", "close"):
        filler[col] = prev_close.to_numpy()
    filler["volume"] = 0.0
    # A run of filled candles takes the close before the gap: forward-fill within the filler.
    out = pd.concat([df, filler]).sort_index()
    out[["open", "high", "low", "close"]] = out[["open", "high", "low", "close"]].ffill()
    out.index.name = "timestamp"
    return out, [g for g in gaps if g.missing > policy.max_fill]


def is_stale(df: pd.DataFrame, now: pd.Timestamp, policy: GapPolicy, timeframe_minutes: int = 1) -> bool:
    """True when the last closed candle is more than ``stale_after`` timeframes old."""
    if df.empty:
        return True
    last_close_time = df.index[-1] + pd.Timedelta(minutes=timeframe_minutes)
    return (now - last_close_time) > pd.Timedelta(minutes=timeframe_minutes * policy.stale_after)


def resample(df: pd.DataFrame, minutes: int, anchor: pd.Timestamp | None = None) -> pd.DataFrame:
    """Aggregate 1-minute candles into ``minutes``-minute bars labelled by their open time.

    With ``anchor`` (the open time of the last closed 1-minute candle), bars are aligned so that
    the last bar ends exactly with that candle: every minute yields complete bars and never a
    half-formed one. Without it, bars are aligned to the epoch grid (as exchanges label them).
    Incomplete bars at either end are dropped.
    """
    if minutes == 1:
        return df
    # the bar grid is shifted so that (anchor + 1 min) is a bar boundary
    offset_min = 0 if anchor is None else anchor_offset(anchor, minutes)
    rule = f"{minutes}min"
    g = df.resample(rule, origin="epoch", offset=pd.Timedelta(minutes=offset_min), label="left", closed="left")
    out = pd.DataFrame(
        {
            "open": g["open"].first(),
            "high": g["high"].max(),
            "low": g["low"].min(),
            "close": g["close"].last(),
            "volume": g["volume"].sum(),
        }
    )
    counts = g["close"].count()
    out = out[counts == minutes]
    if anchor is not None:
        out = out[out.index <= anchor - pd.Timedelta(minutes=minutes - 1)]
    out.index.name = "timestamp"
    return out


def anchor_offset(anchor: pd.Timestamp, minutes: int) -> int:
    """Which of the ``minutes`` bar alignments the anchor minute belongs to (0..minutes-1)."""
    return int(((anchor.value // 60_000_000_000) + 1) % minutes)
