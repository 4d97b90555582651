"""Paper outcomes, the `signals tail` consumer against the real Redis, and the committed schema."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.db import make_engine
from mlsignals.cli import main
from signals.config import DeliveryConfig
from signals.outbox import Outbox
from signals.paper import PaperOutcome, evaluate_signal
from signals.publisher import OutboxRelay
from signals.redis_conn import connect_redis
from signals.schema import Direction, Signal, signal_id, signal_json_schema

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "data/candles/binance_spot_2024-10/BTCUSDT_1m.csv.gz"
T0 = datetime(2025, 6, 1, tzinfo=UTC)


def _sig(direction: Direction, entry: float, sl: float, tp: float, bar=T0, minutes: int = 10) -> Signal:
    return Signal(
        id=signal_id("BTCUSDT", bar, "v1"), symbol="BTCUSDT", direction=direction, confidence=0.6,
        strength=0.5, entry=entry, stop_loss=sl, take_profit=tp, horizon="15m", bar_time=bar,
        created_at=bar, expires_at=bar + timedelta(minutes=1 + minutes), model_version="v1",
        feature_spec_hash="fh",
    )


def _frame(highs, lows, closes, start=T0) -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(highs), freq="1min", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": closes, "high": highs, "low": lows, "close": closes, "volume": 1.0}, index=idx)


def test_paper_outcomes_tp_sl_both_expired_open():
    # minute 0 is the signal bar itself and must be ignored even though it touches both levels
    c = _frame([200, 100.5, 101.2, 100], [50, 99.5, 100.0, 100], [100, 100, 101, 100])
    long = _sig(Direction.LONG, 100, 99, 101)
    res = evaluate_signal(long, c)
    assert (res.outcome, res.exit_price, res.exit_time) == ("TP", 101, T0 + timedelta(minutes=3))
    assert res.return_frac == pytest.approx(0.01)
    both = _frame([100, 102, 100], [100, 98, 100], [100, 100, 100])
    assert evaluate_signal(long, both).outcome == "SL"  # both in one candle -> the worse
    short = _sig(Direction.SHORT, 100, 101, 99)
    res = evaluate_signal(short, _frame([100, 101.5], [100, 99.5], [100, 100]))
    assert res.outcome == "SL" and res.return_frac == pytest.approx(-0.01)
    quiet = _frame([100.2] * 12, [99.8] * 12, [100.1] * 12)
    res = evaluate_signal(long, quiet)
    assert res.outcome == "EXPIRED" and res.exit_time == long.expires_at
    assert evaluate_signal(long, quiet.iloc[:5]) is None  # candles end before expiry: still open


def test_committed_schema_matches_the_model(capsys):
    assert json.loads((ROOT / "docs/signal_schema.json").read_text()) == signal_json_schema()
    main(["signals", "schema"])
    assert json.loads(capsys.readouterr().out)["properties"]["direction"]


@pytest.mark.services
def test_tail_consumes_acks_and_paper_tracks_real_candles(tmp_path, capsys):
    # 3000 real minutes of BTCUSDT; signals at bar 100..104 with +-0.2% levels, 60-minute expiry
    with gzip.open(REAL, "rt") as f:
        lines = f.read().splitlines()[:3001]
    csv = tmp_path / "BTCUSDT_1m.csv"
    csv.write_text("\n".join(lines) + "\n")
    df = pd.read_csv(csv)
    times = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    signals = []
    for i in range(100, 105):
        bar = times.iloc[i].to_pydatetime()
        entry = float(df["close"].iloc[i])
        d = Direction.LONG if i % 2 else Direction.SHORT
        sl, tp = (entry * 0.998, entry * 1.002) if d is Direction.LONG else (entry * 1.002, entry * 0.998)
        signals.append(_sig(d, entry, sl, tp, bar=bar, minutes=60))
    cfg = DeliveryConfig(prefix=f"tail:{uuid.uuid4().hex[:8]}")
    client = connect_redis("redis://127.0.0.1:6379/0")
    db = f"sqlite:///{tmp_path / 'paper.db'}"
    outbox = Outbox(make_engine(db))
    for s in signals:
        outbox.add(s)
    try:
        assert OutboxRelay(outbox, client, cfg).relay_once().delivered == 5
        common = ["signals", "tail", "--json", "--block-ms", "200", "--redis-url", "redis://127.0.0.1:6379/0",
                  "--database-url", db, "--prefix", cfg.prefix]
        main([*common, "--paper", "--candles", str(csv), "--count", "5"])
        out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [o["id"] for o in out if "id" in o] == [s.id for s in signals]
        paper = {o["signal_id"]: o for o in out if "paper" in o}
        assert set(paper) == {s.id for s in signals}
        pending = client.xpending(cfg.stream_key, "trading-engine")
        assert pending["pending"] == 0  # all acknowledged
        main([*common, "--exit-when-idle"])  # nothing new: returns at once
        assert not [line for line in capsys.readouterr().out.splitlines() if '"id"' in line]
    finally:
        keys = list(client.scan_iter(match=f"{cfg.prefix}:*"))
        if keys:
            client.delete(*keys)
    from sqlmodel import Session, select

    with Session(make_engine(db)) as s:
        rows = s.exec(select(PaperOutcome)).all()
    assert len(rows) == 5 and {r.outcome for r in rows} <= {"TP", "SL", "EXPIRED"}
    # Check one outcome by hand against the candles.
    first = signals[0]
    frame = df.set_index(times)
    window = frame.loc[(frame.index > first.bar_time) & (frame.index < first.expires_at)]
    hit_sl = np.flatnonzero(window["high"].to_numpy() >= first.stop_loss)
    hit_tp = np.flatnonzero(window["low"].to_numpy() <= first.take_profit)
    firsts = [a[0] for a in (hit_sl, hit_tp) if len(a)]
    expected = "EXPIRED" if not firsts else ("SL" if len(hit_sl) and hit_sl[0] == min(firsts) else "TP")
    assert paper[first.id]["paper"] == expected
