"""Ray Serve deployments around the plain stage classes: they validate their ``user_config`` and
record metrics, and hold what only a long-lived replica does: MLManager's hot swap (a bundle
whose feature spec, bar size or context differs from what the feature deployment serves is
refused) and SignalProcessor's thread that fills realised outcomes into the prediction log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from common.errors import ArtifactError
from mlsignals import factories
from mlsignals.factories import build_source
from mlsignals.pipeline import FeatureResult, ModelMeta, SignalSink, read_bundle_targets
from mlsignals.settings import load_settings, project_path
from model.contract import ModelOutput
from model.inference import InferenceEngine
from serve_app import metrics
from signals.schema import Signal

log = logging.getLogger("ray.serve")


# max_ongoing_requests 2: one shard computing, the next one waiting, so a tick's shards queue in
# the caller's router, which hands each to whichever replica frees up first. With 8, the router
# gave one replica 8 of a tick's 9 shards while the other idled (seen in the cluster test), and 8
# GIL-bound computations in one replica's threads only slow each other down.
@serve.deployment(name="FeatureCalculator", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=2)
class FeatureCalculator:
    """Candles from the configured market-data source -> feature windows for many symbols."""

    def __init__(self, config_path: str | None = None) -> None:
        # a live (ccxt) source backfills the model's history into the SQL store first
        self.stage = factories.feature_stage(load_settings(config_path), backfill=True)
        # Serve runs sync methods in a thread pool: one computation at a time, since the stage's
        # cache is not thread-safe and the work holds the GIL anyway
        self._lock = threading.Lock()

    def _compute(self, symbols: list[str], end: pd.Timestamp | None,
                 candles: dict[str, pd.DataFrame] | None) -> tuple[dict[str, FeatureResult], float]:
        with self._lock:
            t0 = time.perf_counter()
            out = self.stage.compute(symbols, end=end, candles=candles)
            seconds = time.perf_counter() - t0
        metrics.stage_latency().observe(seconds * 1e3, tags={"stage": "features"})
        for r in out.values():
            if r.error:
                metrics.failures().inc(tags={"stage": "features"})
        # (the stale-symbols gauge is the scheduler's: a call here sees one shard, not the tick)
        return out, seconds

    def compute(
        self, symbols: list[str], end: pd.Timestamp | None = None, candles: dict[str, pd.DataFrame] | None = None
    ) -> dict[str, FeatureResult]:
        return self._compute(symbols, end, candles)[0]

    def compute_shard(
        self, symbols: list[str], end: pd.Timestamp | None = None
    ) -> tuple[dict[str, FeatureResult], dict[str, str | float]]:
        """One shard of a scheduler tick: ``compute``'s results, plus who served it (this
        replica's id and its Ray node id) and its compute seconds in here, for the tick
        report's spread."""
        import ray

        out, seconds = self._compute(symbols, end, None)
        return out, {"replica": serve.get_replica_context().replica_id.unique_id,
                     "node": ray.get_runtime_context().get_node_id(), "seconds": round(seconds, 4)}

    def recent_candles(self, symbol: str, minutes: int) -> pd.DataFrame:
        """The last ``minutes`` closed 1-minute candles of ``symbol`` (the board's chart)."""
        return self.stage.source.get_candles(symbol, minutes)

    def data_status(self) -> dict:
        """The market-data source's state for /readyz ("backfilling k/n symbols" while it does)."""
        status = getattr(self.stage.source, "status", None)
        return {"source": type(self.stage.source).__name__, **(status() if callable(status) else {})}


class MLManagerConfig(BaseModel):
    """MLManager's ``user_config``: applied in ``reconfigure`` without a redeploy."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = Field(None, description="bundle directory; None keeps the configured one")
    max_batch_size: int = Field(128, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=1.0)


@serve.deployment(name="MLManager", ray_actor_options={"num_cpus": 0.5, "num_gpus": 0}, max_ongoing_requests=512)
class MLManager:
    """Holds the compiled UnifiedPatchTST. Concurrent per-symbol calls of one tick are batched
    into one forward pass by ``@serve.batch``; ``reconfigure`` hot-swaps the bundle: the old
    model serves until the new one is loaded and verified, and a bad bundle is refused."""

    def __init__(self, config_path: str | None = None) -> None:
        self.settings = load_settings(config_path)
        self.engine = self._load(self.settings.model_path)
        self.last_reload_error: str | None = None

    def _load(self, path: Path) -> InferenceEngine:
        engine = factories.inference_engine(self.settings, path)
        log.info(
            "MLManager loaded %s on %s (compiled=%s, %.1fs compile)",
            engine.model_version, engine.device, engine.compiled, engine.compile_seconds,
        )
        return engine

    def reconfigure(self, user_config: dict) -> None:
        cfg = MLManagerConfig(**(user_config or {}))
        self.predict_batch.set_max_batch_size(cfg.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        if cfg.model_path is None:
            return
        path = project_path(cfg.model_path)
        if path.resolve() == self.engine.bundle.path.resolve():
            return
        try:
            new = self._load(path)
            if (new.spec_hash, new.bar_minutes, new.context_length) != (
                self.engine.spec_hash, self.engine.bar_minutes, self.engine.context_length
            ):
                raise ArtifactError(
                    f"{path}: bundle needs spec {new.spec_hash}, {new.bar_minutes}-minute bars and context "
                    f"{new.context_length}; the feature deployment serves {self.engine.spec_hash}, "
                    f"{self.engine.bar_minutes}, {self.engine.context_length}"
                )
        except Exception as exc:  # refuse the bundle, keep serving the old model
            self.last_reload_error = f"{type(exc).__name__}: {exc}"
            log.error("MLManager refused bundle %s: %s; still serving %s", path, exc, self.engine.model_version)
            return
        self.engine, self.last_reload_error = new, None
        log.info("MLManager now serves %s", new.model_version)

    @serve.batch(max_batch_size=128, batch_wait_timeout_s=0.01)
    async def predict_batch(
        self, items: list[tuple[str, np.ndarray]]
    ) -> list[tuple[ModelOutput | None, str | None]]:
        t0 = time.perf_counter()
        keys = [f"{s}#{i}" for i, (s, _) in enumerate(items)]  # one symbol may be twice in a batch
        try:
            values = np.stack([w for _, w in items]).astype(np.float32, copy=False)
            # the forward pass is CPU/GPU bound: run it off the replica's event loop
            outputs, errors = await asyncio.to_thread(self.engine.predict, values, keys)
        except Exception as exc:  # a bad window shape must not fail the other symbols' requests
            return self._one_by_one(items, exc)
        metrics.stage_latency().observe((time.perf_counter() - t0) * 1e3, tags={"stage": "model"})
        return [(outputs.get(k), errors.get(k)) for k in keys]

    def _one_by_one(self, items: list[tuple[str, np.ndarray]], exc: Exception) -> list:
        log.warning("batched forward failed (%s); retrying symbol by symbol", exc)
        out = []
        for s, w in items:
            try:
                o, e = self.engine.predict(np.asarray(w, dtype=np.float32)[None], [s])
                out.append((o.get(s), e.get(s)))
            except Exception as one_exc:
                metrics.failures().inc(tags={"stage": "model"})
                out.append((None, f"{type(one_exc).__name__}: {one_exc}"))
        return out

    async def predict(self, symbol: str, window: np.ndarray) -> tuple[ModelOutput | None, str | None, str]:
        """(output, error, model_version) for one symbol's window [context, F]."""
        output, error = await self.predict_batch((symbol, window))
        return output, error, self.engine.model_version

    def meta(self) -> ModelMeta:
        return ModelMeta.of(self.engine)

    def info(self) -> dict:
        e = self.engine
        return {
            "model_version": e.model_version,
            "spec_hash": e.spec_hash,
            "device": str(e.device),
            "compiled": e.compiled,
            "compile_seconds": e.compile_seconds,
            "bundle_path": str(e.bundle.path),
            "last_reload_error": self.last_reload_error,
        }


@serve.deployment(name="SignalProcessor", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
class SignalProcessor:
    """Model output -> Signal -> outbox -> Redis, plus the prediction log. The outbox relay runs
    in a watched thread: the health check fails when it died. Without REDIS_URL this replica
    also supervises the embedded redis-server (with any other process that uses it)."""

    def __init__(self, config_path: str | None = None) -> None:
        settings = load_settings(config_path)
        self.redis = factories.redis_client(settings)
        self.embedded = factories.embedded_redis(settings)  # None with an external REDIS_URL
        self.outbox, self.relay, publisher = factories.delivery(settings, self.redis)
        self.sink = SignalSink(settings.signals, publisher, factories.prediction_log(settings))
        self.delivery_config = settings.delivery
        self._stop = threading.Event()
        self._relay_thread = threading.Thread(target=self.relay.run_forever, args=(self._stop,), daemon=True,
                                              name="outbox-relay")
        self._relay_thread.start()
        # Realised outcomes are filled into the prediction log once each horizon has passed.
        self._source = build_source(settings)
        self._symbols = settings.symbols
        targets, _ = read_bundle_targets(settings.model_path)
        self._outcome_window = targets.horizon_minutes(-1) + 30  # minutes of candles needed
        self._outcomes_thread = threading.Thread(target=self._outcomes_loop, daemon=True, name="outcomes")
        self._outcomes_thread.start()
        # The signals this replica made in scheduled ticks, by (symbol, bar minute), the latest
        # two minutes only: POST /predict at that minute answers with the tick's own signal
        # (``ticked``, copied by the Ingress) instead of running the four hops again.
        self._ticked: dict[tuple[str, pd.Timestamp], Signal] = {}
        self._ticked_lock = threading.Lock()  # sync methods may run in Serve's thread pool

    def _outcomes_loop(self, every_s: float = 60.0, spool_every_s: float = 2.0) -> None:
        """Every few seconds: drain the signal buffer and the log's spool once the database
        answers (left by this replica, or by one that crashed); every minute: fill outcomes."""
        next_outcomes = time.monotonic() + every_s
        while not self._stop.wait(spool_every_s):
            if self.embedded is not None:  # whichever process restarted it, the count is on disk
                metrics.redis_restarts().set(self.embedded.restarts_total())
            with contextlib.suppress(Exception):  # the dashboards' outbox backlog
                metrics.outbox_pending().set(self.outbox.pending_count())
            pub = self.sink.publisher
            with contextlib.suppress(Exception):
                if pub is not None and pub.buffered:  # signals that waited for the database
                    pub.flush()
            plog = self.sink.prediction_log
            if plog is None:
                continue
            with contextlib.suppress(Exception):
                if plog.queued:
                    plog.flush()
                metrics.log_spool_rows().set(plog.queued)
            if time.monotonic() < next_outcomes:
                continue
            next_outcomes = time.monotonic() + every_s
            try:
                candles = {s: self._source.get_candles(s, self._outcome_window) for s in self._symbols}
                filled = plog.fill_outcomes(candles)
                if filled:
                    log.info("prediction log: outcomes filled for %d row(s)", filled)
            except Exception as exc:  # the database or source is down: try again next round
                log.warning("prediction log: outcomes not filled this round (%s)", type(exc).__name__)

    def handle(self, fr: FeatureResult, output: ModelOutput | None, meta: ModelMeta, error: str | None = None,
               latency_ms: dict[str, float] | None = None, publish: bool = True, record: bool = True) -> Signal:
        t0 = time.perf_counter()
        signal = self.sink.handle(fr, output, meta, error, latency_ms, publish=publish, record=record)
        metrics.signals().inc(tags={"direction": signal.direction.value})
        metrics.stage_latency().observe((time.perf_counter() - t0) * 1e3, tags={"stage": "signal"})
        return signal

    def handle_many(self, items: list[tuple[FeatureResult, ModelOutput | None, str | None]],
                    meta: ModelMeta) -> list[Signal]:
        """A tick's signals in one call (one round trip instead of one per symbol)."""
        signals = [self.handle(fr, output, meta, error) for fr, output, error in items]
        self._remember_ticked(items, signals)
        return signals

    def _remember_ticked(self, items: list[tuple[FeatureResult, ModelOutput | None, str | None]],
                         signals: list[Signal]) -> None:
        """Keep the tick's signals that the full path would compute again: those with a model
        output and no error. A NEUTRAL-with-reason made by a failure of this tick (a model
        timeout, a failed feature shard) is not kept: a request then gets a fresh computation.
        A minute ticked again (tick now, a catch-up) gives the same id: the first signal stays,
        the one delivery kept (it drops repeated ids), created_at included."""
        keep = {(sig.symbol, self._minute_key(sig.bar_time)): sig
                for (fr, output, error), sig in zip(items, signals, strict=True)
                if output is not None and error is None and fr.error is None}
        if not keep:
            return
        with self._ticked_lock:
            for key, sig in keep.items():
                if (old := self._ticked.get(key)) is None or old.id != sig.id:
                    self._ticked[key] = sig
            latest = sorted({m for _, m in self._ticked})[-2:]  # bounded: symbols x 2 entries
            for key in [k for k in self._ticked if k[1] not in latest]:
                del self._ticked[key]

    @staticmethod
    def _minute_key(t) -> pd.Timestamp:
        """A bar time (datetime or Timestamp, naive = UTC) as a UTC minute, for exact lookups."""
        t = pd.Timestamp(t)
        return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).floor("min")

    def ticked(self, minute: pd.Timestamp) -> dict[str, Signal]:
        """Symbol -> the signal a scheduled tick made on the bar of ``minute`` (the open of a
        closed 1-minute candle). By exact minute: a tick of an older minute is never returned for
        a newer one, and a minute not ticked yet gives nothing.

        Scale-out: with several SignalProcessor replicas, a tick's signals are kept by whichever
        replica handled that shard and a fetch lands on any replica, so the Ingress gathers them
        over a few fetches; a symbol not found yet takes the full path: correct (same id,
        computed again), only slower. The Redis "latest" hash is shared but not used here: the
        relay fills it asynchronously after the tick (a miss window of its own), it holds one
        signal per symbol (read per symbol), and during a Redis outage each read would block this
        replica for the client's timeouts (2 s, one retry) instead of answering from memory."""
        m = self._minute_key(minute)
        with self._ticked_lock:
            return {sym: sig for (sym, at), sig in self._ticked.items() if at == m}

    def latest(self, symbol: str) -> dict | None:
        """The last signal delivered for ``symbol`` (the per-symbol "latest" hash)."""
        raw = self.redis.hget(self.delivery_config.latest_key(symbol), "signal")
        return json.loads(raw) if raw else None

    def status(self) -> dict:
        try:
            self.redis.ping()
            redis_ok = True
        except Exception:  # any connection failure means "not reachable"
            redis_ok = False
        try:
            pending = self.outbox.pending_count()
            db_ok = True
        except Exception:
            pending, db_ok = None, False
        plog = self.sink.prediction_log
        spooled = None
        with contextlib.suppress(Exception):
            spooled = None if plog is None else plog.queued
        return {"redis": redis_ok, "database": db_ok, "outbox_pending": pending,
                "relay_alive": self._relay_thread.is_alive(), "relay_last_error": self.relay.last_error,
                "log_spool_rows": spooled,
                "embedded_redis": None if self.embedded is None else self.embedded.status()}

    def check_health(self) -> None:
        if not self._relay_thread.is_alive():
            raise RuntimeError("outbox relay thread died")
        if not self._outcomes_thread.is_alive():
            raise RuntimeError("outcomes thread died")
        if self.embedded is not None and not self.embedded.alive:
            raise RuntimeError("embedded redis supervisor thread died")

    def __del__(self) -> None:
        """Serve's graceful stop (``serve shutdown``, Ctrl-C on ``serve run``): the relay ends and
        the embedded redis-server this replica owns is shut down (it saves its data first)."""
        self._stop.set()
        if getattr(self, "embedded", None) is not None:
            self.embedded.stop()
