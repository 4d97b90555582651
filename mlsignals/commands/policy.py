"""`mlsignals policy`: choose and store a bundle's validated trading policy (backtest engine)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from features.candle_files import load_candle_files
from mlsignals.backtest.walk_forward import MIN_T, N_BLOCKS
from mlsignals.commands.common import emit_json


def policy_cmd(
    model: Annotated[Path, typer.Option(help="model bundle directory (policy.json is written into it)")],
    candles: Annotated[list[Path], typer.Option("--candles", help="validation candle files or folders (1-minute "
                                                                  "candles or 15-minute spans); files of one folder "
                                                                  "form one market (BTC's among them); the bundle's "
                                                                  "test windows are skipped")],
    fee_bps: Annotated[float, typer.Option(min=0, help="fee per side, basis points")] = 4.0,
    slippage_bps: Annotated[float, typer.Option(min=0, help="slippage per side, basis points")] = 1.0,
    every: Annotated[int, typer.Option(min=1, help="decide every N-th candle of the files")] = 5,
    min_t: Annotated[float, typer.Option(help="day-clustered t-statistic a horizon's walk-forward trades need "
                                              "(default: one-sided 5 %, Bonferroni over 4 horizons)")] = MIN_T,
    blocks: Annotated[int, typer.Option(min=2, help="calendar blocks of the walk-forward")] = N_BLOCKS,
    dry_run: Annotated[bool, typer.Option(help="print the policy without writing it")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the policy and candidates as JSON")] = False,
) -> None:
    """Per horizon, the LONG-SHORT probability margin whose trades were net-positive after costs on
    validation candles, enabled only where choosing it walk-forward paid out of sample (else the
    horizon is NEUTRAL); written to the bundle as policy.json, which the default `validated`
    strategy trades."""
    from mlsignals.backtest.policy import evaluate_policy, fit_policy, validation_outputs
    from model.bundle import write_policy
    from signals.costs import CostModel
    from signals.policy import TradingPolicy

    logging.basicConfig(level=logging.WARNING)
    costs = CostModel(fee_bps, slippage_bps)
    groups: dict[Path, list[Path]] = {}
    for c in candles:
        for f in (sorted([*c.glob("*_1m.csv*"), *c.glob("*_15m.csv*")]) if c.is_dir() else [c]):
            groups.setdefault(f.parent, []).append(f)
    vos, engine = [], None
    for files in groups.values():
        vo, engine = validation_outputs(load_candle_files(files), model, every=every, progress=progress)
        vos.append(vo)
    policy, candidates = fit_policy(vos, engine, costs, min_t=min_t, n_blocks=blocks)
    data = policy.model_dump()
    data["validation"] |= {"combined": evaluate_policy(vos, engine, policy, costs), "candidates": candidates}
    TradingPolicy.from_dict(data)  # what the processor will read back
    if not dry_run:
        write_policy(model, data)
    if json_out:
        emit_json(data)
        return
    for h, hp in zip((["15m", "1h", "4h", "12h"]), policy.horizons, strict=False):
        state = f"trade |P(L)-P(S)| >= {hp.min_margin:.4f}" if hp.enabled else "NEUTRAL"
        typer.echo(f"  {h}: {state}  (walk-forward: {hp.val_trades} trades, mean net {hp.val_mean_net}, "
                   f"t {hp.val_t}) {hp.why}")
    typer.echo(f"combined on validation: {data['validation']['combined']}")
    typer.echo("not written (--dry-run)" if dry_run else f"policy written to {model / 'policy.json'}")


def register(app: typer.Typer) -> None:
    app.command("policy")(policy_cmd)
