"""`mlsignals evaluate`: score a bundle on any candle files next to the baselines."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from mlsignals.commands.common import emit_json


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        model: Path = typer.Option(..., "--model", help="bundle directory, e.g. models/default"),
        candles: list[Path] = typer.Option(
            ...,
            "--candles",
            help="1-minute candle CSV (timestamp,open,high,low,close,volume) or a folder of them; "
            "repeat for several files; BTCUSDT's file is needed for any other symbol (cross-asset features)",
        ),
        out: Path | None = typer.Option(None, "--out", help="write report.md, evaluation.json and PNG plots here"),
        stride: int = typer.Option(7, "--stride", help="score every N-th anchor minute (7: all 15 alignments)"),
        device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda"),
        title: str = typer.Option("Held-out evaluation", "--title", help="report title"),
        as_json: bool = typer.Option(False, "--json", help="print the scores as JSON"),
        ray_address: str | None = typer.Option(
            None, "--ray", help="features and forwards as Ray tasks: --ray alone starts a local Ray with "
            "--workers CPUs, --ray ADDRESS joins a cluster (auto, HOST:6379, ray://HOST:10001); same scores"),
        workers: int = typer.Option(2, "--workers", min=1, help="CPUs of the local Ray that --ray starts"),
    ) -> None:
        """Per horizon: log-loss, accuracy, macro-F1, Brier, ECE, direction AUC, IC, level-hit AUC,
        for the model and the baselines stored in the bundle, on the same rows."""
        from model.evaluate import evaluate_candles
        from model.inference import pick_device
        from model.report import markdown, summary, write_report

        logging.basicConfig(level=logging.WARNING)
        dev = str(pick_device(device))
        files = [f for c in candles for f in (sorted(c.glob("*.csv*")) if c.is_dir() else [c])]
        if ray_address is None:
            result, bundle = evaluate_candles(model, files, stride=stride, device=dev)
        else:
            from mlsignals.distributed import RayOptions, evaluate_candles_ray

            result, bundle, _ = evaluate_candles_ray(model, files, stride=stride, device=dev,
                                                     opts=RayOptions(address=ray_address, workers=workers))
        data = (
            write_report(result, bundle.model_version, bundle.target_spec, out, title)
            if out
            else summary(result, bundle.model_version)
        )
        if as_json:
            emit_json(data)
        else:
            typer.echo(markdown(result, bundle.model_version, bundle.target_spec, title))
            if out:
                typer.echo(f"report written to {out}")
