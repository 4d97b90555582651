"""Custom Serve metrics (exported to Prometheus and shown in the Ray dashboard).

Created lazily, once per replica process, so importing this module outside a replica is free.
"""

from __future__ import annotations

from functools import cache

from ray.serve import metrics

_LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


@cache
def ticks() -> metrics.Counter:
    return metrics.Counter("mlsignals_ticks_total", "Scheduler ticks completed", tag_keys=("outcome",))


@cache
def signals() -> metrics.Counter:
    return metrics.Counter("mlsignals_signals_total", "Signals produced", tag_keys=("direction",))


@cache
def stage_latency() -> metrics.Histogram:
    return metrics.Histogram(
        "mlsignals_stage_latency_ms", "Latency of one pipeline stage", boundaries=_LATENCY_MS, tag_keys=("stage",)
    )


@cache
def failures() -> metrics.Counter:
    return metrics.Counter("mlsignals_failures_total", "Per-symbol failures by stage", tag_keys=("stage",))


@cache
def stale_symbols() -> metrics.Gauge:
    return metrics.Gauge("mlsignals_stale_symbols", "Symbols without fresh candles in the last tick")


@cache
def skipped_minutes() -> metrics.Counter:
    return metrics.Counter("mlsignals_skipped_minutes_total", "Missed minutes beyond the catch-up limit")


@cache
def redis_restarts() -> metrics.Gauge:
    return metrics.Gauge("mlsignals_embedded_redis_restarts_total",
                         "Times the embedded redis-server died and was started again (by any owner)")


@cache
def log_spool_rows() -> metrics.Gauge:
    return metrics.Gauge("mlsignals_prediction_log_spool_rows",
                         "Prediction-log rows waiting on local disk for the database")


@cache
def outbox_pending() -> metrics.Gauge:
    return metrics.Gauge("mlsignals_outbox_pending", "Signals in the outbox not yet delivered onto Redis")


@cache
def stream_clients() -> metrics.Gauge:
    return metrics.Gauge("mlsignals_stream_clients", "Open GET /signals/stream connections of this ingress replica")


@cache
def stream_dropped() -> metrics.Counter:
    return metrics.Counter("mlsignals_stream_dropped_total", "Stream clients dropped for falling too far behind")
