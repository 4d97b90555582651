"""MLSignalProcessor: the one interpreter of model outputs (ModelOutput -> Signal).

Steps for one symbol at one bar:

1. sanity: an upstream error, a missing/NaN/malformed output or a bad entry price -> NEUTRAL.
2. vote: per-horizon direction probabilities [4, 3] weighted by ``horizon_weights`` into one
   LONG/SHORT/FLAT distribution; the candidate is the likelier of LONG and SHORT.
3. scores: confidence = vote probability of the candidate; agreement = weight share of horizons
   whose own argmax is the candidate; entropy = vote entropy / ln 3; edge = weighted expected
   return in the candidate's direction; quality = mean of agreement, certainty (1 - entropy),
   hit balance (P(favourable level) vs P(adverse level)) and edge relative to adverse risk.
4. filters (FLAT likeliest, confidence, agreement, entropy, quality, return sign, OOD): every
   failing one is listed in ``reasons``; any failure -> NEUTRAL.
5. levels: SL/TP distances from ATR multiples, predicted drawdown/rally and level-hit
   probabilities, clamped to [sl_min, sl_max] / [tp_min, tp_max], priced from ``entry``.

The ``validated`` strategy replaces steps 2-4 by the bundle's validated policy
(``signals.policy``): per horizon, LONG/SHORT only when that horizon made money after costs out
of sample on validation (walk-forward) and P(LONG) - P(SHORT) clears its validated margin; otherwise NEUTRAL with
"no validated edge" or the margin it missed. Every signal (NEUTRAL included, whenever the model
produced a usable output) carries the calibrated move forecast per horizon.

``process`` never raises: whatever goes wrong becomes a NEUTRAL signal with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from model.contract import N_CLASSES, N_HORIZONS, ModelOutput, TargetSpec
from model.feature_stats import FeatureStats
from signals.config import SignalConfig
from signals.ood import check_row
from signals.policy import TradingPolicy
from signals.schema import Direction, HorizonForecast, Signal, signal_id

LONG, SHORT, FLAT = 0, 1, 2  # column order of ModelOutput.direction_probs (contract DIRECTIONS)
_LN3 = math.log(N_CLASSES)


def horizon_label(minutes: int) -> str:
    """15 -> '15m', 60 -> '1h', 720 -> '12h', 1440 -> '1d'."""
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


@dataclass(frozen=True)
class Vote:
    """The interpreted scores of one output (all in [0, 1] except ``edge``, a signed fraction)."""

    direction: Direction  # candidate LONG or SHORT
    probs: np.ndarray  # [3] weighted LONG/SHORT/FLAT
    confidence: float
    agreement: float
    entropy: float
    edge: float  # weighted expected return in the candidate's direction (fraction)
    quality: float
    horizon_index: int  # the horizon contributing most to the candidate


class MLSignalProcessor:
    """Turns one ModelOutput into one Signal under a SignalConfig (plain class, no Ray)."""

    def __init__(
        self, config: SignalConfig, target_spec: TargetSpec, policy: TradingPolicy | None = None,
        policy_error: str | None = None,
    ) -> None:
        self.config = config
        self.spec = target_spec
        self.policy = policy
        self.policy_error = policy_error  # why the bundle's policy could not be read (validated -> NEUTRAL)
        w = np.asarray(config.horizon_weights, dtype=np.float64)
        self._weights = w / w.sum()
        self._levels = np.asarray(target_spec.levels, dtype=np.float64)
        self._horizon_minutes = [target_spec.horizon_minutes(i) for i in range(N_HORIZONS)]
        self._expiry = list(config.expiry_minutes or self._horizon_minutes)

    # ------------------------------------------------------------------ public
    def process(
        self,
        symbol: str,
        output: ModelOutput | None,
        *,
        entry: float | None,
        atr: float | None,
        bar_time: datetime,
        model_version: str,
        feature_spec_hash: str,
        features_last_row: np.ndarray | None = None,
        feature_stats: FeatureStats | None = None,
        now: datetime | None = None,
        error: str | None = None,
    ) -> Signal:
        """One Signal for ``symbol``. entry: last close (quote currency); atr: average true range
        in price units on the model bar timeframe (None: levels come from the model alone);
        bar_time: open time of the last closed 1-minute candle (UTC)."""
        now = now or datetime.now(UTC)
        base = dict(
            symbol=symbol, bar_time=bar_time, model_version=model_version,
            feature_spec_hash=feature_spec_hash, now=now,
        )
        try:
            return self._process(
                output, entry=entry, atr=atr, features_last_row=features_last_row,
                feature_stats=feature_stats, error=error, **base,
            )
        except Exception as exc:  # never raise to the caller: the tick goes on for other symbols
            return self._neutral(entry, [f"internal error: {type(exc).__name__}: {exc}"], None, **base)

    def vote(self, output: ModelOutput) -> Vote:
        """Weighted horizon vote and the scores derived from it (expects a finite output)."""
        p = output.direction_probs
        w = self._weights
        probs = w @ p  # [3]
        cand = LONG if probs[LONG] >= probs[SHORT] else SHORT
        sign = 1.0 if cand == LONG else -1.0
        agreement = float(w[np.argmax(p, axis=1) == cand].sum())
        q = np.clip(probs, 1e-12, 1.0)
        entropy = float(-(q * np.log(q)).sum() / _LN3)
        edge = float(sign * (w @ output.returns))
        fav_hit, adv_hit = (output.long_hit, output.short_hit) if cand == LONG else (
            output.short_hit, output.long_hit)
        fav, adv = float(w @ fav_hit), float(w @ adv_hit)
        hit_balance = fav / (fav + adv) if fav + adv > 0 else 0.5
        adverse_risk = max(self._adverse_risk(output, cand, N_HORIZONS - 1), 1e-6)
        edge_score = float(np.clip(0.5 + edge / (2.0 * adverse_risk), 0.0, 1.0))
        quality = float(np.mean([agreement, 1.0 - entropy, hit_balance, edge_score]))
        horizon_index = int(np.argmax(w * p[:, cand]))
        return Vote(
            Direction.LONG if cand == LONG else Direction.SHORT, probs, float(probs[cand]),
            agreement, entropy, edge, quality, horizon_index,
        )

    # ----------------------------------------------------------------- helpers
    def _process(self, output, *, entry, atr, features_last_row, feature_stats, error, **base) -> Signal:
        problem = self._input_problem(output, entry, error)
        if problem:
            return self._neutral(entry, [problem], None, **base)
        base["forecast"] = self.forecast(output)
        if self.config.strategy == "validated":
            return self._validated(output, entry, atr, features_last_row, feature_stats, base)

        v = self.vote(output)
        reasons = [
            f"vote {v.direction.value}: p={v.confidence:.3f} agreement={v.agreement:.2f} "
            f"entropy={v.entropy:.3f} edge={v.edge:+.5f} quality={v.quality:.3f}"
        ]
        failed = self._gate_failures(v) + self._ood_reasons(features_last_row, feature_stats)

        atr_frac = atr / entry if atr is not None and math.isfinite(atr) and atr > 0 else 0.0
        if atr is not None and atr_frac == 0.0:
            reasons.append(f"ATR {atr!r} unusable; levels from the model alone")
        if failed:
            return self._neutral(entry, failed + reasons, v, **base)

        sl_frac, tp_frac = self._level_fractions(output, v, atr_frac)
        levels = self._priced_levels(entry, v.direction, sl_frac, tp_frac)
        if levels is None:
            return self._neutral(entry, [f"levels collapse at entry {entry!r}"] + reasons, v, **base)
        sl, tp = levels
        reasons.append(f"sl={sl_frac:.4f} tp={tp_frac:.4f} of entry (atr={atr_frac:.4f})")
        c = self.config
        net = v.edge - 2e-4 * (c.fee_bps + c.slippage_bps)  # round trip: both sides
        return self._signal(
            entry, v.direction, v.confidence, v.quality, sl, tp, v.horizon_index, reasons, expected_edge=net, **base
        )

    def _input_problem(self, output: ModelOutput | None, entry, error: str | None) -> str | None:
        """Why there is nothing to interpret (None when the entry and the output are usable)."""
        if error:  # the upstream reason comes first: it is why there is no usable entry or output
            return f"upstream error: {error}"
        if not (isinstance(entry, (int, float)) and math.isfinite(entry) and entry > 0):
            return f"entry price {entry!r} is not a positive finite number"
        if output is None:
            return "no model output"
        return self._malformed(output)

    def _gate_failures(self, v: Vote) -> list[str]:
        """The strategy's thresholds the vote does not clear (empty: it may trade)."""
        c = self.config
        failed: list[str] = []
        if v.probs[FLAT] > v.confidence:
            failed.append(f"FLAT is likeliest (p={v.probs[FLAT]:.3f} > {v.confidence:.3f})")
        if v.confidence < c.min_confidence:
            failed.append(f"confidence {v.confidence:.3f} < min_confidence {c.min_confidence}")
        if v.agreement < c.min_agreement:
            failed.append(f"agreement {v.agreement:.2f} < min_agreement {c.min_agreement}")
        if v.entropy > c.max_entropy:
            failed.append(f"entropy {v.entropy:.3f} > max_entropy {c.max_entropy}")
        if v.quality < c.min_quality:
            failed.append(f"quality {v.quality:.3f} < min_quality {c.min_quality}")
        if c.require_return_agreement and v.edge <= 0:
            failed.append(f"expected return {v.edge:+.5f} disagrees with {v.direction.value}")
        return failed

    @staticmethod
    def _priced_levels(entry: float, direction: Direction, sl_frac: float, tp_frac: float) -> tuple[float, float] | None:
        """(stop loss, take profit) in price, on the right sides of ``entry``; None when they collapse."""
        if direction is Direction.LONG:
            sl, tp = entry * (1.0 - sl_frac), entry * (1.0 + tp_frac)
            ordered = sl < entry < tp
        else:
            sl, tp = entry * (1.0 + sl_frac), entry * (1.0 - tp_frac)
            ordered = tp < entry < sl
        if not (ordered and sl > 0 and tp > 0 and math.isfinite(sl) and math.isfinite(tp)):
            return None
        return sl, tp

    def forecast(self, output: ModelOutput) -> list[HorizonForecast]:
        """The calibrated move forecast of every horizon."""
        p = output.direction_probs
        abs_move = self.spec.expected_abs_move(p)
        return [
            HorizonForecast(
                horizon=horizon_label(self._horizon_minutes[k]),
                p_long=float(p[k, LONG]), p_short=float(p[k, SHORT]),
                p_move=float(np.clip(p[k, LONG] + p[k, SHORT], 0.0, 1.0)),
                band=float(self.spec.flat_bands[k]),
                expected_abs_move=None if abs_move is None else float(abs_move[k]),
                expected_return=float(output.returns[k]), level=float(self._levels[k]),
                p_long_level=float(output.long_hit[k]), p_short_level=float(output.short_hit[k]),
            )
            for k in range(N_HORIZONS)
        ]

    def _validated(self, output: ModelOutput, entry: float, atr, row, stats, base: dict) -> Signal:
        """The ``validated`` strategy: trade a horizon only where the bundle's policy found an
        edge after costs on validation, and only above that horizon's validated margin."""
        pol = self.policy
        if self.policy_error:
            return self._neutral(entry, [f"no validated edge: {self.policy_error}"], None, **base)
        if pol is None:
            return self._neutral(entry, ["no validated edge: the model bundle has no validated policy "
                                         "(`mlsignals policy` writes one)"], None, **base)
        p = output.direction_probs
        margin = p[:, LONG] - p[:, SHORT]
        labels = [horizon_label(m) for m in self._horizon_minutes]
        if not pol.any_enabled:
            return self._neutral(entry, ["no validated edge: no horizon of this model made money after "
                                         f"{pol.fee_bps:g} bps fees + {pol.slippage_bps:g} bps slippage out of sample "
                                         "on validation (walk-forward)"],
                                 None, **base)
        ratios = {k: abs(margin[k]) / max(h.min_margin or 0.0, 1e-9)
                  for k, h in enumerate(pol.horizons) if h.enabled}
        passing = {k: r for k, r in ratios.items() if r >= 1.0}
        failed = self._ood_reasons(row, stats)
        if not passing:
            failed.append("below the validated margin: " + ", ".join(
                f"{labels[k]} |P(L)-P(S)|={abs(margin[k]):.4f} < {pol.horizons[k].min_margin:.4f}" for k in ratios))
        if failed:
            disabled = [labels[k] for k, h in enumerate(pol.horizons) if not h.enabled]
            extra = [f"no validated edge at {', '.join(disabled)}"] if disabled else []
            return self._neutral(entry, failed + extra, None, **base)
        k = max(passing, key=passing.get)
        cand = LONG if margin[k] > 0 else SHORT
        sign = 1.0 if cand == LONG else -1.0
        q = np.clip(p[k], 1e-12, 1.0)
        hp = pol.horizons[k]
        v = Vote(Direction.LONG if cand == LONG else Direction.SHORT, p[k], float(p[k, cand]), 1.0,
                 float(-(q * np.log(q)).sum() / _LN3), float(sign * output.returns[k]),
                 float(np.clip(0.5 * passing[k], 0.0, 1.0)), k)  # quality 1 at twice the margin
        atr_frac = atr / entry if atr is not None and math.isfinite(atr) and atr > 0 else 0.0
        sl_frac, tp_frac = self._level_fractions(output, v, atr_frac)
        sl, tp = (entry * (1.0 - sl_frac), entry * (1.0 + tp_frac)) if cand == LONG else (
            entry * (1.0 + sl_frac), entry * (1.0 - tp_frac))
        if not (min(sl, tp) > 0 and math.isfinite(sl) and math.isfinite(tp)):
            return self._neutral(entry, [f"levels collapse at entry {entry!r}"], v, **base)
        reasons = [
            f"validated {labels[k]}: P(L)-P(S)={margin[k]:+.4f} beyond {hp.min_margin:.4f} "
            f"(validation: {hp.val_trades} trades, mean net {hp.val_mean_net:+.5f}, t={hp.val_t:.2f})",
            f"sl={sl_frac:.4f} tp={tp_frac:.4f} of entry (atr={atr_frac:.4f})",
        ]
        return self._signal(entry, v.direction, v.confidence, v.quality, sl, tp, k, reasons,
                            expected_edge=hp.val_mean_net, **base)

    @staticmethod
    def _malformed(output: ModelOutput) -> str | None:
        shapes = {
            "returns": (N_HORIZONS,), "direction_probs": (N_HORIZONS, N_CLASSES),
            "long_hit": (N_HORIZONS,), "short_hit": (N_HORIZONS,), "risk": (N_HORIZONS,),
        }
        for name, shape in shapes.items():
            arr = np.asarray(getattr(output, name, None), dtype=np.float64)
            if arr.shape != shape:
                return f"malformed model output: {name} has shape {arr.shape}, expected {shape}"
            if not np.isfinite(arr).all():
                return f"non-finite model output in {name}"
        if output.raw is not None and not np.isfinite(np.asarray(output.raw, dtype=np.float64)).all():
            return "non-finite model output in raw"
        p = output.direction_probs
        if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
            return "malformed model output: direction probabilities do not sum to 1"
        return None

    def _ood_reasons(self, row: np.ndarray | None, stats: FeatureStats | None) -> list[str]:
        if row is None or stats is None:
            return []
        try:
            r = check_row(row, stats, self.config.ood_z_limit)
        except ValueError as exc:
            return [f"out-of-distribution check impossible: {exc}"]
        if r.fraction_out > self.config.ood_max_fraction:
            return [
                f"out of distribution: {r.n_out + r.n_nan}/{r.n_features} features out of range "
                f"({r.fraction_out:.1%} > {self.config.ood_max_fraction:.1%}; nan={r.n_nan}; "
                f"worst: {', '.join(r.worst)})"
            ]
        return []

    def _adverse_risk(self, output: ModelOutput, cand: int, k: int) -> float:
        """Predicted adverse excursion for horizon k: drawdown for LONG, rally for SHORT, from the
        nearer risk horizon, scaled by sqrt(time) for horizons shorter than the first risk one."""
        return self._excursion(output, k, adverse=True, cand=cand)

    def _excursion(self, output: ModelOutput, k: int, *, adverse: bool, cand: int) -> float:
        use_long = k >= N_HORIZONS - 1
        pair = output.risk[2:4] if use_long else output.risk[0:2]  # (drawdown, rally)
        drawdown, rally = float(pair[0]), float(pair[1])
        value = drawdown if (cand == LONG) == adverse else rally
        r_h = self.spec.horizons[3 if use_long else 2]
        return value * math.sqrt(min(1.0, self.spec.horizons[k] / r_h))

    def _level_fractions(self, output: ModelOutput, v: Vote, atr_frac: float) -> tuple[float, float]:
        """SL/TP distances as fractions of entry for the vote's horizon."""
        k, c = v.horizon_index, self.config
        cand = LONG if v.direction is Direction.LONG else SHORT
        fav_hit = output.long_hit[k] if cand == LONG else output.short_hit[k]
        adv_hit = output.short_hit[k] if cand == LONG else output.long_hit[k]
        atr_h = atr_frac * math.sqrt(self.spec.horizons[k])  # ATR is per model bar
        # A stop inside the move the model expects against us would be hit by noise: keep it
        # beyond the predicted adverse excursion, and beyond the level when that level is likely.
        adverse = max(self._excursion(output, k, adverse=True, cand=cand), self._levels[k] * float(adv_hit))
        favourable = max(
            self._excursion(output, k, adverse=False, cand=cand) * float(fav_hit),
            self._levels[k] * float(fav_hit),
            v.edge,
        )
        sl = min(max(c.sl_atr_mult * atr_h, adverse, c.sl_min), c.sl_max)
        tp = min(max(c.tp_atr_mult * atr_h, favourable, c.tp_min), c.tp_max)
        return sl, tp

    def _neutral(self, entry, reasons: list[str], v: Vote | None, **base) -> Signal:
        ok_entry = isinstance(entry, (int, float)) and math.isfinite(entry) and entry > 0
        # A broken or unknown entry is not passed on as a price; the reasons name it.
        e = float(entry) if ok_entry else None
        k = v.horizon_index if v else N_HORIZONS - 1
        conf = v.confidence if v else 0.0
        quality = v.quality if v else 0.0
        return self._signal(e, Direction.NEUTRAL, conf, quality, None, None, k, reasons, **base)

    def _signal(
        self, entry, direction, confidence, strength, sl, tp, k, reasons, *,
        symbol, bar_time, model_version, feature_spec_hash, now, forecast=None, expected_edge=None,
    ) -> Signal:
        # bar_time is the open of the last closed minute: the information is complete at +1 min.
        expires = bar_time + timedelta(minutes=1 + self._expiry[k])
        return Signal(
            id=signal_id(symbol, bar_time, model_version), symbol=symbol, direction=direction,
            confidence=float(np.clip(confidence, 0.0, 1.0)), strength=float(np.clip(strength, 0.0, 1.0)),
            entry=entry, stop_loss=sl, take_profit=tp, horizon=horizon_label(self._horizon_minutes[k]),
            bar_time=bar_time, created_at=now, expires_at=expires, model_version=model_version,
            feature_spec_hash=feature_spec_hash, reasons=reasons,
            expected_edge=None if direction is Direction.NEUTRAL else expected_edge, forecast=forecast or [],
        )
