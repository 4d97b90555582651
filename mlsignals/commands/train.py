"""`mlsignals train`: train UnifiedPatchTST on the shipped candles and write a verified bundle."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from common.errors import ConfigError
from mlsignals.commands.common import emit_json


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    return name


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        out: Path = typer.Option(..., "--out", help="bundle directory to write, e.g. models/mymodel"),
        config: Path | None = typer.Option(None, "--config", help="YAML/JSON TrainConfig (keys of model/config.py)"),
        epochs: int | None = typer.Option(None, "--epochs", help="override TrainConfig.epochs"),
        seed: int | None = typer.Option(None, "--seed", help="override TrainConfig.seed"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", help="folder of candle period folders; train_dirs are relative to it "
            "(all of its folders when the config's train_dirs is empty)"
        ),
        allow_worse: bool = typer.Option(
            False, "--allow-worse", help="write the bundle even if it loses to the volatility-only baseline"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the metrics summary as JSON"),
    ) -> None:
        """Train on the configured candle periods and save the bundle. Exits non-zero without writing
        it when the model's validation log-loss is worse than the volatility-only baseline at any
        horizon or head (the numbers in the message), unless --allow-worse."""
        from model.config import TrainConfig
        from model.training_run import train_bundle

        logging.basicConfig(level=logging.WARNING)
        cfg = TrainConfig.from_file(config) if config else TrainConfig()
        overrides = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
        cfg = cfg.replace(**overrides)
        path, fit, metrics = train_bundle(
            out, cfg, device=_device(device), progress=not as_json, data_dir=data_dir, allow_worse=allow_worse
        )
        summary = {
            "bundle": str(path),
            "best_epoch": fit.best_epoch,
            "train_seconds": metrics["train_seconds"],
            "total_seconds": metrics["total_seconds"],
            "n_parameters": metrics["n_parameters"],
            "validation_log_loss": {
                h: {name: s["log_loss"] for name, s in per.items()}
                for h, per in metrics["validation"]["scores"].items()
            },
        }
        if as_json:
            emit_json(summary)
        else:
            typer.echo(f"bundle written to {path} (best epoch {fit.best_epoch}, {metrics['total_seconds']} s)")
            for h, per in summary["validation_log_loss"].items():
                typer.echo(f"  {h} validation log-loss " + "  ".join(f"{k}={v:.4f}" for k, v in per.items()))
