"""`mlsignals data import` and `mlsignals data coverage`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.candle_files import load_candle_files
from features.candles import find_gaps
from features.sources.sql_store import SqlCandleStore, coverage_entry
from mlsignals.commands.common import emit_json
from mlsignals.settings import PROJECT_ROOT, load_settings

data_app = typer.Typer(help="Candle data: import files into the SQL store, report coverage.", no_args_is_help=True)


def _store(database_url: str | None, exchange: str | None) -> SqlCandleStore:
    from common.db import make_engine

    settings = load_settings()
    url = database_url or settings.database_url_value()
    return SqlCandleStore(make_engine(url), exchange=(exchange or settings.data.exchange).lower())


@data_app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="CSV files: timestamp,open,high,low,close,volume (.gz ok)")],
    symbol: Annotated[str | None, typer.Option(help="symbol of a single file (else from the file name)")] = None,
    exchange: Annotated[str | None, typer.Option(help="exchange label (default: data.exchange)")] = None,
    database_url: Annotated[str | None, typer.Option(envvar="DATABASE_URL", help="default: the config's")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
) -> None:
    """Validate every file first; write only if all are valid (each file in one transaction)."""
    frames = load_candle_files(files, symbol)  # raises naming symbol, time and rule: nothing written
    store = _store(database_url, exchange)
    summary = []
    for sym, df in frames.items():
        written = store.upsert(sym, df)
        gaps = find_gaps(df)
        summary.append(coverage_entry(sym, store.exchange, df.index[0], df.index[-1], written, gaps))
    if json_out:
        emit_json({"imported": summary})
    else:
        for s in summary:
            typer.echo(f"{s['symbol']}: {s['rows']} candles {s['first']} .. {s['last']}, {s['gaps']} gap(s)")


@data_app.command("coverage")
def coverage(
    source: Annotated[str | None, typer.Option(help="replay (shipped files) or sql (the store); default: config")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="candle folder (default: all shipped)")] = None,
    exchange: Annotated[str | None, typer.Option(help="exchange label for the sql store")] = None,
    database_url: Annotated[str | None, typer.Option(envvar="DATABASE_URL")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per symbol: first and last candle, rows, gaps."""
    kind = source or load_settings().data.source
    if kind == "sql":
        rows = _store(database_url, exchange).coverage()
    elif kind in ("replay", "files"):
        root = directory or PROJECT_ROOT / "data" / "candles"
        rows = []
        for p in sorted(Path(root).rglob("*.csv*")):
            ((sym, df),) = load_candle_files([p]).items()
            entry = coverage_entry(sym, p.parent.name, df.index[0], df.index[-1], len(df), find_gaps(df))
            entry["file"] = str(p.relative_to(root))
            rows.append(entry)
    else:
        raise typer.BadParameter(f"--source must be replay or sql, got {kind!r}")
    if json_out:
        emit_json({"source": kind, "symbols": rows})
        return
    for r in rows:
        typer.echo(
            f"{r['exchange']:<22} {r['symbol']:<10} {r['first']} .. {r['last']}  rows={r['rows']:<7} "
            f"gaps={r['gaps']} missing={r['missing_minutes']}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
