"""Shared fixtures: real PostgreSQL / SQLite databases, real Redis, the shipped candles.

Every PostgreSQL test database is created fresh (unique name) and dropped afterwards, every
Redis test uses its own key prefix, so runs never collide."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
from sqlalchemy import create_engine, text

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CANDLE_DIR = PROJECT_ROOT / "data" / "candles"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# A run started in the background by a non-interactive shell (a CI script, `nohup ... &`) has
# SIGINT ignored, and an ignored signal stays ignored across exec: every `serve run` the tests
# start would then ignore the Ctrl-C they send it. Handle SIGINT as Python normally does, so
# the processes the tests start see Ctrl-C as a user's terminal would deliver it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the real server, dropped after the test."""
    name = f"mlsignals_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against SQLite and the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def schema_engine(request: pytest.FixtureRequest, tmp_path: Path):
    """An engine on SQLite (temp file) or on the real PostgreSQL inside a fresh schema that is
    dropped afterwards (cheaper than a database per test)."""
    from common.db import make_engine

    if request.param == "sqlite":
        yield make_engine(f"sqlite:///{tmp_path / 'test.db'}")
        return
    base = make_engine(PG_ADMIN_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with base.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    yield base.execution_options(schema_translate_map={None: schema})
    with base.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    base.dispose()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix on the real Redis; every key under it is deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    r = redis.Redis.from_url(REDIS_TEST_URL)
    for key in r.scan_iter(match=prefix + "*", count=1000):
        r.delete(key)
    r.close()


@pytest.fixture(scope="session")
def shipped_candles() -> dict[str, pd.DataFrame]:
    """The held-out Bybit period (7 symbols), validated, cut to the common minutes."""
    from features.candle_files import load_candle_dir

    return load_candle_dir(CANDLE_DIR / "bybit_linear_2025-06")


@pytest.fixture(scope="session")
def ray_session():
    """One Ray instance for the whole test session (ray.init costs ~5 s on 2 cores); always a
    new local one, never a cluster that happens to run on the machine."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run ``mlsignals ARGS`` in-process: (exit code, stdout, stderr)."""
    from mlsignals.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err
