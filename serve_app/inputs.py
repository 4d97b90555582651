"""What the HTTP API accepts, and how everything else is refused: a 4xx that names the field and
the rule, never a 500.

Two kinds of input used to reach a 500: values the models accepted but the code behind them
could not use (timestamps pandas cannot represent), and error responses that could not be
written (FastAPI echoes the offending input, and JSON has no inf/NaN; a lone surrogate cannot be
encoded as UTF-8). Here every value is checked against the range the code can use, and the
error handlers make any input value safe before writing it, with a last-resort body when even
that fails.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

import pandas as pd
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from features.candles import CANDLE_COLUMNS, validate_candles

SYMBOL_RULE = r"^[A-Za-z0-9]+$"
# pandas timestamps end in 2262; candles before the Unix epoch do not exist for any exchange.
TS_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2262, 1, 1, tzinfo=UTC)
EPOCH_MS_MAX = int(TS_MAX.timestamp() * 1000)

PathSymbol = Annotated[str, Path(min_length=2, max_length=20, pattern=SYMBOL_RULE, examples=["BTCUSDT"],
                                 description="a symbol such as BTCUSDT (2-20 letters and digits)")]


class CandleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    timestamp: datetime | int = Field(
        description="open time: ISO-8601 (naive = UTC) or epoch milliseconds, 1970-01-01 .. 2262-01-01 UTC")
    open: float
    high: float
    low: float
    close: float
    volume: float

    @field_validator("timestamp")
    @classmethod
    def _representable(cls, v: datetime | int) -> datetime | int:
        if isinstance(v, int):
            if not 0 <= v < EPOCH_MS_MAX:
                raise ValueError(f"epoch milliseconds must be >= 0 and < {EPOCH_MS_MAX} (2262-01-01 UTC)")
            return v
        aware = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        try:
            ok = TS_MIN <= aware < TS_MAX
        except (OverflowError, ValueError):  # offsets at the edges of datetime's range
            ok = False
        if not ok:
            raise ValueError("must lie between 1970-01-01 and 2262-01-01 UTC")
        return aware.astimezone(UTC)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=2, max_length=20, pattern=SYMBOL_RULE, examples=["BTCUSDT"])
    candles: list[CandleIn] | None = Field(None, description="1-minute candles, oldest first; default: the source")
    btc_candles: list[CandleIn] | None = Field(None, description="BTC's candles over the same minutes (non-BTC)")

    @field_validator("symbol")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


def candle_frame(rows: list[CandleIn], symbol: str) -> pd.DataFrame:
    """Validated candles (raises CandleValidationError naming symbol, time and rule)."""
    index = pd.DatetimeIndex(
        [pd.Timestamp(r.timestamp, unit="ms", tz="UTC") if isinstance(r.timestamp, int) else pd.Timestamp(r.timestamp)
         for r in rows], name="timestamp")
    df = pd.DataFrame([[getattr(r, c) for c in CANDLE_COLUMNS] for r in rows], columns=list(CANDLE_COLUMNS),
                      index=index)
    return validate_candles(df, symbol)


# --- error responses that cannot fail -------------------------------------------------------
_MAX_STR, _MAX_ITEMS, _MAX_DEPTH, _MAX_INT_BITS = 200, 10, 4, 128


def json_safe_input(v: Any, depth: int = 0) -> Any:
    """A small JSON-writable stand-in for any input value: non-finite floats and huge integers
    as text, long strings and containers cut, anything else by its (cut) repr."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if v.bit_length() <= _MAX_INT_BITS else f"<integer of {v.bit_length()} bits>"
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, str):
        return v if len(v) <= _MAX_STR else v[:_MAX_STR] + f"... ({len(v)} characters)"
    if depth >= _MAX_DEPTH:
        return "..."
    if isinstance(v, dict):
        items = list(v.items())
        out = {str(k)[:_MAX_STR]: json_safe_input(x, depth + 1) for k, x in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["..."] = f"{len(items) - _MAX_ITEMS} more"
        return out
    if isinstance(v, list | tuple):
        out = [json_safe_input(x, depth + 1) for x in v[:_MAX_ITEMS]]
        return out + [f"... {len(v) - _MAX_ITEMS} more"] if len(v) > _MAX_ITEMS else out
    try:
        return repr(v)[:_MAX_STR]
    except Exception:
        return f"<{type(v).__name__}>"


class SafeJSONResponse(JSONResponse):
    """ASCII JSON (NUL bytes and lone surrogates become escapes), no NaN; a body that still
    cannot be written becomes a fixed one rather than a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
        except (TypeError, ValueError, RecursionError, OverflowError):
            return b'{"detail":"the request was refused; its details could not be written"}'


async def validation_error(_: Request, exc: RequestValidationError) -> SafeJSONResponse:
    """422 with FastAPI's shape (loc, msg, type, input), every value made writable."""
    detail = []
    for err in exc.errors():
        item = {"loc": [json_safe_input(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))[:500],
                "type": str(err.get("type", "")), "input": json_safe_input(err.get("input"))}
        if err.get("ctx"):
            item["ctx"] = {str(k): json_safe_input(v if isinstance(v, int | float | str) else str(v))
                           for k, v in err["ctx"].items()}
        detail.append(item)
    return SafeJSONResponse({"detail": detail}, status_code=422)


async def http_error(_: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": json_safe_input(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
