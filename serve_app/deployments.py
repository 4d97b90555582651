"""Ray Serve deployments: thin wrappers that hold the plain stage classes, validate their
``user_config`` and record metrics. No business rule lives here."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from features.calculator import RealTimeIndicatorCalculator
from features.candles import GapPolicy
from features.sources import build_source
from mlsignals.errors import ArtifactError
from mlsignals.pipeline import FeatureResult, FeatureStage, read_bundle_shape
from mlsignals.settings import load_settings, project_path
from model.contract import ModelOutput
from model.inference import InferenceEngine
from serve_app import metrics

log = logging.getLogger("ray.serve")


@serve.deployment(name="FeatureCalculator", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=8)
class FeatureCalculator:
    """Candles from the configured market-data source -> feature windows for many symbols."""

    def __init__(self, config_path: str | None = None) -> None:
        settings = load_settings(config_path)
        bar_minutes, context = read_bundle_shape(settings.model_path)
        calc = RealTimeIndicatorCalculator(bar_minutes=bar_minutes, n_rows=context)
        policy = GapPolicy(max_fill=settings.data.gap_fill_max, stale_after=settings.data.stale_after)
        self.stage = FeatureStage(build_source(settings), calc, policy)

    def compute(
        self, symbols: list[str], end: pd.Timestamp | None = None, candles: dict[str, pd.DataFrame] | None = None
    ) -> dict[str, FeatureResult]:
        t0 = time.perf_counter()
        out = self.stage.compute(symbols, end=end, candles=candles)
        metrics.stage_latency().observe((time.perf_counter() - t0) * 1e3, tags={"stage": "features"})
        for r in out.values():
            if r.error:
                metrics.failures().inc(tags={"stage": "features"})
        metrics.stale_symbols().set(sum(1 for r in out.values() if r.error and "stale" in r.error))
        return out


class MLManagerConfig(BaseModel):
    """MLManager's ``user_config``: applied in ``reconfigure`` without a redeploy."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = Field(None, description="bundle directory; None keeps the configured one")
    max_batch_size: int = Field(128, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=1.0)


@serve.deployment(name="MLManager", ray_actor_options={"num_cpus": 1, "num_gpus": 0}, max_ongoing_requests=512)
class MLManager:
    """Holds the compiled UnifiedPatchTST. Concurrent per-symbol calls of one tick are batched
    into one forward pass by ``@serve.batch``; ``reconfigure`` hot-swaps the bundle: the old
    model serves until the new one is loaded and verified, and a bad bundle is refused."""

    def __init__(self, config_path: str | None = None) -> None:
        self.settings = load_settings(config_path)
        self.engine = self._load(self.settings.model_path)
        self.last_reload_error: str | None = None

    def _load(self, path: Path) -> InferenceEngine:
        m = self.settings.model
        engine = InferenceEngine.from_bundle(
            path, device=m.device, compile=m.compile, batch_buckets=tuple(m.batch_buckets)
        )
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
        if path.resolve() == Path(self.engine.bundle_path).resolve():
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
        symbols = [s for s, _ in items]
        values = np.stack([w for _, w in items]).astype(np.float32, copy=False)
        # the forward pass is CPU/GPU bound: run it off the replica's event loop
        outputs, errors = await asyncio.to_thread(self.engine.predict, values, symbols)
        metrics.stage_latency().observe((time.perf_counter() - t0) * 1e3, tags={"stage": "model"})
        return [(outputs.get(s), errors.get(s)) for s in symbols]

    async def predict(self, symbol: str, window: np.ndarray) -> tuple[ModelOutput | None, str | None]:
        return await self.predict_batch((symbol, window))

    def info(self) -> dict:
        e = self.engine
        return {
            "model_version": e.model_version,
            "spec_hash": e.spec_hash,
            "device": str(e.device),
            "compiled": e.compiled,
            "compile_seconds": e.compile_seconds,
            "bundle_path": str(e.bundle_path),
            "last_reload_error": self.last_reload_error,
        }
