"""`mlsignals stack`: fit a trained bundle's stack (LightGBM into the direction, a feature-volatility
forecast into the level hits and risks; see ``model.stacking``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("stack")
    def stack(
        model: Path = typer.Option(..., "--model", help="trained bundle directory (stack.json is written into it)"),
        data_dir: Path = typer.Option(..., "--data-dir", help="the corpus the bundle was trained on"),
        alignments: int | None = typer.Option(
            None, "--alignments", min=1, max=15, help="bar alignments of 1-minute files to build (memory)"
        ),
    ) -> None:
        """Fit the stack on the bundle's own split - the volatility forecast on its training rows,
        the pooling weights on its validation rows (what `mlsignals train` does when
        stack_lightgbm is on) - and re-sign the bundle. A policy chosen without the stack is
        removed: run `mlsignals policy` again."""
        from model.training_run import stack_bundle

        logging.basicConfig(level=logging.INFO)
        result = stack_bundle(model, data_dir, alignments)
        typer.echo(json.dumps(result.report, indent=2))
