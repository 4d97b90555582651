"""`mlsignals data import`, `mlsignals data download` and `mlsignals data coverage`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.errors import MLSignalsError
from features.candle_files import load_candle_files
from features.candles import find_gaps
from features.sources.sql_store import SqlCandleStore, coverage_entry
from mlsignals.commands.common import emit_json, parse_time
from mlsignals.settings import PROJECT_ROOT, Settings, load_settings

data_app = typer.Typer(help="Candle data: import files or download from an exchange into the SQL store, report "
                            "coverage.", no_args_is_help=True)


def serving_hint(exchange: str, settings: Settings) -> str | None:
    """How to point the service at candles stored under ``exchange``, or None if it reads them."""
    todo = []
    if settings.data.source != "sql":
        todo.append("MLSIGNALS_DATA__SOURCE=sql")
    if exchange != settings.data.exchange.lower():
        todo.append(f"MLSIGNALS_DATA__EXCHANGE={exchange}")
    if not todo:
        return None
    return (f"note: the service reads data.source={settings.data.source}, data.exchange={settings.data.exchange}; "
            f"to serve these candles set {' '.join(todo)} (or those keys in the config file)")


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
    hint = serving_hint(store.exchange, load_settings())
    if hint:
        typer.echo(hint, err=True)


@data_app.command("download")
def download(
    exchange: Annotated[str, typer.Option(help="ccxt exchange id (binance, bybit, ...); also the store's label")],
    symbols: Annotated[list[str], typer.Option("--symbols", help="symbols, e.g. --symbols BTCUSDT ETHUSDT")],
    since: Annotated[str, typer.Option(help="first candle wanted (ISO-8601, naive = UTC)")],
    until: Annotated[str | None, typer.Option(help="last candle wanted (default: the last closed minute)")] = None,
    market_type: Annotated[str | None, typer.Option(help="spot or linear (default: data.ccxt.market_type)")] = None,
    database_url: Annotated[str | None, typer.Option(envvar="DATABASE_URL", help="default: the config's")] = None,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr (default: when it is a terminal)")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
) -> None:
    """Download closed 1-minute candles into the SQL candle store, resuming after what is stored.
    Each page is validated and written whole; gaps in the exchange's data are reported, not filled."""
    from common.db import make_engine
    from features.sources import ccxt_source
    from features.sources.download import CandleDownloader

    settings = load_settings()
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if end is not None and end < start:
        raise MLSignalsError(f"--until {until} is before --since {since}")
    wanted = list(dict.fromkeys(s.strip().upper() for arg in symbols for s in arg.split(",") if s.strip()))
    label = exchange.lower()
    c = settings.data.ccxt
    kind = market_type or c.market_type
    if kind not in ("spot", "linear"):
        raise typer.BadParameter(f"--market-type must be spot or linear, got {kind!r}")
    src = ccxt_source.CcxtSource(ccxt_source.make_exchange(label, c.timeout_ms), wanted, kind,
                                 c.max_retries, c.backoff_s)
    store = SqlCandleStore(make_engine(database_url or settings.database_url_value()), exchange=label)
    loader = CandleDownloader(src, store, progress=None if progress else False)
    done, failed = [], {}
    for sym in wanted:
        try:
            res = loader.download(sym, start, end)
        except MLSignalsError as exc:  # this symbol's pages so far are kept; a rerun resumes
            failed[sym] = str(exc)
            if not json_out:
                typer.echo(f"{label} {sym}: failed: {exc}", err=True)
            continue
        done.append(res.to_dict())
        if not json_out:
            gaps = ", ".join(f"{g.start.isoformat()} ({g.missing} min)" for g in res.gaps[:5])
            more = f" +{len(res.gaps) - 5} more" if len(res.gaps) > 5 else ""
            typer.echo(f"{label} {sym}: {res.written} new candle(s) in {res.pages} page(s), "
                       f"{len(res.gaps)} exchange gap(s){': ' + gaps + more if gaps else ''}"
                       + (f"; exchange history starts {res.first_available.isoformat()}"
                          if res.first_available is not None else ""))
    if json_out:
        emit_json({"exchange": label, "downloaded": done, "failed": failed})
    hint = serving_hint(label, settings)
    if hint and done:
        typer.echo(hint, err=True)
    if failed:
        raise MLSignalsError(f"{len(failed)} of {len(wanted)} symbol(s) failed ({', '.join(failed)}); "
                             "rerun the same command to resume")


@data_app.command("coverage")
def coverage(
    source: Annotated[str | None, typer.Option(help="replay (shipped files) or sql (the store); default: config")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="candle folder (default: all shipped)")] = None,
    exchange: Annotated[str | None, typer.Option(help="only this exchange label of the sql store (default: all)")
                        ] = None,
    database_url: Annotated[str | None, typer.Option(envvar="DATABASE_URL")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per exchange and symbol: first and last candle, rows, gaps; `served` marks what the
    service reads (sql: the rows labelled data.exchange; replay: the files of data.replay_dir)."""
    settings = load_settings()
    kind = source or settings.data.source
    if kind == "sql":
        rows = _store(database_url, exchange).coverage(all_exchanges=exchange is None)
        backfilled = settings.data.source == "ccxt" and settings.data.ccxt.backfill
        reads = (settings.data.ccxt.exchange if backfilled else settings.data.exchange).lower()
        for r in rows:
            r["served"] = (settings.data.source == "sql" or backfilled) and r["exchange"] == reads
    elif kind in ("replay", "files"):
        root = directory or PROJECT_ROOT / "data" / "candles"
        rows = []
        reads = settings.data.replay_dir.name
        for p in sorted(Path(root).rglob("*.csv*")):
            ((sym, df),) = load_candle_files([p]).items()
            entry = coverage_entry(sym, p.parent.name, df.index[0], df.index[-1], len(df), find_gaps(df))
            entry["file"] = str(p.relative_to(root))
            entry["served"] = p.parent.resolve() == settings.replay_path.resolve()
            rows.append(entry)
    else:
        raise typer.BadParameter(f"--source must be replay or sql, got {kind!r}")
    if json_out:
        emit_json({"source": kind, "service_reads": {"source": settings.data.source, "exchange": reads},
                   "symbols": rows})
        return
    for r in rows:
        typer.echo(
            f"{'*' if r['served'] else ' '} {r['exchange']:<22} {r['symbol']:<10} {r['first']} .. {r['last']}  "
            f"rows={r['rows']:<7} gaps={r['gaps']} missing={r['missing_minutes']}"
        )
    if any(r["served"] for r in rows):
        what = f"exchange label {reads!r}" if kind == "sql" else f"the files of {settings.data.replay_dir}"
        typer.echo(f"* = read by the service (data.source={settings.data.source}, {what})")
    elif kind == "sql":
        labels = sorted({r["exchange"] for r in rows})
        typer.echo(f"the service reads none of these (data.source={settings.data.source}, "
                   f"data.exchange={settings.data.exchange})")
        for label in labels:
            typer.echo(f"  {label}: {serving_hint(label, settings).split('set ', 1)[1]}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
