"""SQL engines: SQLite by default, PostgreSQL (or anything SQLAlchemy speaks) by URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel, create_engine


def make_engine(url: str) -> Engine:
    """Create an engine and the tables of every imported SQLModel table class.

    SQLite files get their directory created, WAL mode (readers do not block the writer) and a
    busy timeout, because the CLI, the scheduler and the ingress may share one file.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def create_tables(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)
