"""Evaluation report: markdown tables (model next to every baseline) and two small PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.contract import DIRECTIONS, TargetSpec  # noqa: E402
from model.evaluate import EvalResult  # noqa: E402

# metric -> True when higher is better
METRICS = {
    "log_loss": False,
    "accuracy": True,
    "macro_f1": True,
    "brier": False,
    "ece": False,
    "direction_auc": True,
    "ic": True,
    "long_hit_auc": True,
    "short_hit_auc": True,
    "long_hit_log_loss": False,
    "short_hit_log_loss": False,
    "long_hit_ece": False,
    "short_hit_ece": False,
    "drawdown_rmse": False,
    "rally_rmse": False,
}


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def markdown(result: EvalResult, model_version: str, spec: TargetSpec, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"Model `{model_version}`; {result.n_rows} rows ({', '.join(result.symbols)}), "
        f"{result.period['start']} .. {result.period['end']}.",
        f"Bars of {spec.bar_minutes} min; horizons {list(spec.horizons)} bars; FLAT bands "
        f"{list(spec.flat_bands)}; levels {list(spec.levels)} (fractions, from the training split).",
        "Best value per metric in **bold** (— = the forecaster does not produce it).",
        "",
    ]
    if result.vs_volatility:
        lines += [
            "## Model minus volatility-only baseline, direction log-loss (negative = model better)",
            "",
            "95 % bootstrap interval resampling whole days (neighbouring anchors share their future).",
            "",
            "| horizon | difference | 95 % interval |",
            "|---|---|---|",
        ]
        for h, d in result.vs_volatility.items():
            lines.append(f"| {h} | {d['diff']:+.4f} | [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] |")
        lines.append("")
    for h, per in result.scores.items():
        names = list(per)
        shares = result.class_shares[h]
        lines += [
            f"## horizon {h} ({int(h[1:]) * spec.bar_minutes} min) — outcome shares LONG/SHORT/FLAT "
            f"{shares[0]:.3f}/{shares[1]:.3f}/{shares[2]:.3f}",
            "",
            "| metric | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for m, higher in METRICS.items():
            vals = [per[n][m] for n in names]
            present = [v for v in vals if v is not None]
            best = (max(present) if higher else min(present)) if present else None
            cells = [f"**{_fmt(v)}**" if v is not None and v == best else _fmt(v) for v in vals]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![calibration](calibration.png)", "", "![level-hit calibration](hit_calibration.png)", "",
              "![confusion](confusion.png)", ""]
    return "\n".join(lines)


def _reliability(ax, p: np.ndarray, y: np.ndarray, label: str) -> None:
    """Mean predicted vs observed frequency in 10 equal-width bins (bins with >= 30 rows)."""
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
    xs = [p[which == b].mean() for b in range(10) if (which == b).sum() >= 30]
    ys = [y[which == b].mean() for b in range(10) if (which == b).sum() >= 30]
    ax.plot(xs, ys, marker="o", ms=3, label=label)


def _reliability_figure(curves: list[list[tuple[np.ndarray, np.ndarray, str]]], titles: list[str],
                        path: Path) -> None:
    """One panel per horizon, each with its (predicted, outcome, label) reliability curves."""
    fig, axes = plt.subplots(1, len(titles), figsize=(11, 3), dpi=72, sharey=True)
    for ax, panel, title in zip(axes, curves, titles, strict=True):
        for p, y, label in panel:
            _reliability(ax, p, y, label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("observed", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_calibration(result: EvalResult, spec: TargetSpec, path: Path) -> None:
    """Reliability diagram per horizon: predicted P(class) vs observed frequency, 10 bins."""
    fc, t = result.model_fc, result.targets
    curves = [[(fc.direction[:, i, c], t.direction[:, i] == c, name) for c, name in enumerate(DIRECTIONS)]
              for i in range(len(spec.horizons))]
    _reliability_figure(curves, [f"h{h}" for h in spec.horizons], path)


def plot_hit_calibration(result: EvalResult, spec: TargetSpec, path: Path) -> None:
    """Reliability diagram of the level-hit probabilities per horizon, long and short."""
    fc, t = result.model_fc, result.targets
    curves = [[] if fc.long_hit is None else
              [(fc.long_hit[:, i], t.long_hit[:, i], "long hit"), (fc.short_hit[:, i], t.short_hit[:, i], "short hit")]
              for i in range(len(spec.horizons))]
    _reliability_figure(curves, [f"h{h} levels ±{lv:.2%}" for h, lv in zip(spec.horizons, spec.levels, strict=True)],
                        path)


def plot_confusion(result: EvalResult, spec: TargetSpec, path: Path) -> None:
    """Confusion matrix per horizon, rows = true class, normalised per row."""
    fig, axes = plt.subplots(1, len(spec.horizons), figsize=(11, 3), dpi=72)
    for i, (ax, h) in enumerate(zip(axes, spec.horizons, strict=True)):
        y = result.targets.direction[:, i]
        pred = result.model_fc.direction[:, i].argmax(axis=1)
        cm = np.zeros((3, 3))
        np.add.at(cm, (y, pred), 1)
        cm = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None)
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for a in range(3):
            for b in range(3):
                ax.text(b, a, f"{cm[a, b]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(3), DIRECTIONS, fontsize=7)
        ax.set_yticks(range(3), DIRECTIONS, fontsize=7)
        ax.set_title(f"h{h} (rows: true)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: EvalResult, model_version: str, spec: TargetSpec, out: Path, title: str) -> dict:
    """Write report.md, evaluation.json, calibration.png, hit_calibration.png, confusion.png;
    returns the JSON dict."""
    out.mkdir(parents=True, exist_ok=True)
    data = summary(result, model_version)
    (out / "evaluation.json").write_text(json.dumps(data, indent=2, default=_nan_to_none) + "\n")
    (out / "report.md").write_text(markdown(result, model_version, spec, title))
    plot_calibration(result, spec, out / "calibration.png")
    plot_hit_calibration(result, spec, out / "hit_calibration.png")
    plot_confusion(result, spec, out / "confusion.png")
    return data


def summary(result: EvalResult, model_version: str) -> dict:
    return {
        "model_version": model_version,
        "rows": result.n_rows,
        "symbols": result.symbols,
        "period": result.period,
        "class_shares": result.class_shares,
        "scores": result.scores,
        "vs_volatility": result.vs_volatility,
    }


def _nan_to_none(o: object) -> object:
    return None
