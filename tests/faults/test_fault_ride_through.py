"""What the running service rides through on its own, with real processes (issue 15):

(a) an external redis-server SIGKILLed for at least three *scheduled* minutes (the loop, not
    POST /tick), the scheduler replica killed in the middle of the outage, then Redis back:
    every symbol of every minute is on the stream once, in order, and nothing restarted the
    server the service does not own;
(d) the database stopped, the replica holding the prediction log killed while rows wait for
    it, the database back: every row is in the log;
and properties over /predict's body and the path parameters, sent to the real app over HTTP:
no 5xx, whatever the value.

The scheduler ticks for real, once a minute, so this module takes about 6-7 minutes.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import uuid

import httpx
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from signals.config import DeliveryConfig
from tests.bundles import make_test_bundle
from tests.conftest import CANDLE_DIR, PG_ADMIN_URL, free_port
from tests.faults.servers import RedisServer, db_rows, kill_replica, wait_replaced
from tests.serve.test_http_inputs import JSON, TIMESTAMPS

pytestmark = [pytest.mark.ray, pytest.mark.services, pytest.mark.slow]
APP = "mlsignals-ride"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]


@pytest.fixture(scope="module")
def app(ray_session, shipped_candles, tmp_path_factory):
    from ray import serve

    from serve_app.app import build_app

    tmp = tmp_path_factory.mktemp("ride")
    rs = RedisServer(free_port(), tmp)
    rs.start()
    db = f"mlsignals_r_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    pg_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"
    prefix = f"ride:{uuid.uuid4().hex[:8]}"
    cfg = {
        "symbols": SYMBOLS,
        "data": {"source": "replay", "replay_dir": str(CANDLE_DIR / "bybit_linear_2025-06"), "replay_history": 2000},
        "model": {"path": str(make_test_bundle(tmp / "tiny", shipped_candles)), "compile": False},
        "delivery": {"prefix": prefix, "retry_base_s": 0.05, "retry_cap_s": 0.5, "poll_interval_s": 0.1},
        "scheduler": {"enabled": True, "delay_seconds": 1, "symbol_timeout_s": 10, "catch_up": True},
        "var_dir": str(tmp / "var"),  # the ledger's local file and the log's spool
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {"REDIS_URL": f"redis://127.0.0.1:{rs.port}/0", "DATABASE_URL": pg_url, "OMP_NUM_THREADS": "1"}
    port = free_port()
    serve.shutdown()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"config": str(tmp / "config.yaml"), "env": env}), name=APP, route_prefix="/")
    info = {"url": f"http://127.0.0.1:{port}", "redis": rs, "db": db, "admin": admin, "pg_url": pg_url,
            "delivery": DeliveryConfig(prefix=prefix)}
    try:
        yield info
    finally:
        serve.shutdown()
        if rs.proc.poll() is None:
            rs.kill()
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true'))
            c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


# ----------------------------------------------------------------------------- helpers
def ready(app) -> dict:
    return httpx.get(app["url"] + "/readyz", timeout=60).json()


def last_completed(app) -> str | None:
    try:
        return ready(app)["scheduler"]["last_completed"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def wait_completed_past(app, minute: str | None, timeout: float = 100) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = last_completed(app)
        if done is not None and (minute is None or done > minute):
            return done
        time.sleep(0.5)
    raise AssertionError(f"no scheduled minute completed after {minute} within {timeout}s")










def port_refuses(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


# ----------------------------------------------------------------------------- tests
HTTP = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@HTTP
@given(body=JSON | st.fixed_dictionaries({"symbol": JSON}) | st.fixed_dictionaries(
    {"symbol": st.sampled_from(SYMBOLS), "candles": st.lists(st.fixed_dictionaries({
        "timestamp": TIMESTAMPS | JSON, "open": JSON, "high": st.floats(), "low": st.floats(),
        "close": st.floats(), "volume": st.floats()}), max_size=3)}))
def test_any_predict_body_gets_no_5xx(app, body):
    raw = json.dumps(body)  # NaN/Infinity tokens and huge integers as Python's json reads them
    r = httpx.post(app["url"] + "/predict", content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code < 500, (raw[:300], r.status_code, r.text[:300])
    if r.status_code == 422:
        detail = r.json()["detail"]
        assert detail and (isinstance(detail, str) or all(d["loc"] and d["msg"] for d in detail))


@HTTP
@given(symbol=st.text(max_size=60) | st.sampled_from(["\x00", "BTC\x00USDT", "x" * 5000, "..", "%00", "btcusdt"]))
def test_any_path_symbol_gets_no_5xx_and_a_bad_one_a_422(app, symbol):
    r = httpx.get(app["url"] + "/signals/latest/" + urllib.parse.quote(symbol, safe=""), timeout=60)
    assert r.status_code < 500, (symbol[:80], r.status_code, r.text[:300])
    bad = not (2 <= len(symbol) <= 20 and symbol.isascii() and symbol.isalnum())
    if bad and symbol not in ("", ".", "..") and "/" not in symbol:
        assert r.status_code == 422, (symbol[:80], r.status_code, r.text[:300])
        assert "symbol" in r.json()["detail"][0]["loc"]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(column=st.sampled_from(["open", "high", "low", "close", "volume"]), row=st.integers(0, 699),
       value=st.sampled_from([1e308, -1e308, 5e-324, 0.0, -1.0, 1e-300, 1.7976931348623157e308]))
def test_extreme_numbers_in_real_candles_get_no_5xx(app, shipped_candles, column, row, value):
    """Enough real candles to reach the feature and model stages, with one extreme value."""
    def rows(sym: str) -> list[dict]:
        df = shipped_candles[sym].iloc[-700:]
        out = [{"timestamp": int(t.value // 1_000_000), **{c: float(df.at[t, c]) for c in df.columns}} for t in df.index]
        return out

    eth, btc = rows("ETHUSDT"), rows("BTCUSDT")
    eth[row][column] = value
    r = httpx.post(app["url"] + "/predict", json={"symbol": "ETHUSDT", "candles": eth, "btc_candles": btc}, timeout=60)
    assert r.status_code in (200, 422), (column, row, value, r.status_code, r.text[:300])
    if r.status_code == 200:
        assert r.json()["symbol"] == "ETHUSDT"


def test_database_down_log_replica_killed_every_row_kept(app):
    """(d) Rows written while the database is down wait in the spool file; the replica that
    holds them is killed; its successor writes them when the database is back."""
    before = wait_completed_past(app, None)
    with app["admin"].connect() as c:
        c.execute(text(f'ALTER DATABASE "{app["db"]}" ALLOW_CONNECTIONS false'))
        c.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{app['db']}'"))
    try:
        down_minute = wait_completed_past(app, before)  # a scheduled tick with the database down
        deadline = time.monotonic() + 30
        ids: set[str] = set()
        while time.monotonic() < deadline and len(ids) < len(SYMBOLS):  # sent straight to Redis
            ids = {e["id"] for _, f in app["redis"].client().xrange(app["delivery"].stream_key)
                   if (e := json.loads(f["signal"]))["bar_time"][:16] == down_minute[:16]}
            time.sleep(0.2)
        assert len(ids) == len(SYMBOLS), ids
        spooled = ready(app)["delivery"]["log_spool_rows"]
        assert spooled >= len(SYMBOLS), ready(app)["delivery"]
        old = kill_replica(APP, "SignalProcessor")
        wait_replaced(APP, "SignalProcessor", old)  # it starts while the database is still down
        after_restart = ready(app)["delivery"]["log_spool_rows"]
        assert after_restart >= spooled  # the new replica found the file the dead one left
    finally:
        with app["admin"].connect() as c:
            c.execute(text(f'ALTER DATABASE "{app["db"]}" ALLOW_CONNECTIONS true'))
    deadline = time.monotonic() + 60
    missing = ids
    while time.monotonic() < deadline and missing:
        missing = ids - {r[0] for r in db_rows(app, "SELECT signal_id FROM prediction_log")}
        time.sleep(1)
    print(f"database down over minute {down_minute}: {spooled} log rows spooled, replica killed, "
          f"{after_restart} found by its successor; missing after the database returned: {len(missing)}")
    assert not missing, missing
    assert ready(app)["delivery"]["log_spool_rows"] == 0


def test_redis_down_three_scheduled_minutes_every_signal_once_in_order(app):
    """(a) Three scheduled minutes or more without Redis, the scheduler replica killed in the
    middle: every minute's signals reach the outbox, then the stream once each, in order."""
    start = wait_completed_past(app, None)
    rs: RedisServer = app["redis"]
    rs.kill()
    killed_at = time.time()
    try:
        m1 = wait_completed_past(app, start, timeout=130)  # the loop ticks without Redis
        old = kill_replica(APP, "SignalScheduler")  # ... and a scheduler restarted during the outage
        wait_replaced(APP, "SignalScheduler", old)
        m = m1
        while pd.Timestamp(m) < pd.Timestamp(start) + pd.Timedelta(minutes=3):
            m = wait_completed_past(app, m, timeout=130)
        assert ready(app)["redis"] is False
        assert port_refuses(rs.port)  # nothing restarted a server the service does not own
        pending = db_rows(app, "SELECT count(*) FROM signal_outbox WHERE delivered_at IS NULL")[0][0]
        assert pending >= 3 * len(SYMBOLS), pending
    finally:
        down_s = time.time() - killed_at
        rs.start()
    deadline = time.monotonic() + 60
    while db_rows(app, "SELECT count(*) FROM signal_outbox WHERE delivered_at IS NULL")[0][0]:
        assert time.monotonic() < deadline, "outbox not drained after Redis returned"
        time.sleep(0.5)
    last = pd.Timestamp(last_completed(app))
    entries = [json.loads(f["signal"]) for _, f in rs.client().xrange(app["delivery"].stream_key)]
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)), "a signal delivered twice"
    wanted = pd.date_range(pd.Timestamp(start) + pd.Timedelta(minutes=1), last, freq="1min")
    for sym in SYMBOLS:
        bars = [pd.Timestamp(e["bar_time"]) for e in entries if e["symbol"] == sym]
        assert bars == sorted(bars), f"{sym}: out of order"
        assert len(bars) == len(set(bars)), f"{sym}: a minute twice"
        missing = sorted(set(wanted) - set(bars))
        assert not missing, f"{sym}: minutes missing from the stream: {missing}"
    print(f"Redis down {down_s:.0f}s, scheduler killed during it: minutes {wanted[0]} .. {wanted[-1]} "
          f"({len(wanted)}) x {len(SYMBOLS)} symbols on the stream once each, in order; {len(ids)} entries")
