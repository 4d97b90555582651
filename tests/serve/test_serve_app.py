"""The Ray Serve application end to end: real Redis, real PostgreSQL, real HTTP, replayed real
candles. One Ray instance for the session; one app for the module."""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
import redis
import yaml
from sqlalchemy import text

from common.db import make_engine
from tests.bundles import make_test_bundle
from tests.conftest import CANDLE_DIR, REDIS_TEST_URL, free_port

pytestmark = [pytest.mark.ray, pytest.mark.services, pytest.mark.slow]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]


def write_config(path: Path, bundle: Path, db_url: str, prefix: str, **extra) -> Path:
    cfg = {
        "symbols": SYMBOLS,
        "data": {"source": "replay", "replay_dir": str(CANDLE_DIR / "bybit_linear_2025-06"), "replay_history": 2000},
        "redis_url": REDIS_TEST_URL,
        "database_url": db_url,
        "model": {"path": str(bundle), "compile": False},
        "delivery": {"prefix": prefix},
        "scheduler": {"enabled": False},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def served(ray_session, shipped_candles, tmp_path_factory, request):
    from ray import serve

    from serve_app.app import build_app

    tmp = tmp_path_factory.mktemp("serve")
    bundle = make_test_bundle(tmp / "tiny-a", shipped_candles, seed=0)
    other = make_test_bundle(tmp / "tiny-b", shipped_candles, seed=1)
    pg = request.getfixturevalue("pg_module_url")
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp / "config.yaml", bundle, pg, prefix)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"config": str(cfg)}), name="mlsignals-test", route_prefix="/")
    yield {"url": f"http://127.0.0.1:{port}", "prefix": prefix, "pg": pg, "cfg": cfg, "bundle": bundle,
           "other": other, "tmp": tmp}
    serve.delete("mlsignals-test")
    r = redis.Redis.from_url(REDIS_TEST_URL)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)


@pytest.fixture(scope="module")
def pg_module_url():
    from sqlalchemy import create_engine

    from tests.conftest import PG_ADMIN_URL

    name = f"mlsignals_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def candle_rows(df) -> list[dict]:
    return [{"timestamp": t.isoformat(), **{c: float(v) for c, v in r.items()}} for t, r in df.iterrows()]


def away_from_minute_end(margin_s: float) -> None:
    """Sleep past the next minute boundary when it is less than ``margin_s`` away, so that a tick
    and the requests after it fall in the same minute."""
    left = 60.0 - time.time() % 60.0
    if left < margin_s:
        time.sleep(left + 0.5)


def same_signal(a: dict, b: dict, ignore: tuple[str, ...] = ("created_at",)) -> None:
    """Equal field by field; floats to float32 noise (the model's forward over a batch of several
    and of 1 windows sums in another order: relative 1e-5, absolute 1e-6 - an expected return of
    -0.00225 differed by 1.6e-7 between the two, small against its scale, large relative to it)."""
    assert set(a) == set(b)

    def eq(x, y) -> bool:
        if isinstance(x, float) or isinstance(y, float):
            ok = x is not None and y is not None and math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6)
            assert ok, (x, y)
            return ok
        if isinstance(x, dict):
            return isinstance(y, dict) and set(x) == set(y) and all(eq(x[k], y[k]) for k in x)
        if isinstance(x, list):
            return isinstance(y, list) and len(x) == len(y) and all(eq(u, v) for u, v in zip(x, y, strict=True))
        return x == y

    for k in a:
        if k not in ignore:
            assert eq(a[k], b[k]), (k, a[k], b[k])


def test_predict_is_answered_from_the_tick_of_the_latest_minute(served, shipped_candles):
    """First in the module: nothing has ticked yet. Before the tick /predict computes; after the
    tick of the latest closed minute it returns that tick's signal (the one published, same id,
    what the full path computed) marked ``X-Signal-Source: tick``; what-ifs always compute."""
    from ray import serve

    url = served["url"]
    for _ in range(3):  # a minute boundary fell between the steps: again, in a minute not ticked yet
        away_from_minute_end(10)
        before = httpx.post(url + "/predict", json={"symbol": "ETHUSDT"}, timeout=60)
        assert before.status_code == 200, before.text
        assert before.headers["x-signal-source"] == "computed"  # before any tick of this minute
        report = httpx.post(url + "/tick", timeout=120).json()
        time.sleep(0.3)  # the Ingress asks for the minute's tick signals again after 0.25 s
        after = httpx.post(url + "/predict", json={"symbol": "ETHUSDT"}, timeout=60)
        assert after.status_code == 200, after.text
        if before.json()["bar_time"][:16] == report["minute"][:16] == after.json()["bar_time"][:16]:
            break
    assert after.headers["x-signal-source"] == "tick"
    served_sig = after.json()
    assert served_sig["id"] == before.json()["id"]  # what the full path computed for this minute
    same_signal(served_sig, before.json())
    for sym in SYMBOLS:  # every tracked symbol of the tick
        r = httpx.post(url + "/predict", json={"symbol": sym.lower()}, timeout=60)
        assert r.status_code == 200 and r.headers["x-signal-source"] == "tick", (sym, r.text)
    # the very signal the tick published (its created_at included), once the relay delivered it
    for _ in range(50):
        published = httpx.get(url + "/signals/latest/ETHUSDT", timeout=30)
        if published.status_code == 200 and published.json()["id"] == served_sig["id"]:
            break
        time.sleep(0.2)
    assert published.json() == served_sig

    # an older minute's tick is never current; a minute not ticked yet is not there
    minute = pd.Timestamp(report["minute"])
    signals = serve.get_deployment_handle("SignalProcessor", "mlsignals-test")
    assert signals.ticked.remote(minute).result()["ETHUSDT"].id == served_sig["id"]
    assert signals.ticked.remote(minute + pd.Timedelta(minutes=1)).result() == {}
    assert signals.ticked.remote(minute - pd.Timedelta(minutes=1)).result() == {}

    # what-ifs take the full path: the caller's candles (tracked or untracked symbol)
    eth, btc, ada = (shipped_candles[s].iloc[:700] for s in ("ETHUSDT", "BTCUSDT", "ADAUSDT"))
    for sym, df in (("ETHUSDT", eth), ("ADAUSDT", ada)):
        r = httpx.post(url + "/predict", json={"symbol": sym, "candles": candle_rows(df),
                                               "btc_candles": candle_rows(btc)}, timeout=60)
        assert r.status_code == 200 and r.headers["x-signal-source"] == "computed", (sym, r.text)
        assert r.json()["entry"] == df["close"].iloc[-1]


def test_tick_puts_a_signal_per_symbol_on_the_stream_and_logs_rows(served):
    res = httpx.post(served["url"] + "/tick", timeout=120)
    assert res.status_code == 200, res.text
    report = res.json()
    assert set(report["signals"]) == set(SYMBOLS)
    assert all(d in ("LONG", "SHORT", "NEUTRAL") for d in report["signals"].values()), report
    r = redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    stream = f"{served['prefix']}:signals"
    for _ in range(50):  # the relay delivers asynchronously
        entries = r.xrange(stream)
        if {e[1]["symbol"] for e in entries} >= set(SYMBOLS):
            break
        import time

        time.sleep(0.2)
    assert {e[1]["symbol"] for e in entries} >= set(SYMBOLS)
    sig = json.loads(entries[-1][1]["signal"])
    assert sig["bar_time"].startswith(report["minute"][:16])
    engine = make_engine(served["pg"])
    with engine.connect() as c:
        n = c.execute(text("SELECT count(DISTINCT symbol) FROM prediction_log")).scalar()
    assert n == len(SYMBOLS)
    latest = httpx.get(served["url"] + "/signals/latest/ETHUSDT", timeout=30)
    assert latest.status_code == 200 and latest.json()["symbol"] == "ETHUSDT"


def test_predict_over_http(served, shipped_candles):
    url = served["url"]
    ok = httpx.post(url + "/predict", json={"symbol": "ethusdt"}, timeout=60)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["symbol"] == "ETHUSDT" and body["direction"] in ("LONG", "SHORT", "NEUTRAL") and body["reasons"]

    def rows(df):
        return [{"timestamp": t.isoformat(), **{c: float(v) for c, v in r.items()}} for t, r in df.iterrows()]

    eth, btc = shipped_candles["ETHUSDT"].iloc[:700], shipped_candles["BTCUSDT"].iloc[:700]
    with_candles = httpx.post(url + "/predict", json={"symbol": "ETHUSDT", "candles": rows(eth),
                                                       "btc_candles": rows(btc)}, timeout=60)
    assert with_candles.status_code == 200, with_candles.text
    assert with_candles.json()["entry"] == eth["close"].iloc[-1]
    with make_engine(served["pg"]).connect() as c:  # a what-if on caller candles is not logged
        logged = c.execute(text("SELECT count(*) FROM prediction_log WHERE bar_time = :t"),
                           {"t": eth.index[-1].to_pydatetime()}).scalar()
    assert logged == 0

    bad = rows(btc)
    bad[300]["high"] = bad[300]["low"] / 2
    r = httpx.post(url + "/predict", json={"symbol": "BTCUSDT", "candles": bad}, timeout=60)
    assert r.status_code == 422 and "high below" in r.json()["detail"]
    short = httpx.post(url + "/predict", json={"symbol": "BTCUSDT", "candles": rows(btc.iloc[:50])}, timeout=60)
    assert short.status_code == 422 and "needs" in short.json()["detail"] and "got 50" in short.json()["detail"]
    no_btc = httpx.post(url + "/predict", json={"symbol": "ETHUSDT", "candles": rows(eth)}, timeout=60)
    assert no_btc.status_code == 422 and "btc_candles" in no_btc.json()["detail"]
    assert httpx.post(url + "/predict", json={"symbol": "NOPEUSDT"}, timeout=30).status_code == 404
    assert httpx.post(url + "/predict", json={"symbol": 12}, timeout=30).status_code == 422
    assert httpx.post(url + "/predict", content=b"{not json", timeout=30).status_code == 422
    huge = httpx.post(url + "/predict", content=b"x" * 3_000_000, headers={"content-type": "application/json"},
                      timeout=30)
    assert huge.status_code == 413


def test_health_ready_and_openapi(served):
    url = served["url"]
    assert httpx.get(url + "/healthz", timeout=30).json() == {"status": "ok"}
    ready = httpx.get(url + "/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["redis"] is True and ready.json()["database"] is True
    spec = httpx.get(url + "/openapi.json", timeout=30).json()
    assert "/predict" in spec["paths"] and "/signals/latest/{symbol}" in spec["paths"]


def test_hot_reload_good_and_bad_bundle(served):
    from ray import serve

    from serve_app.app import build_app

    handle = serve.get_deployment_handle("MLManager", "mlsignals-test")
    before = handle.info.remote().result()
    bad = served["tmp"] / "tampered"
    import shutil

    shutil.copytree(served["other"], bad)
    (bad / "config.json").write_text((bad / "config.json").read_text().replace("untrained", "tampered"))
    serve.run(build_app({"config": str(served["cfg"]), "ml_user_config": {"model_path": str(bad)}}),
              name="mlsignals-test", route_prefix="/")
    after_bad = handle.info.remote().result()
    assert after_bad["model_version"] == before["model_version"]
    assert "sha256" in after_bad["last_reload_error"]
    serve.run(build_app({"config": str(served["cfg"]), "ml_user_config": {"model_path": str(served["other"])}}),
              name="mlsignals-test", route_prefix="/")
    after_good = handle.info.remote().result()
    assert after_good["model_version"] != before["model_version"]
    assert after_good["model_version"].startswith("tiny-b-") and after_good["last_reload_error"] is None
    # the new model serves predictions
    res = httpx.post(served["url"] + "/predict", json={"symbol": "BTCUSDT"}, timeout=60)
    assert res.json()["model_version"] == after_good["model_version"]
    assert res.headers["x-signal-source"] == "computed"  # an old model's tick is never served
