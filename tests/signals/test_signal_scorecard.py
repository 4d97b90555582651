"""The board's scorecard and recent signals from prediction-log rows (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from signals.prediction_log import PredictionLog, PredictionRow
from signals.scorecard import ROUND_TRIP_COST, outcome_at_horizon, recent_signals, scorecard

pytestmark = pytest.mark.services
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def row(symbol: str, minutes_ago: int, direction: str, horizon: str, outcomes: dict | None,
        probs: dict | None = None) -> PredictionRow:
    bar = NOW - timedelta(minutes=minutes_ago)
    sig = {"id": f"{symbol}-{minutes_ago}", "symbol": symbol, "direction": direction, "horizon": horizon,
           "confidence": 0.6, "entry": 100.0, "stop_loss": None, "take_profit": None, "reasons": ["r"],
           "bar_time": bar.isoformat()}
    return PredictionRow(symbol=symbol, bar_time=bar, model_version="m", feature_spec_hash="h",
                         signal_id=sig["id"], direction=direction, feature_summary={}, signal=sig,
                         contract={"direction_h4": probs} if probs else None, latencies_ms={}, target_spec={},
                         outcomes=outcomes, outcomes_complete=False, created_at=bar)


def h4(ret: float, direction: str) -> dict:
    return {"h4": {"return": ret, "direction": direction, "minutes": 60}}


@pytest.fixture
def engine(schema_engine):
    PredictionLog(schema_engine)  # creates the table
    rows = [
        row("BTCUSDT", 120, "LONG", "1h", h4(0.01, "LONG"), {"LONG": 0.72, "SHORT": 0.08, "FLAT": 0.2}),
        row("BTCUSDT", 90, "SHORT", "1h", h4(0.002, "LONG"), {"LONG": 0.35, "SHORT": 0.45, "FLAT": 0.2}),
        row("BTCUSDT", 5, "LONG", "1h", None),  # horizon not passed yet
        row("ETHUSDT", 100, "NEUTRAL", "1h", h4(-0.02, "SHORT"), {"LONG": 0.3, "SHORT": 0.31, "FLAT": 0.39}),
        row("ETHUSDT", 3 * 1440, "SHORT", "1h", h4(-0.004, "SHORT")),  # the week only
        row("ETHUSDT", 10 * 1440, "SHORT", "1h", h4(-0.05, "SHORT")),  # older than a week
    ]
    with Session(schema_engine) as s:
        s.add_all(rows)
        s.commit()
    return schema_engine


def test_outcome_at_the_signals_own_horizon_after_costs():
    long = outcome_at_horizon({"direction": "LONG", "horizon": "1h"}, h4(0.01, "LONG"))
    assert long["net_return"] == pytest.approx(0.01 - ROUND_TRIP_COST) and long["hit"]
    short = outcome_at_horizon({"direction": "SHORT", "horizon": "1h"}, h4(0.0005, "FLAT"))
    assert short["net_return"] == pytest.approx(-0.0005 - ROUND_TRIP_COST) and not short["hit"]
    assert outcome_at_horizon({"direction": "LONG", "horizon": "4h"}, h4(0.01, "LONG")) is None  # not yet
    assert outcome_at_horizon({"direction": "NEUTRAL", "horizon": "1h"}, h4(0.01, "LONG")) is None
    assert abs(ROUND_TRIP_COST - 0.001) < 1e-12  # 4 bps fee + 1 bps slippage, both sides


def test_scorecard_per_symbol_horizon_and_window(engine):
    card = scorecard(engine, NOW)
    day, week = card["windows"]["day"], card["windows"]["week"]
    assert day["published"] == 3 and day["pending"] == 1
    [btc] = day["cells"]
    assert (btc["symbol"], btc["horizon"], btc["n"], btc["hits"]) == ("BTCUSDT", "1h", 2, 1)
    assert btc["mean_net_return"] == pytest.approx(((0.01 - 0.001) + (-0.002 - 0.001)) / 2)
    assert [(c["symbol"], c["n"]) for c in week["cells"]] == [("BTCUSDT", 2), ("ETHUSDT", 1)]
    assert week["total"]["n"] == 3 and week["total"]["hit_rate"] == pytest.approx(2 / 3)


def test_calibration_bins_predicted_against_realised(engine):
    bins = scorecard(engine, NOW)["windows"]["day"]["calibration"]
    by_bin = {round(b["lo"], 1): b for b in bins if b["n"]}
    # 9 probabilities from 3 rows: 0.72 LONG (realised), 0.45 SHORT (no), 0.39 FLAT (no) ...
    assert sum(b["n"] for b in bins) == 9
    assert by_bin[0.7]["n"] == 1 and by_bin[0.7]["realised"] == 1.0
    assert by_bin[0.4]["n"] == 1 and by_bin[0.4]["realised"] == 0.0
    # 0.35 LONG (realised LONG), 0.3 LONG, 0.31 SHORT (realised SHORT), 0.39 FLAT
    assert by_bin[0.3]["n"] == 4 and by_bin[0.3]["realised"] == pytest.approx(2 / 4)
    assert by_bin[0.3]["predicted"] == pytest.approx((0.35 + 0.3 + 0.31 + 0.39) / 4)
    assert by_bin[0.2]["n"] == 2 and by_bin[0.2]["realised"] == 0.0


def test_recent_signals_with_outcomes(engine):
    got = recent_signals(engine, "BTCUSDT", NOW - timedelta(hours=3))
    assert [s["direction"] for s in got] == ["LONG", "SHORT", "LONG"]  # oldest first
    assert got[0]["outcome"]["hit"] is True and got[1]["outcome"]["hit"] is False and got[2]["outcome"] is None
    assert recent_signals(engine, "ETHUSDT", NOW - timedelta(hours=3))[0]["reasons"] == ["r"]
