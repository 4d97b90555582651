"""How the signals are doing now, from the prediction log's realised outcomes (for the board).

- recent signals of a symbol with the outcome at their own horizon once it is known;
- scorecard: per symbol and horizon over a window, the published (LONG/SHORT) signals' hit
  rate and mean net return. The return is the close-to-close move from the signal's bar to its
  horizon, signed by the direction, minus the backtest's round-trip costs (fee + slippage on
  both sides); a hit is a positive net return. (This is not the TP/SL exit of the backtest:
  the prediction log records closes at the horizons only.)
- calibration: the model's direction probabilities (every logged prediction, every horizon,
  every class) in 10 bins against the realised frequency of that class.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

from signals.costs import CostModel
from signals.prediction_log import PredictionRow
from signals.processor import horizon_label

_COSTS = CostModel()
ROUND_TRIP_COST = 2 * (_COSTS.fee + _COSTS.slip)
WINDOWS = {"day": timedelta(days=1), "week": timedelta(days=7)}
N_BINS = 10


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def outcome_at_horizon(signal: dict, outcomes: dict | None) -> dict | None:
    """The realised outcome at the signal's own horizon, with its net return and hit, or None
    while the horizon has not passed (or for a NEUTRAL)."""
    side = {"LONG": 1.0, "SHORT": -1.0}.get(signal.get("direction", ""))
    if side is None or not outcomes:
        return None
    for o in outcomes.values():
        if horizon_label(int(o["minutes"])) == signal.get("horizon"):
            net = side * float(o["return"]) - ROUND_TRIP_COST
            return {"return": float(o["return"]), "direction": o["direction"], "net_return": net, "hit": net > 0}
    return None


def recent_signals(engine: Engine, symbol: str, since: datetime, limit: int = 2000) -> list[dict]:
    """The symbol's logged signals since ``since`` (oldest first), each with its outcome."""
    with Session(engine) as s:
        rows = s.exec(
            select(PredictionRow.bar_time, PredictionRow.signal, PredictionRow.outcomes)
            .where(PredictionRow.symbol == symbol, PredictionRow.bar_time >= _utc(since))
            .order_by(PredictionRow.bar_time.desc()).limit(limit)
        ).all()
    out = []
    for bar_time, sig, outcomes in reversed(rows):
        out.append({
            "bar_time": _utc(bar_time).isoformat(), "id": sig.get("id"), "direction": sig.get("direction"),
            "confidence": sig.get("confidence"), "entry": sig.get("entry"), "stop_loss": sig.get("stop_loss"),
            "take_profit": sig.get("take_profit"), "horizon": sig.get("horizon"),
            "reasons": sig.get("reasons", []), "outcome": outcome_at_horizon(sig, outcomes),
        })
    return out


def _summary(items: list[tuple[float, bool]]) -> dict:
    n = len(items)
    hits = sum(1 for _, h in items if h)
    return {"n": n, "hits": hits, "hit_rate": hits / n if n else None,
            "mean_net_return": sum(r for r, _ in items) / n if n else None}


def scorecard(engine: Engine, now: datetime | None = None) -> dict:
    """Hit rate and mean net return per symbol and horizon over the last day and week, and
    the calibration of the direction probabilities over the same windows."""
    now = _utc(now or datetime.now(UTC))
    oldest = now - max(WINDOWS.values())
    with Session(engine) as s:
        rows = s.exec(
            select(PredictionRow.bar_time, PredictionRow.signal, PredictionRow.contract, PredictionRow.outcomes)
            .where(PredictionRow.bar_time >= _utc(oldest))
        ).all()
    out: dict = {"generated_at": now.isoformat(), "round_trip_cost": ROUND_TRIP_COST, "windows": {}}
    for name, span in WINDOWS.items():
        since = now - span
        groups: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
        bins = [[0.0, 0, 0] for _ in range(N_BINS)]  # sum of p, count, realised
        published = pending = 0
        for bar_time, sig, contract, outcomes in rows:
            if _utc(bar_time) < since:
                continue
            if sig.get("direction") in ("LONG", "SHORT"):
                published += 1
                o = outcome_at_horizon(sig, outcomes)
                if o is None:
                    pending += 1
                else:
                    groups[(sig["symbol"], sig["horizon"])].append((o["net_return"], o["hit"]))
            for key, o in (outcomes or {}).items():  # key "h{bars}" -> contract "direction_h{bars}"
                probs = (contract or {}).get(f"direction_{key}")
                if not probs:
                    continue
                for cls, p in probs.items():
                    b = bins[min(N_BINS - 1, int(float(p) * N_BINS))]
                    b[0] += float(p)
                    b[1] += 1
                    b[2] += int(o["direction"] == cls)
        cells = [{"symbol": sym, "horizon": hz, **_summary(items)} for (sym, hz), items in sorted(groups.items())]
        out["windows"][name] = {
            "published": published, "pending": pending, "cells": cells,
            "total": _summary([x for items in groups.values() for x in items]),
            "calibration": [
                {"lo": i / N_BINS, "hi": (i + 1) / N_BINS, "n": n, "predicted": sp / n if n else None,
                 "realised": k / n if n else None}
                for i, (sp, n, k) in enumerate(bins)
            ],
        }
    return out
