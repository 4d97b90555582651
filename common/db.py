"""SQL engines: SQLite by default, PostgreSQL (or anything SQLAlchemy speaks) by URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel, create_engine


def make_engine(url: str) -> Engine:
    """Create an engine; no table (each owner creates its own with ``create_tables``).

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
        # a bounded connect: an unreachable server is an error in seconds, never a hang
        args = {"connect_timeout": 5} if u.get_backend_name() == "postgresql" else {}
        engine = create_engine(url, pool_pre_ping=True, connect_args=args)
    return engine


def create_tables(engine: Engine, *models: type[SQLModel]) -> None:
    """Create the tables of ``models`` (every imported SQLModel table when none is named) if
    they do not exist yet."""
    tables = [m.__table__ for m in models] if models else None
    SQLModel.metadata.create_all(engine, tables=tables)


def insert_ignore(engine: Engine, model: type[SQLModel], unique: list[str]) -> postgresql.Insert | sqlite.Insert:
    """``INSERT ... ON CONFLICT (unique) DO NOTHING`` in the engine's dialect: repeats of a row
    are no-ops, which is what makes outbox, log and ledger writes safe to retry."""
    return dialect_insert(engine, model).on_conflict_do_nothing(index_elements=unique)


def dialect_insert(engine: Engine, model) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT construct (it has ``on_conflict_do_*``); SQLite and PostgreSQL only."""
    name = engine.dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise ValueError(f"supported databases are sqlite and postgresql, not {name}")
