"""`mlsignals backtest`: replay candles minute by minute through the live signal pipeline, trade
the signals with fees and slippage, compare with baselines, write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.candle_files import load_candle_files
from mlsignals.commands.common import emit_json, parse_time


def backtest_cmd(
    model: Annotated[Path, typer.Option(help="model bundle directory")],
    candles: Annotated[list[Path], typer.Option("--candles", help="1-minute candle files (BTC's among them)")],
    out: Annotated[Path, typer.Option(help="report directory (report.md, summary.json, PNGs)")],
    strategy: Annotated[str, typer.Option(help="signal preset: validated (the bundle's validated policy) | "
                                               "conservative | moderate | aggressive")] = "validated",
    fee_bps: Annotated[float, typer.Option(help="fee per side, basis points")] = 4.0,
    slippage_bps: Annotated[float, typer.Option(help="slippage per side, basis points")] = 1.0,
    start: Annotated[str | None, typer.Option(help="first decision minute (UTC ISO-8601)")] = None,
    end: Annotated[str | None, typer.Option(help="last decision minute (UTC ISO-8601)")] = None,
    every: Annotated[int, typer.Option(min=1, help="decide every N-th minute")] = 1,
    lookahead_samples: Annotated[int, typer.Option(min=1, help="minutes rerun on truncated candles")] = 12,
    baselines: Annotated[bool, typer.Option(help="also run the baselines")] = True,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the JSON summary")] = False,
    validation_candles: Annotated[list[Path] | None, typer.Option(
        "--validation-candles", help="1-minute candles of the bundle's validation period, where the "
        "logistic/LightGBM baselines choose their thresholds")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray", help="run features and replay as Ray tasks: --ray alone starts a local Ray with --workers "
        "CPUs, --ray ADDRESS joins a cluster (auto, HOST:6379, ray://HOST:10001); same result")] = None,
    workers: Annotated[int, typer.Option(min=1, help="CPUs of the local Ray that --ray starts")] = 2,
) -> None:
    """Walk-forward backtest of the model's signals against baselines, after costs."""
    from common.errors import ConfigError, MLSignalsError
    from mlsignals.backtest.report import write_report
    from mlsignals.backtest.runner import BacktestConfig, run_backtest
    from signals.config import SignalConfig
    from signals.costs import CostModel

    try:
        SignalConfig.preset(strategy)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if fee_bps < 0 or slippage_bps < 0:
        raise MLSignalsError("--fee-bps and --slippage-bps must be >= 0")
    frames = load_candle_files(candles)
    cfg = BacktestConfig(model_dir=model, strategy=strategy, costs=CostModel(fee_bps, slippage_bps),
                         start=parse_time(start), end=parse_time(end), every=every,
                         lookahead_samples=lookahead_samples, baselines=baselines, progress=progress,
                         validation_files=tuple(validation_candles or ()))
    if ray_address is None:
        result = run_backtest(frames, cfg)
    else:
        from mlsignals.distributed import RayOptions, run_backtest_ray

        result = run_backtest_ray(frames, cfg, RayOptions(address=ray_address, workers=workers))
    summary = write_report(result, out)
    if json_out:
        emit_json(summary)
    else:
        typer.echo(f"{summary['verdict']}\nreport: {out / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest_cmd)
