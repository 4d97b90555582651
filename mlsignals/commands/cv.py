"""`mlsignals cv`: purged calendar cross-validation of the training recipe (model.cv)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from common.jsonsafe import json_safe
from mlsignals.commands.common import emit_json


def register(app: typer.Typer) -> None:
    @app.command("cv")
    def cv(
        data_dir: Path = typer.Option(..., "--data-dir", help="folder of candle period folders (1m and 15m files)"),
        config: Path | None = typer.Option(None, "--config", help="YAML/JSON TrainConfig (the recipe to validate)"),
        folds: int = typer.Option(5, "--folds", min=2, help="calendar blocks; each is the test set once"),
        max_steps: int | None = typer.Option(
            None, "--max-steps", help="cap the network's steps per fold (a cheaper run of the same recipe)"
        ),
        test_rows: int = typer.Option(30_000, "--test-rows", help="at most this many scored anchors per fold"),
        out: Path | None = typer.Option(None, "--out", help="write cv.md and cv.json here"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Train on all but one calendar block (purged + embargoed), score on that block, for every
        block: log-loss difference to the volatility-only baseline with bootstrap intervals, Brier,
        ECE, direction AUC, IC, level-hit log-loss; mean ± sd over folds."""
        from model.config import TrainConfig
        from model.cv import cross_validate, markdown, with_budget
        from model.training_run import load_training_series

        logging.basicConfig(level=logging.INFO if not as_json else logging.WARNING)
        cfg = TrainConfig.from_file(config) if config else TrainConfig(train_dirs=())
        cfg = with_budget(cfg, max_steps)
        series = load_training_series(cfg, data_dir)

        def write(result: dict) -> None:
            if out:
                out.mkdir(parents=True, exist_ok=True)
                (out / "cv.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
                (out / "cv.md").write_text(markdown(result))

        result = cross_validate(series, cfg, folds, max_test_rows=test_rows, on_fold=write)
        if as_json:
            emit_json(result)
        else:
            typer.echo(markdown(result))
