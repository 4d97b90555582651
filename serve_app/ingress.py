"""HTTP ingress (FastAPI through ``@serve.ingress``): /predict, /signals/latest/{symbol},
/healthz, /readyz, /tick, OpenAPI docs at /docs. Typed errors become 4xx/503 here and only here."""


import asyncio
import hmac
import logging
import math
import time
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from common.errors import (
    CandleValidationError,
    DataSourceError,
    InsufficientDataError,
    MissingCrossAssetError,
    MLSignalsError,
    UnknownSymbolError,
)
from features.calculator import BTC_SYMBOL, is_btc
from features.sources.base import last_closed_minute
from mlsignals.settings import load_settings
from serve_app import board, stream
from serve_app.inputs import (
    PathSymbol,
    PredictRequest,
    SafeJSONResponse,
    candle_frame,
    install_error_handlers,
    json_safe_input,
)
from serve_app.model_meta import ModelMetaCache
from signals.schema import Signal

log = logging.getLogger("ray.serve")
_STATUS = {
    CandleValidationError: 422, InsufficientDataError: 422, MissingCrossAssetError: 422,
    UnknownSymbolError: 404, DataSourceError: 503,
}
# Where a /predict answer came from: "tick" (the scheduler's signal of the latest closed minute,
# the one it published, same id) or "computed" (the four hops ran for this request).
SOURCE_HEADER = "X-Signal-Source"


class TickSignals:
    """This Ingress replica's copy of the scheduler's signals of the latest closed minute, so that
    ``POST /predict`` for a served symbol answers with the signal the tick computed and published
    (same id) without a call to another deployment, instead of the four hops of the full path.

    - The minute is the one the full path would use (``last_closed_minute``, as the feature stage
      and the tick do); the copy is emptied when it changes, so a signal of an older minute is
      never served as current, and a minute not ticked yet misses (the request computes).
    - The copy is fetched from SignalProcessor (``ticked``: the signals it made for that minute)
      once for the requests that miss together, again only after ``refetch_s`` while symbols are
      missing (a tick still running), and merged, so that a tick whose shards went to several
      SignalProcessor replicas is gathered over a few fetches; until then a miss computes.
    - The model version that serves is asked of MLManager in the background every
      ``version_s`` while requests come; a tick signal of another version (a hot swap since the
      tick) is not served, the full path runs with the new model. When the version known was
      asked more than ``version_max_age_s`` before the request came (the first request, a quiet
      spell), a fresh answer is awaited: a request in the first fraction of a second after a swap
      completes may still get the minute's signal of the old model, the one that was published
      for that minute, as a request that came just before the swap would.
    - Any failure (SignalProcessor or MLManager not answering) is a miss, never an error.
    """

    def __init__(self, signals: DeploymentHandle, ml: DeploymentHandle, refetch_s: float = 0.25,
                 version_s: float = 0.25, version_max_age_s: float = 0.5) -> None:
        self._signals, self._ml = signals, ml
        self.refetch_s, self.version_s, self.version_max_age_s = refetch_s, version_s, version_max_age_s
        self._minute = None
        self._of_minute: dict[str, Signal] = {}
        self._fetch: asyncio.Future | None = None
        self._fetched_at = -math.inf  # time.monotonic() when the last fetch started
        self._version: str | None = None
        self._version_at = -math.inf  # when the call that returned it started
        self._version_task: asyncio.Future | None = None

    async def get(self, symbol: str) -> Signal | None:
        """The tick's signal of ``symbol`` at the latest closed minute, or None (compute it)."""
        minute = last_closed_minute()
        if minute != self._minute:
            self._minute, self._of_minute, self._fetched_at = minute, {}, -math.inf
        signal = self._of_minute.get(symbol)
        if signal is None:
            await self._refetch(minute)
            signal = self._of_minute.get(symbol) if self._minute == minute else None
            if signal is None:
                return None
        return signal if signal.model_version == await self._serving_version() else None

    async def _refetch(self, minute) -> None:
        if self._fetch is None or self._fetch.done():
            if time.monotonic() - self._fetched_at < self.refetch_s:
                return  # asked moments ago and not there yet: this request computes
            self._fetched_at = time.monotonic()
            self._fetch = asyncio.ensure_future(self._fetch_minute(minute))
        await asyncio.shield(self._fetch)

    async def _fetch_minute(self, minute) -> None:
        try:
            got: dict[str, Signal] = await self._signals.ticked.remote(minute)
        except Exception as exc:
            log.warning("tick signals of %s not fetched (%s); computing", minute, type(exc).__name__)
            return
        if self._minute == minute:
            self._of_minute.update(got)

    async def _serving_version(self) -> str | None:
        # ages are taken at the request's arrival: a call that started after it is fresh however
        # long it took (a slow MLManager delays the answer, it does not turn hits into misses)
        asked = time.monotonic()
        if asked - self._version_at > self.version_s and (self._version_task is None or self._version_task.done()):
            self._version_task = asyncio.ensure_future(self._fetch_version())
        if asked - self._version_at > self.version_max_age_s:
            await asyncio.shield(self._version_task)  # too old to trust: wait for a fresh one
        return self._version if asked - self._version_at <= self.version_max_age_s else None

    async def _fetch_version(self) -> None:
        t0 = time.monotonic()
        try:
            info = await self._ml.info.remote()
        except Exception as exc:
            log.warning("model version not fetched (%s); computing", type(exc).__name__)
            return
        self._version, self._version_at = info.get("model_version"), t0


app = FastAPI(
    title="mlsignals",
    description="Real-time ML trading signals (UnifiedPatchTST on 240+ technical features).",
    version="0.1.0",
)
install_error_handlers(app)  # any input value -> a 4xx naming field and rule (serve_app/inputs.py)


_OPEN_PATHS = {"/healthz", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
_OPEN_PATHS |= board.PUBLIC_PATHS  # the board's page and assets hold no data; it asks for the key
app.include_router(stream.router)
app.include_router(board.router)


@app.middleware("http")
async def _guard(request: Request, call_next):
    """Before any parsing: the API key (when configured, compared in constant time) and the
    body size limit (by header, and by counting for bodies sent without one)."""
    state = request.app.state
    api_key: bytes | None = getattr(state, "api_key", None)
    if api_key is not None and request.url.path not in _OPEN_PATHS:
        given = request.headers.get("x-api-key", "").encode()
        if not hmac.compare_digest(given, api_key):
            return JSONResponse({"detail": "missing or wrong X-API-Key header"}, status_code=401)
    max_body: int = getattr(state, "max_body", 2_000_000)
    length = request.headers.get("content-length")
    too_big = JSONResponse({"detail": f"request body larger than {max_body} bytes"}, status_code=413)
    if length is not None and (not length.isdigit() or int(length) > max_body):
        return too_big
    if length is None and request.method in ("POST", "PUT", "PATCH"):
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                return too_big
    return await call_next(request)


@app.exception_handler(MLSignalsError)
async def _typed_errors(_: Request, exc: MLSignalsError) -> JSONResponse:
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 422)
    return SafeJSONResponse({"detail": json_safe_input(str(exc))}, status_code=status)


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(app)
class Ingress:
    def __init__(
        self, features: DeploymentHandle, ml: DeploymentHandle, signals: DeploymentHandle,
        scheduler: DeploymentHandle, config_path: str | None = None,
    ) -> None:
        settings = load_settings(config_path)
        self.features, self.ml, self.signals, self.scheduler = features, ml, signals, scheduler
        self._meta = ModelMetaCache(ml)
        self.ticks = TickSignals(signals, ml)
        self.symbols = set(settings.symbols)
        self.max_candles = settings.server.max_candles
        app.state.max_body = settings.server.max_body_bytes
        app.state.api_key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        board.attach(app, settings, features)  # /signals/stream and /board's state

    # --- routes -------------------------------------------------------------------------
    @app.post("/predict", response_model=Signal, responses={401: {}, 404: {}, 413: {}, 422: {}, 503: {}})
    async def predict(
        self, body: PredictRequest, response: Response, x_api_key: Annotated[str | None, Header()] = None
    ) -> Signal:
        """The signal for one symbol now, or for the candles given (BTC's too for a non-BTC symbol).
        For a served symbol without candles, the scheduler's tick of the latest closed minute has
        already computed it: that signal is returned when it exists (header ``X-Signal-Source:
        tick``); otherwise, and for every what-if, the pipeline runs (``computed``)."""
        sym = body.symbol
        if body.candles is None and body.btc_candles is None and sym in self.symbols:
            ticked = await self.ticks.get(sym)
            if ticked is not None:
                response.headers[SOURCE_HEADER] = "tick"
                return ticked
        response.headers[SOURCE_HEADER] = "computed"
        candles = None
        if body.candles is not None:
            if len(body.candles) + len(body.btc_candles or []) > self.max_candles:
                raise HTTPException(413, f"at most {self.max_candles} candles per request")
            candles = {sym: candle_frame(body.candles, sym)}
            if not is_btc(sym):
                if not body.btc_candles:
                    raise MissingCrossAssetError(f"{sym}: cross-asset features need btc_candles over the same minutes")
                candles[BTC_SYMBOL] = candle_frame(body.btc_candles, BTC_SYMBOL)
        elif sym not in self.symbols:
            raise UnknownSymbolError(f"unknown symbol {sym}; served: {', '.join(sorted(self.symbols))}")
        t0 = time.perf_counter()
        fr = (await self.features.compute.remote([sym], candles=candles))[sym]
        if candles is not None and fr.error:  # the caller's candles cannot be used: a 422 naming why
            raise HTTPException(422, fr.error)
        output, error, version = (None, None, None)
        if fr.window is not None:
            output, error, version = await self.ml.predict.remote(sym, fr.window)
        meta = await self._meta.get(version)
        fr.latency_ms["http_ms"] = (time.perf_counter() - t0) * 1e3
        # HTTP predictions are not pushed to the trading stream: that carries the scheduler's
        # signals only, one per symbol and minute. Those on the source's candles are logged;
        # what-ifs on the caller's candles are not (they would take the log slot of that minute).
        return await self.signals.handle.remote(fr, output, meta, error, publish=False, record=candles is None)

    @app.get("/signals/latest/{symbol}", response_model=Signal, responses={404: {}, 422: {}})
    async def latest(self, symbol: PathSymbol, x_api_key: Annotated[str | None, Header()] = None) -> Signal:
        """The last signal delivered onto the stream for ``symbol``."""
        raw = await self.signals.latest.remote(symbol.upper())
        if raw is None:
            raise HTTPException(404, f"no signal delivered yet for {symbol.upper()}")
        return Signal.model_validate(raw)

    @app.post("/tick", responses={401: {}})
    async def tick(self, x_api_key: Annotated[str | None, Header()] = None) -> dict:
        """Run the pipeline for every configured symbol now (operators, tests)."""
        return await self.scheduler.tick_now.remote()

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready when the model is loaded and Redis and the database answer."""
        checks: dict = {}
        for name, call in (("model", self.ml.info), ("delivery", self.signals.status),
                           ("scheduler", self.scheduler.status), ("data", self.features.data_status)):
            try:
                checks[name] = await call.remote()
            except Exception as exc:  # a dead or failing deployment makes the service not ready
                checks[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[-1][:200]}"}
        delivery = checks["delivery"]
        checks["redis"], checks["database"] = delivery.get("redis") is True, delivery.get("database") is True
        ready = "model_version" in checks["model"] and checks["redis"] and checks["database"]
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

