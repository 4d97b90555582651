"""The live signal board: ``GET /board`` (plain HTML/JS/CSS under serve_app/static/, no build
step) and the small JSON endpoints it reads. Live updates come from ``GET /signals/stream``.

The page and its two static files are open (they hold no data); every ``/board/api/*`` call
needs the API key when one is configured. The page asks for the key once, keeps it in the
tab's sessionStorage and sends it only in the ``X-API-Key`` header (never in a URL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse
from ray.serve.handle import DeploymentHandle
from sqlalchemy.exc import SQLAlchemyError

from serve_app.stream import StreamHub
from signals.scorecard import recent_signals, scorecard

log = logging.getLogger("ray.serve")
router = APIRouter()
STATIC = Path(__file__).resolve().parent / "static"
_ASSETS = {"board.js": "text/javascript", "board.css": "text/css"}
PUBLIC_PATHS = frozenset({"/board", *(f"/board/static/{name}" for name in _ASSETS)})


class BoardState:
    """Per ingress replica: where the board's data comes from."""

    def __init__(self, symbols: list[str], features: DeploymentHandle, engine, hub: StreamHub,
                 scorecard_ttl_s: float = 30.0) -> None:
        self.symbols, self.features, self.engine, self.hub = symbols, features, engine, hub
        self._scorecard: tuple[float, dict] | None = None
        self._ttl = scorecard_ttl_s

    def scorecard(self) -> dict:
        now = time.monotonic()
        if self._scorecard is None or now - self._scorecard[0] > self._ttl:
            self._scorecard = (now, scorecard(self.engine))
        return self._scorecard[1]


def attach(app: FastAPI, settings, features: DeploymentHandle) -> None:
    """Called once from the Ingress constructor: the stream's and the board's state."""
    from common.db import make_engine
    from mlsignals import factories

    hub = StreamHub.from_sync(factories.redis_client(settings), settings.delivery, settings.stream)
    app.state.stream_hub = hub
    app.state.board = BoardState(list(settings.symbols), features, make_engine(settings.database_url_value()), hub)


def _board(request: Request) -> BoardState:
    board = getattr(request.app.state, "board", None)
    if board is None:
        raise HTTPException(503, "board not configured")
    return board


def _symbol(board: BoardState, symbol: str) -> str:
    sym = symbol.upper()
    if sym not in board.symbols:
        raise HTTPException(404, f"unknown symbol {sym}; served: {', '.join(board.symbols)}")
    return sym


@router.get("/board", include_in_schema=False)
async def board_page() -> FileResponse:
    return FileResponse(STATIC / "board.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/board/static/{name}", include_in_schema=False)
async def board_asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise HTTPException(404, "not found")
    return FileResponse(STATIC / name, media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"})


@router.get("/board/api/overview")
async def overview(request: Request) -> dict[str, Any]:
    """Tracked symbols and the last delivered signal of each (None before the first)."""
    board = _board(request)
    # The head first: a signal delivered while the hashes are read is then also after it, so a
    # page that streams from the head misses nothing (it may see one twice; ids tell).
    head = await board.hub.client.xrevrange(board.hub.delivery.stream_key, count=1)
    keys = [board.hub.delivery.latest_key(s) for s in board.symbols]
    pipe = board.hub.client.pipeline(transaction=False)
    for k in keys:
        pipe.hget(k, "signal")
        pipe.hget(k, "stream_id")
    raw = await pipe.execute()
    latest = {s: (json.loads(raw[2 * i]) if raw[2 * i] else None) for i, s in enumerate(board.symbols)}
    stream_ids = {s: raw[2 * i + 1] for i, s in enumerate(board.symbols)}
    return {"symbols": board.symbols, "latest": latest, "stream_ids": stream_ids,
            "stream_head": head[0][0] if head else None, "server_time": datetime.now(UTC).isoformat(),
            "stream": {"open": board.hub.open_streams, "dropped": board.hub.dropped}}


@router.get("/board/api/candles/{symbol}")
async def candles(request: Request, symbol: str, minutes: int = Query(240, ge=10, le=1440)) -> dict[str, Any]:
    """The last closed 1-minute candles: rows of [open time ms, open, high, low, close, volume]."""
    board = _board(request)
    sym = _symbol(board, symbol)
    try:
        df = await board.features.recent_candles.remote(sym, minutes)
    except Exception as exc:  # the source is down: the chart says so, the board keeps running
        raise HTTPException(503, f"candles unavailable: {type(exc).__name__}") from None
    ms = (df.index.asi8 // 1_000_000).tolist()
    values = df[["open", "high", "low", "close", "volume"]].to_numpy().tolist()
    return {"symbol": sym, "candles": [[t, *v] for t, v in zip(ms, values, strict=True)]}


@router.get("/board/api/signals/{symbol}")
async def signals_of(request: Request, symbol: str, hours: float = Query(4.0, gt=0, le=168)) -> dict[str, Any]:
    """The symbol's logged signals of the last hours, with outcomes once known."""
    board = _board(request)
    sym = _symbol(board, symbol)
    since = datetime.now(UTC) - timedelta(hours=hours)
    try:
        rows = await asyncio.to_thread(recent_signals, board.engine, sym, since)
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"prediction log unavailable: {type(exc).__name__}") from None
    return {"symbol": sym, "signals": rows}


@router.get("/board/api/scorecard")
async def scorecard_view(request: Request) -> dict[str, Any]:
    """Hit rate and mean net return per symbol/horizon (day, week) and calibration."""
    board = _board(request)
    try:
        return await asyncio.to_thread(board.scorecard)
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"prediction log unavailable: {type(exc).__name__}") from None
