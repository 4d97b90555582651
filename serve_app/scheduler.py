"""SignalScheduler: the cron of the service, a single-replica Serve deployment.

Why a Serve-managed deployment and not a named detached actor: its lifetime is the
application's (``serve shutdown`` or a redeploy removes it; no orphan keeps firing into a stale
app), the Serve controller restarts it when it dies or its health check fails, and it takes
its settings the same way as the other deployments. Restarts are safe because which minutes
ran lives in the database (mlsignals/ticks.py; a local file while the database is down), not in
the replica, and not in Redis: the clock keeps going through a Redis outage, its signals wait
in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import pandas as pd
from ray import serve
from ray.serve.handle import DeploymentHandle

from mlsignals.pipeline import FeatureResult
from mlsignals.settings import load_settings
from mlsignals.shards import failed_shard, shard_symbols
from mlsignals.ticks import TickLedger, plan_ticks, seconds_until_next
from model.contract import ModelOutput
from serve_app import metrics
from serve_app.model_meta import ModelMetaCache

log = logging.getLogger("ray.serve")


@dataclass
class TickReport:
    tick_id: str
    minute: str
    signals: dict[str, str] = field(default_factory=dict)  # symbol -> direction
    errors: dict[str, str] = field(default_factory=dict)  # symbol -> reason (still a NEUTRAL signal)
    seconds: float = 0.0
    started_at: float = 0.0  # wall clock (epoch seconds): when the tick began, to place it in logs
    # one plain dict per shard (JSON as is, for /readyz): index, symbols (count), replica and node
    # that computed its features (None when the call failed), started_s (sent, seconds after the
    # tick began), seconds (the feature call seen from here: queueing and transfer included),
    # replica_seconds (its compute inside the replica), model_seconds, signal_seconds, error (why
    # the shard's features failed, or None)
    shards: list[dict] = field(default_factory=list)


@serve.deployment(
    name="SignalScheduler", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4,
    health_check_period_s=10,
)
class SignalScheduler:
    async def __init__(
        self, features: DeploymentHandle, ml: DeploymentHandle, signals: DeploymentHandle,
        config_path: str | None = None,
    ) -> None:
        from mlsignals import factories

        self.features, self.ml, self.signals = features, ml, signals
        self.settings = load_settings(config_path)
        self.symbols = self.settings.symbols
        self.cfg = self.settings.scheduler
        self.ledger: TickLedger = factories.tick_ledger(self.settings)
        self._meta = ModelMetaCache(ml)
        self._lock = asyncio.Lock()  # one tick at a time: a slow tick delays, never overlaps, the next
        self.last_report: TickReport | None = None
        self._task: asyncio.Task | None = None
        if self.cfg.enabled:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler-loop")

    async def _loop(self) -> None:
        # The first tick waits for the model to be loaded (and compiled): at start-up every
        # replica initialises at once, and a tick racing them would only time out.
        while True:
            try:
                await self.ml.info.remote()
                break
            except Exception as exc:
                log.warning("scheduler: MLManager not ready (%s); retrying", type(exc).__name__)
                await asyncio.sleep(2)
        first = True
        while True:
            if not first:  # at start-up run what is due at once: signals within the first minute
                await asyncio.sleep(seconds_until_next(pd.Timestamp.now(tz="UTC"), self.cfg.delay_seconds))
            first = False
            try:
                await self.run_due()
            except Exception:  # a failed tick is logged and counted; the clock keeps going
                log.exception("scheduler tick failed")
                metrics.ticks().inc(tags={"outcome": "failed"})

    async def run_due(self) -> list[TickReport]:
        # ledger calls off the event loop: a database that hangs must not freeze the replica
        last = await asyncio.to_thread(self.ledger.last_completed)
        plan = plan_ticks(pd.Timestamp.now(tz="UTC"), self.cfg.delay_seconds, last, self.cfg.catch_up,
                          self.cfg.max_catch_up)
        if plan.skipped:
            log.warning("scheduler: %d missed minute(s) beyond the catch-up limit were skipped", plan.skipped)
            metrics.skipped_minutes().inc(plan.skipped)
        reports = []
        for minute in plan.run:
            if await asyncio.to_thread(self.ledger.claim, minute):
                reports.append(await self.tick(minute))
                await asyncio.to_thread(self.ledger.complete, minute)
        return reports

    async def tick_now(self) -> dict:
        """Run the pipeline for the latest closed minute now (operators, tests). Repeating a
        minute is harmless: signal ids are deterministic, so delivery and the log ignore repeats."""
        minute = plan_ticks(pd.Timestamp.now(tz="UTC"), 0, None, False).run[0]
        self._try_ledger(self.ledger.claim, minute)
        report = await self.tick(minute)
        self._try_ledger(self.ledger.complete, minute)
        return report.__dict__

    @staticmethod
    def _try_ledger(op, minute: pd.Timestamp) -> None:
        """"Tick now" must work whatever the ledger says; without the ledger entry the
        scheduler's catch-up runs the minute again, harmlessly (same ids)."""
        try:
            op(minute)
        except Exception as exc:
            log.warning("tick now: tick ledger unusable (%s); running the tick anyway", type(exc).__name__)

    async def _predict(self, fr: FeatureResult, tick_id: str) -> tuple[ModelOutput | None, str | None, str | None]:
        """(output, error, model_version) of one symbol, bounded by the per-symbol timeout: a slow
        or dead model replica makes this symbol NEUTRAL-with-reason, never the whole tick."""
        if fr.window is None:
            return None, None, None
        try:
            async with asyncio.timeout(self.cfg.symbol_timeout_s):
                t0 = time.perf_counter()
                output, error, version = await self.ml.predict.remote(fr.symbol, fr.window)
                fr.latency_ms["model_ms"] = (time.perf_counter() - t0) * 1e3
                return output, error, version
        except Exception as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            metrics.failures().inc(tags={"stage": "model"})
            return None, f"{fr.symbol}: {reason} (tick {tick_id})", None

    async def _signals(self, items: list[tuple[FeatureResult, ModelOutput | None, str | None]],
                       version: str | None, tick_id: str) -> list[str]:
        """One SignalProcessor call for the symbols whose outputs came from ``version``."""
        try:
            async with asyncio.timeout(self.cfg.symbol_timeout_s):
                meta = await self._meta.get(version)
                signals = await self.signals.handle_many.remote(items, meta)
            return [sig.direction.value for sig in signals]
        except Exception as exc:
            log.error("tick %s: signal stage failed for %d symbol(s) (%s)", tick_id, len(items), exc)
            metrics.failures().inc(len(items), tags={"stage": "signal"})
            return ["FAILED"] * len(items)

    async def _shard(self, index: int, symbols: list[str], minute: pd.Timestamp, tick_id: str,
                     tick_t0: float) -> tuple[dict, dict[str, str], dict[str, str]]:
        """One shard through the three stages: (shard report, symbol -> direction, symbol ->
        reason). A failed feature call (replica killed mid-tick, timeout) makes this shard's
        symbols NEUTRAL-with-reason signals; the other shards never see it."""
        t0 = time.perf_counter()
        info: dict = {"index": index, "symbols": len(symbols), "replica": None, "node": None,
                      "started_s": round(t0 - tick_t0, 4), "seconds": 0.0, "replica_seconds": None,
                      "model_seconds": 0.0, "signal_seconds": 0.0, "error": None}
        try:
            async with asyncio.timeout(self.cfg.symbol_timeout_s):
                results, served = await self.features.compute_shard.remote(symbols, end=minute)
            info.update(replica=served["replica"], node=served["node"], replica_seconds=served["seconds"])
        except Exception as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            reason = reason.strip().splitlines()[0][:300]  # an actor's death notice runs to many lines
            info["error"] = reason
            log.error("tick %s: feature shard %d (%d symbols) failed: %s", tick_id, index, len(symbols), reason)
            metrics.failures().inc(len(symbols), tags={"stage": "features"})
            results = failed_shard(symbols, minute, f"feature shard {index} failed: {reason} (tick {tick_id})")
        t1 = time.perf_counter()
        preds = await asyncio.gather(*(self._predict(results[s], tick_id) for s in symbols))
        t2 = time.perf_counter()
        # group by model version (a hot swap may land mid-tick): each group gets its own meta
        served_version = next((v for _, _, v in preds if v), None)
        groups: dict[str | None, list[int]] = {}
        for i, (_, _, version) in enumerate(preds):
            groups.setdefault(version or served_version, []).append(i)
        directions: dict[int, str] = {}
        for version, idx in groups.items():
            items = [(results[symbols[i]], preds[i][0], preds[i][1]) for i in idx]
            directions.update(zip(idx, await self._signals(items, version, tick_id), strict=True))
        info.update(seconds=round(t1 - t0, 4), model_seconds=round(t2 - t1, 4),
                    signal_seconds=round(time.perf_counter() - t2, 4))
        errors = {s: results[s].error or preds[i][1] for i, s in enumerate(symbols) if results[s].error or preds[i][1]}
        return info, {s: directions[i] for i, s in enumerate(symbols)}, errors

    async def tick(self, minute: pd.Timestamp) -> TickReport:
        async with self._lock:
            tick_id = uuid.uuid4().hex[:12]
            t0 = time.perf_counter()
            report = TickReport(tick_id, minute.isoformat(), started_at=time.time())
            shards = shard_symbols(self.symbols, self.cfg.shard_size)
            log.info("tick %s for %s: %d symbols in %d shard(s)", tick_id, minute.isoformat(), len(self.symbols),
                     len(shards))
            # every shard at once: Serve spreads the feature calls over the FeatureCalculator
            # replicas, and MLManager's @serve.batch gathers the model calls of all of them
            done = await asyncio.gather(*(self._shard(i, s, minute, tick_id, t0) for i, s in enumerate(shards)))
            for info, directions, errors in done:
                report.shards.append(info)
                report.signals.update(directions)
                report.errors.update(errors)
            report.seconds = time.perf_counter() - t0
            metrics.ticks().inc(tags={"outcome": "ok"})
            metrics.stale_symbols().set(sum(1 for e in report.errors.values() if "stale data" in e))
            metrics.stage_latency().observe(report.seconds * 1e3, tags={"stage": "tick"})
            log.info("tick %s done in %.2fs: %s; shards: %s", tick_id, report.seconds, report.signals,
                     describe_shards(report.shards))
            self.last_report = report
            return report

    def status(self) -> dict:
        try:
            last = self.ledger.last_completed()
        except Exception as exc:  # readiness must answer whatever the ledger's stores do
            log.warning("scheduler status: ledger unreadable (%s)", type(exc).__name__)
            last = None
        return {
            "enabled": self.cfg.enabled,
            "loop_alive": self._task is not None and not self._task.done(),
            "last_completed": last.isoformat() if last is not None else None,
            "ledger_fallback": self.ledger.using_fallback,
            "last_tick": None if self.last_report is None else self.last_report.__dict__,
        }

    def check_health(self) -> None:
        if self._task is not None and self._task.done():
            raise RuntimeError(f"scheduler loop ended: {self._task.exception() if not self._task.cancelled() else 'cancelled'}")


def describe_shards(shards: list[dict]) -> str:
    """The tick log line's view of the spread: ``#index n=symbols replica@node seconds`` per
    shard (node ids cut to 8 characters; the full ones are in the report)."""
    parts = []
    for sh in shards:
        where = f"FAILED ({sh['error']})" if sh["error"] else f"{sh['replica']}@{(sh['node'] or '?')[:8]}"
        parts.append(f"#{sh['index']} n={sh['symbols']} {where} {sh['seconds']:.2f}s")
    return "; ".join(parts)
