"""The backtest on real candles with the tiny test bundle: same decisions as the plain live path,
no look-ahead, baselines, report files and CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsignals.backtest.runner import BacktestConfig, run_backtest
from mlsignals.cli import main
from signals.costs import CostModel

LENIENT = (("min_confidence", 0.0), ("min_agreement", 0.0), ("min_quality", 0.0), ("max_entropy", 1.0),
           ("require_return_agreement", False), ("ood_max_fraction", 1.0))
SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


@pytest.fixture(scope="module")
def frames(shipped_candles) -> dict[str, pd.DataFrame]:
    return {s: shipped_candles[s].iloc[:900] for s in SYMS}


@pytest.fixture(scope="module")
def result(bundle, frames):
    cfg = BacktestConfig(model_dir=bundle, strategy="aggressive", costs=CostModel(4, 1), lookahead_samples=8,
                         progress=False, signal_overrides=LENIENT)
    return run_backtest(frames, cfg)


def test_decisions_equal_the_live_path_on_truncated_candles(result) -> None:
    look = result.lookahead
    assert look.checked >= 8 * len(SYMS) - 3 and look.ok, look.mismatches
    assert look.max_conf_diff < 1e-4 and look.max_level_rel_diff < 1e-4
    assert (result.decisions.side != 0).sum() > 20  # the lenient config trades: the check is not vacuous


def test_changing_a_future_candle_changes_no_past_decision(bundle, frames, result) -> None:
    cut = result.market.times[700]
    spoiled = {s: f.copy() for s, f in frames.items()}
    for f in spoiled.values():
        f.loc[f.index > cut, ["open", "high", "low", "close"]] *= 1.5  # a wild future
    cfg = BacktestConfig(model_dir=bundle, strategy="aggressive", lookahead_samples=1, progress=False,
                         baselines=False, signal_overrides=LENIENT, end=cut)
    again = run_backtest(spoiled, cfg).decisions
    d = result.decisions.select(result.decisions.pos <= result.market.pos(cut))
    assert np.array_equal(again.side, d.side) and np.allclose(again.sl, d.sl, equal_nan=True)


def test_baselines_and_costs(result) -> None:
    s = result.summary
    assert s["always_flat"]["total"]["net_return"] == 0.0 and s["always_flat"]["total"]["trades"] == 0
    assert s["buy_and_hold"]["total"]["trades"] == len(SYMS)
    m = result.sims["model"].trades
    assert len(m) > 5 and set(m.outcome) <= {"TP", "SL", "EXPIRED", "END"}
    # costs are charged on both sides: net < gross for every trade
    assert (m.array("ret") < m.array("gross")).all()


def _slice(tmp_path: Path, shipped_candles, symbol: str, minutes: int, bad: bool = False) -> Path:
    df = shipped_candles[symbol].iloc[:minutes].reset_index()
    if bad:
        df.loc[5, "high"] = df.loc[5, "low"] - 1.0  # high below low
    p = tmp_path / f"{symbol}_1m.csv"
    df.to_csv(p, index=False)
    return p


def test_cli_writes_report_and_json(bundle, shipped_candles, tmp_path, capsys) -> None:
    files = [str(_slice(tmp_path, shipped_candles, s, 700)) for s in ("BTCUSDT", "ETHUSDT")]
    out = tmp_path / "rep"
    main(["backtest", "--model", str(bundle), "--out", str(out), "--every", "2", "--no-progress",
          "--lookahead-samples", "3", "--json", *sum((["--candles", f] for f in files), [])])
    js = json.loads(capsys.readouterr().out)
    assert js["meta"]["lookahead"]["identical"] == js["meta"]["lookahead"]["checked"] > 0
    assert {"report.md", "equity.png", "drawdown.png", "trade_returns.png", "calibration.png"} <= {
        p.name for p in out.iterdir()}
    assert "Verdict" in (out / "report.md").read_text()


def test_cli_bad_candles_exit_non_zero_with_the_reason(bundle, shipped_candles, tmp_path, capsys) -> None:
    bad = _slice(tmp_path, shipped_candles, "BTCUSDT", 300, bad=True)
    with pytest.raises(SystemExit) as e:
        main(["backtest", "--model", str(bundle), "--out", str(tmp_path / "r"), "--candles", str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "high" in err
    eth = _slice(tmp_path, shipped_candles, "ETHUSDT", 300)
    with pytest.raises(SystemExit) as e:
        main(["backtest", "--model", str(bundle), "--out", str(tmp_path / "r"), "--candles", str(eth)])
    assert e.value.code == 2 and "BTC" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["backtest", "--model", str(bundle), "--out", str(tmp_path / "r"), "--strategy", "yolo",
              "--candles", str(eth)])
    assert e.value.code == 2 and "strategy" in capsys.readouterr().err
