"""Prediction log on real SQLite and PostgreSQL: idempotent rows, queued while the DB is down,
outcomes filled once each horizon passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from common.db import make_engine
from model.contract import RAW_SIZE, ModelOutput, TargetSpec
from signals.config import SignalConfig
from signals.prediction_log import PredictionLog, summarize_features
from signals.processor import MLSignalProcessor

pytestmark = pytest.mark.services
SPEC = TargetSpec(bar_minutes=15, horizons=(1, 4, 16, 48))
T0 = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def engine(schema_engine):
    return schema_engine


def _prediction(bar: datetime, nan: bool = False):
    raw = np.linspace(-1, 1, RAW_SIZE)
    if nan:
        raw[3] = np.nan
    out = ModelOutput.from_raw(raw)
    sig = MLSignalProcessor(SignalConfig(), SPEC).process(
        "BTCUSDT", out, entry=100.0, atr=0.4, bar_time=bar, model_version="v1", feature_spec_hash="fh")
    return sig, out


def _candles(minutes: int, start: datetime = T0) -> pd.DataFrame:
    idx = pd.date_range(start, periods=minutes, freq="1min", tz="UTC", name="timestamp")
    close = 100.0 * (1.0 + 0.0001 * np.arange(minutes))  # +1 bp per minute
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0},
                        index=idx)


def test_rows_are_unique_and_carry_everything(engine):
    plog = PredictionLog(engine)
    names = ["mom_rsi_14", "vol_atr_14", "trend_adx_14", "x"]
    summary = summarize_features(np.array([55.0, 1.2, np.nan, 3.0]), names, "fh")
    assert summary["nan_count"] == 1 and summary["key"]["mom_rsi_14"] == 55.0 and summary["max"] == 55.0
    sig, out = _prediction(T0)
    assert plog.record(sig, output=out, target_spec=SPEC, feature_summary=summary,
                       latencies_ms={"features": 3.2, "model": 11.0})
    assert plog.record(sig, output=out, target_spec=SPEC, feature_summary=summary, latencies_ms={})
    bad_sig, bad_out = _prediction(T0 + timedelta(minutes=1), nan=True)
    plog.record(bad_sig, output=bad_out, target_spec=SPEC, feature_summary=summary, latencies_ms={})
    rows = plog.rows("BTCUSDT")
    assert len(rows) == 2
    r = rows[0]
    assert r.signal["id"] == sig.id and r.latencies_ms["model"] == 11.0
    assert r.contract["return_h1"] == pytest.approx(out.returns[0]) and len(r.raw_outputs) == RAW_SIZE
    assert rows[1].contract is None and rows[1].raw_outputs[3] is None and rows[1].direction == "NEUTRAL"


def test_database_down_queues_then_writes(engine):
    plog = PredictionLog(engine)
    live = plog.engine
    plog.engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    for i in range(3):
        sig, out = _prediction(T0 + timedelta(minutes=i))
        assert not plog.record(sig, output=out, target_spec=SPEC, feature_summary={}, latencies_ms={})
    assert plog.queued == 3
    plog.engine = live
    assert plog.flush() and plog.queued == 0
    assert [r.bar_time.replace(tzinfo=UTC) for r in plog.rows()] == [T0 + timedelta(minutes=i) for i in range(3)]


def test_rows_spooled_on_disk_survive_a_crash_and_drain_in_order(engine, tmp_path):
    """Database down: rows go to the spool file; the process 'crashes' (a new PredictionLog on
    the same file); the database answers again: every row is there, oldest first, once."""
    spool = str(tmp_path / "spool" / "plog.db")
    down = PredictionLog(make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none"), spool)
    for i in range(5):
        sig, out = _prediction(T0 + timedelta(minutes=i))
        assert not down.record(sig, output=out, target_spec=SPEC, feature_summary={}, latencies_ms={"m": 1.0})
    assert down.queued == 5
    down.spool.close()
    del down  # nothing of it survives but the file
    after = PredictionLog(engine, spool)
    assert after.queued == 5
    assert after.flush() and after.queued == 0
    rows = after.rows()
    assert [r.bar_time.replace(tzinfo=UTC) for r in rows] == [T0 + timedelta(minutes=i) for i in range(5)]
    assert rows[0].latencies_ms == {"m": 1.0} and rows[0].signal["symbol"] == "BTCUSDT"
    sig, out = _prediction(T0)  # a repeat (a crash between insert and spool delete) is ignored
    after.spool.push({**_spool_doc(after, sig, out)})
    assert after.flush() and len(after.rows()) == 5


def _spool_doc(plog: PredictionLog, sig, out) -> dict:
    """What record() spools for (sig, out), captured with the database down."""
    probe = PredictionLog(make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none"))
    probe.record(sig, output=out, target_spec=SPEC, feature_summary={}, latencies_ms={})
    return probe.spool.peek(1)[0][1]


def test_spool_is_bounded_and_drops_the_oldest(tmp_path):
    plog = PredictionLog(make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none"),
                         str(tmp_path / "s.db"), max_spool=3)
    for i in range(5):
        sig, out = _prediction(T0 + timedelta(minutes=i))
        plog.record(sig, output=out, target_spec=SPEC, feature_summary={}, latencies_ms={})
    assert plog.queued == 3 and plog.dropped == 2
    assert [d["bar_time"] for _, d in plog.spool.peek()] == [(T0 + timedelta(minutes=i)).isoformat() for i in (2, 3, 4)]


def test_fill_outcomes_reads_once_and_writes_once_whatever_the_rows(engine):
    """Per minute the filler sees every incomplete row of the last 12.5 h (72,000 at 100 symbols):
    one SELECT of the needed columns and one executemany UPDATE, not an ORM session that autoflushed
    all those rows before each of its one-UPDATE-per-row statements (quadratic in the rows)."""
    from sqlalchemy import event

    plog = PredictionLog(engine)
    for i in range(40):
        sig, out = _prediction(T0 + timedelta(minutes=i))
        plog.record(sig, output=out, target_spec=SPEC, feature_summary={}, latencies_ms={})
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert plog.fill_outcomes({"BTCUSDT": _candles(100)}) == 40  # 15 and 60 minutes have passed for all 40
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert seen.count("SELECT") == 1 and seen.count("UPDATE") == 1, seen
    rows = plog.rows()
    assert len(rows) == 40 and all(set(r.outcomes) == {"h1", "h4"} for r in rows)
    assert [r.outcomes["h1"]["minutes"] for r in rows] == [15] * 40 and not any(r.outcomes_complete for r in rows)


def test_fill_outcomes_once_each_horizon_passed(engine):
    plog = PredictionLog(engine)
    sig, out = _prediction(T0)
    plog.record(sig, output=out, target_spec=SPEC, feature_summary={}, latencies_ms={})
    assert plog.fill_outcomes({"BTCUSDT": _candles(100)}) == 1  # 15 and 60 minutes have passed
    row = plog.rows()[0]
    assert set(row.outcomes) == {"h1", "h4"} and not row.outcomes_complete
    assert row.outcomes["h1"]["return"] == pytest.approx(1.0015 / 1.0 - 1)
    assert row.outcomes["h1"]["direction"] == "LONG"  # 15 bp > 10 bp flat band
    assert plog.fill_outcomes({"BTCUSDT": _candles(100)}) == 0  # nothing new
    assert plog.fill_outcomes({"BTCUSDT": _candles(800)}) == 1
    row = plog.rows()[0]
    assert row.outcomes_complete and row.outcomes["h48"]["minutes"] == 720
