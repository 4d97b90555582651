"""Backtest report: markdown with the metric tables, PNG plots and a JSON summary.

Plots: equity of the model against the baselines, the model's drawdown, the histogram of net
trade returns, and confidence calibration (realised hit rate per confidence bin).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.jsonsafe import json_safe  # noqa: E402
from mlsignals.backtest.metrics import drawdown  # noqa: E402

COLUMNS = ("trades", "hit_rate", "avg_win", "avg_loss", "profit_factor", "mean_trade", "t_stat", "t_days", "net_return",
           "max_drawdown", "sharpe", "sortino", "exposure")
_PCT = {"hit_rate", "avg_win", "avg_loss", "mean_trade", "net_return", "max_drawdown", "exposure"}


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if key == "trades":
        return str(int(v))
    if key in _PCT:
        return f"{100 * v:.3f}%" if key in ("avg_win", "avg_loss", "mean_trade") else f"{100 * v:.2f}%"
    return f"{v:.2f}"


def table(rows: dict[str, dict]) -> str:
    head = "| | " + " | ".join(COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS) + "\n"
    return head + "".join(f"| {name} | " + " | ".join(_fmt(c, r.get(c)) for c in COLUMNS) + " |\n"
                          for name, r in rows.items())


def verdict(summary: dict) -> str:
    """A plain statement: does the model add value after costs (net return > 0, beats the flat
    and momentum baselines, and a mean-trade t-statistic of at least 2 - the day-clustered one,
    the plain t overstates the evidence of trades that share a market day)?"""
    m = summary["model"]["total"]
    n, net = m["trades"], m["net_return"]
    t = m["t_days"] if m.get("t_days") is not None else m["t_stat"]
    if n == 0:
        return "The model issued no trade in this period: it adds no value (and loses nothing) here."
    others = {k: v["total"]["net_return"] for k, v in summary.items() if k not in ("model",)}
    beaten = [k for k, v in others.items() if net > v]
    sig = t is not None and t >= 2.0
    if net > 0 and sig:
        word = "adds value after costs"
    elif net > 0:
        word = "is net-positive after costs but not significantly so (t < 2): no reliable value shown"
    else:
        word = "does NOT add value after costs"
    return (f"The model {word}: {n} trades, mean net trade {100 * (m['mean_trade'] or 0):.3f}% "
            f"(day-clustered t = {t if t is None else round(t, 2)}), net return {100 * net:.2f}%; it beats "
            f"{', '.join(beaten) or 'no baseline'} on net return.")


def plots(result, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    times = result.market.times
    files = []
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, sim in result.sims.items():
        ax.plot(times, sim.portfolio, label=name, lw=2.0 if name == "model" else 1.0)
    ax.set_title("Equity (equal capital per symbol, after fees and slippage)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    files.append(_save(fig, out / "equity.png"))
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.fill_between(times, drawdown(result.sims["model"].portfolio), 0, color="tab:red", alpha=0.5)
    ax.set_title("Model drawdown")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    files.append(_save(fig, out / "drawdown.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    r = result.sims["model"].trades.array("ret")
    if r.size:
        ax.hist(100 * r, bins=min(60, max(10, r.size // 5)), color="tab:blue", alpha=0.8)
        ax.axvline(0, color="k", lw=0.8)
    ax.set_title(f"Net trade returns (%), n={r.size}")
    files.append(_save(fig, out / "trade_returns.png"))
    fig, ax = plt.subplots(figsize=(5, 5))
    cal = result.meta["calibration"]
    if cal:
        ax.plot([c["mean_conf"] for c in cal], [c["hit_rate"] for c in cal], "o-", label="model trades")
    else:
        ax.text(0.5, 0.55, "no LONG/SHORT trade in this period", ha="center", transform=ax.transAxes)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="ideal")
    ax.set_xlabel("signal confidence")
    ax.set_ylabel("realised hit rate (net return > 0)")
    ax.set_title("Confidence calibration")
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "calibration.png"))
    return files


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def write_report(result, out: Path, title: str = "Backtest") -> dict:
    """Write report.md, summary.json and the PNGs into ``out``; return the JSON summary."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = plots(result, out)
    meta, summary = result.meta, result.summary
    md = [f"# {title}\n",
          f"Model `{meta['model_version']}`, strategy `{meta['strategy']}`, symbols {', '.join(meta['symbols'])}; "
          f"decisions every {meta['every']} min from {meta['first_decision']} to {meta['last_decision']} "
          f"({meta['minutes_decided']} minutes, {meta['signals']} LONG/SHORT signals). Costs: {meta['fee_bps']} bps "
          f"fee + {meta['slippage_bps']} bps slippage per side. Fill at the next minute's open; TP/SL/expiry from "
          "later 1-minute high/low (both in one candle -> the stop).\n",
          f"**Verdict.** {verdict(summary)}\n",
          "## Total (equal capital per symbol)\n", table({k: v["total"] for k, v in summary.items()}),
          "\n## Model per symbol\n", table(summary["model"]["per_symbol"]),
          f"\n## Checks\n- {meta['lookahead']['line']}\n"]
    for name, b in meta.get("baselines", {}).items():
        md.append(f"- baseline {name}: {b}\n")
    md.append("\n## Calibration (model trades)\n| confidence | mean | hit rate | n |\n|---|---:|---:|---:|\n")
    md += [f"| {c['lo']:.3f}-{c['hi']:.3f} | {c['mean_conf']:.3f} | {100 * c['hit_rate']:.1f}% | {c['n']} |\n"
           for c in meta["calibration"]]
    md.append("\n" + "".join(f"![{p}]({p})\n" for p in pngs))
    md.append(f"\nTiming: {json.dumps({k: round(v, 1) for k, v in meta['timing_s'].items()})} s\n")
    (out / "report.md").write_text("".join(md))
    js = {"meta": meta, "summary": summary, "verdict": verdict(summary), "files": ["report.md", *pngs]}
    (out / "summary.json").write_text(json.dumps(json_safe(js), indent=2, default=str) + "\n")
    return js


