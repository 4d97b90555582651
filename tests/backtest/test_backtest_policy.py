"""`mlsignals policy` on real candles with the tiny test bundle: the backtest engine chooses the
policy, it is signed into the bundle, and the validated strategy trades exactly what it allows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsignals.backtest.policy import evaluate_policy, fit_policy, validation_outputs
from mlsignals.cli import main
from model.bundle import load_bundle
from signals.costs import CostModel
from signals.policy import TradingPolicy

SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


@pytest.fixture(scope="module")
def frames(shipped_candles) -> dict[str, pd.DataFrame]:
    return {s: shipped_candles[s].iloc[:2500] for s in SYMS}


@pytest.mark.slow
def test_policy_is_chosen_by_simulated_trades_and_respects_costs(bundle, frames) -> None:
    vo, engine = validation_outputs(frames, bundle, every=3, progress=False)
    assert len(vo.pos) > 1000 and vo.margin.shape == (len(vo.pos), 4)
    free, cand_free = fit_policy([vo], engine, CostModel(0, 0), min_t=-1e9)
    costly, cand_costly = fit_policy([vo], engine, CostModel(200, 100), min_t=-1e9)
    # the same margins and trades, only the costs differ: every candidate's mean drops by 6 %
    for a, b in zip(cand_free, cand_costly, strict=True):
        if a["trades"] and b["trades"] == a["trades"]:
            assert b["mean_net"] < a["mean_net"] - 0.05
    assert not costly.any_enabled  # nothing survives 3 % per round trip
    for h, c in zip(free.horizons, range(4), strict=True):
        best = max((x for x in cand_free[c * 6 : c * 6 + 6] if x["trades"] >= 30), key=lambda x: x["mean_net"],
                   default=None)
        assert h.enabled == (best is not None and best["mean_net"] > 0)
        if h.enabled:
            assert h.min_margin == best["min_margin"] and h.val_trades == best["trades"]
    combined = evaluate_policy([vo], engine, free, CostModel(0, 0))
    assert (combined["trades"] > 0) == free.any_enabled


@pytest.mark.slow
def test_policy_cli_signs_the_policy_into_the_bundle(bundle, frames, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    before = load_bundle(b).model_version
    files = []
    for s, f in frames.items():
        p = tmp_path / f"{s}_1m.csv"
        f.reset_index().to_csv(p, index=False)
        files.append(str(p))
    main(["policy", "--model", str(b), "--candles", *files, "--every", "5", "--min-t", "1.5", "--no-progress",
          "--json"])
    stored = json.loads((b / "policy.json").read_text())
    policy = TradingPolicy.from_dict(stored)
    loaded = load_bundle(b)
    assert loaded.policy == stored and loaded.model_version != before
    assert np.isfinite([c["min_margin"] for c in stored["validation"]["candidates"]]).all()
    assert all((h.val_t or 0) >= 1.5 and (h.val_mean_net or 0) > 0 for h in policy.horizons if h.enabled)
