"""The feature spec: every model input column, declared as data.

Each ``FeatureDef`` names a column (``<group>.<indicator>[_<params>][.<output>]``), the indicator that
computes it (a key of ``features.indicators.INDICATORS``), its parameters and its warm-up: how many
bars before a row must exist for that row's value to equal the full-history value (relative 1e-6).
For windowed indicators the warm-up is the look-back; for recursive (EMA / Wilder-like) ones it adds
the bars an exponential seed needs to decay below ``_CONV_TOL`` (``_conv``), so the live window is a
pure function of the spec. ``SPEC_HASH`` changes whenever any name, parameter or warm-up changes; model
bundles and logged predictions carry it and serving refuses a mismatch.

Every feature is scale-free: returns, distances in % of price or in ATR units, ratios, oscillators,
z-scores, volumes relative to their own average. No raw price or volume level is a column.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

# A recursive filter's seed error shrinks by (1 - alpha) per bar; the warm-up waits until it is
# below this fraction of the signal, which leaves two decades of margin under the 1e-6 parity test.
_CONV_TOL = 1e-8


def _conv(alpha: float) -> int:
    """Bars until a recursive filter with smoothing ``alpha`` has forgotten its seed (to _CONV_TOL)."""
    return math.ceil(math.log(_CONV_TOL) / math.log(1.0 - alpha))


def _ema_conv(n: int) -> int:
    return _conv(2.0 / (n + 1))


def _wilder_conv(n: int) -> int:
    return _conv(1.0 / n)


@dataclass(frozen=True)
class FeatureDef:
    """One model input column. ``warmup`` is in bars of whatever bar size the frame has."""

    name: str
    group: str
    indicator: str
    params: dict = field(default_factory=dict, hash=False)
    warmup: int = 0


def _fmt(v: object) -> str:
    return str(v).replace(".", "p")


def _f(group: str, indicator: str, warmup: int, output: str | None = None, **params: object) -> FeatureDef:
    """Build a FeatureDef whose name is derived from group, indicator, parameters and output."""
    name = f"{group}.{indicator}"
    if params:
        name += "_" + "_".join(_fmt(v) for v in params.values())
    if output is not None:
        name += f".{output}"
        params = {**params, "output": output}
    return FeatureDef(name=name, group=group, indicator=indicator, params=dict(params), warmup=int(warmup))


def _returns() -> list[FeatureDef]:
    out = [_f("returns", "logret", k, lag=k) for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96)]
    out += [_f("returns", "pctret", k, lag=k) for k in (1, 2, 4, 8, 16, 32)]
    # single-bar log returns of earlier bars: the recent path, not only its sum
    out += [_f("returns", "logret_shift", j + 1, k=j) for j in (1, 2, 3, 4, 5)]
    return out


def _trend() -> list[FeatureDef]:
    out = [_f("trend", "sma_dist", n - 1, n=n) for n in (5, 10, 20, 50, 100)]
    out += [_f("trend", "sma_slope", n - 1 + 3, n=n) for n in (10, 20, 50)]
    out += [_f("trend", "ema_dist", n - 1 + _ema_conv(n), n=n) for n in (5, 10, 20, 30)]
    out += [_f("trend", "ema_slope", n - 1 + 3 + _ema_conv(n), n=n) for n in (10, 20)]
    out += [_f("trend", "wma_dist", n - 1, n=n) for n in (10, 20)]
    out += [_f("trend", "dema_dist", 2 * (n - 1) + 2 * _ema_conv(n), n=10) for n in (10,)]
    out += [_f("trend", "tema_dist", 3 * (n - 1) + 3 * _ema_conv(n), n=10) for n in (10,)]
    out += [_f("trend", "kama_dist", 10 + _conv(2.0 / 31), n=10)]  # slowest KAMA constant is 2/31
    out += [
        _f("trend", "sma_cross", 49, fast=10, slow=50),
        _f("trend", "ema_cross", 19 + _ema_conv(20), fast=5, slow=20),
    ]
    for fast, slow, sig in ((12, 26, 9), (5, 13, 5)):
        w = slow - 1 + sig - 1 + _ema_conv(slow) + _ema_conv(sig)
        out += [_f("trend", "macd", w, o, fast=fast, slow=slow, signal=sig) for o in ("macd", "signal", "hist")]
    out += [_f("trend", "ppo", 25, fast=12, slow=26)]
    for n in (7, 14):
        w = 2 * n + 2 * _wilder_conv(n)
        out += [_f("trend", "adx", w, n=n), _f("trend", "plus_di", n + _wilder_conv(n), n=n)]
        out += [_f("trend", "minus_di", n + _wilder_conv(n), n=n)]
    out += [_f("trend", "dx", 14 + _wilder_conv(14), n=14), _f("trend", "adxr", 3 * 14 + 2 * _wilder_conv(14), n=14)]
    for n in (14, 25):
        out += [_f("trend", "aroon", n, o, n=n) for o in ("up", "down", "osc")]
    # PSAR is path-dependent, not exponentially forgetting; its state re-synchronises at the first
    # reversal both histories share. 200 bars is checked by the parity test on real candles.
    out += [_f("trend", "psar", 200, o, af=0.02, max_af=0.2) for o in ("dist", "dir")]
    for o in ("tenkan", "kijun", "tk_diff", "senkou_a", "senkou_b", "cloud_width"):
        out += [_f("trend", "ichimoku", 52 + 26, o, tenkan=9, kijun=26, senkou=52)]
    out += [_f("trend", "vortex", 15, o, n=14) for o in ("plus", "minus", "diff")]
    out += [_f("trend", "linreg_slope", n - 1, n=n) for n in (14, 30)]
    out += [_f("trend", "linreg_r2", n - 1, n=n) for n in (14, 30)]
    return out


def _momentum() -> list[FeatureDef]:
    out = [_f("momentum", "rsi", n + _wilder_conv(n), n=n) for n in (6, 9, 14)]
    out += [
        _f("momentum", "stoch", k + s + d, o, k=k, smooth=s, d=d)
        for k, s, d in ((14, 3, 3), (5, 3, 3))
        for o in ("k", "d")
    ]
    out += [_f("momentum", "stochf", 13, n=14)]
    w = 14 + _wilder_conv(14) + 14 + 3 + 3
    out += [_f("momentum", "stochrsi", w, o, n=14, k=14, d=3) for o in ("k", "d")]
    out += [_f("momentum", "cci", n - 1, n=n) for n in (14, 20)]
    out += [_f("momentum", "willr", n - 1, n=n) for n in (14, 28)]
    out += [_f("momentum", "roc", n, n=n) for n in (5, 10, 20)]
    out += [_f("momentum", "trix", 3 * (n - 1) + 1 + 3 * _ema_conv(n), n=n) for n in (9, 12)]
    out += [_f("momentum", "ultosc", 28, fast=7, mid=14, slow=28)]
    out += [_f("momentum", "mfi", n, n=n) for n in (7, 14)]
    w = 1 + 25 + 13 + _ema_conv(25) + _ema_conv(13) + 13 + _ema_conv(13)
    out += [_f("momentum", "tsi", w, o, fast=13, slow=25, signal=13) for o in ("tsi", "signal")]
    out += [_f("momentum", "kst", 30 + 15 + 9, o) for o in ("kst", "signal")]
    out += [_f("momentum", "cmo", n + _wilder_conv(n), n=n) for n in (9, 14)]
    out += [_f("momentum", "bop", 0), _f("momentum", "bop_sma", 13, n=14)]
    out += [_f("momentum", "apo_atr", 25 + _wilder_conv(14), fast=12, slow=26)]
    return out


def _volatility() -> list[FeatureDef]:
    out = [_f("volatility", "natr", n + _wilder_conv(n), n=n) for n in (7, 14, 21)]
    out += [_f("volatility", "atr_ratio", 21 + _wilder_conv(21), fast=7, slow=21)]
    out += [_f("volatility", "trange_pct", 1)]
    for n in (10, 20, 50):
        out += [_f("volatility", "bbands", n - 1, o, n=n, k=2) for o in ("width", "pctb")]
    for o in ("width", "pos"):
        out += [_f("volatility", "keltner", 20 + _ema_conv(20) + _wilder_conv(10), o, n=20, atr=10, k=2)]
    for n in (20, 55):
        out += [_f("volatility", "donchian", n - 1, o, n=n) for o in ("width", "pos")]
    for est in ("realized", "parkinson", "garman_klass", "rogers_satchell", "yang_zhang"):
        out += [_f("volatility", est, n + 1, n=n) for n in (10, 20, 50)]
    out += [_f("volatility", "vol_ratio", 51, fast=10, slow=50)]
    out += [_f("volatility", "range_zscore", 50, n=50)]
    return out


def _volume() -> list[FeatureDef]:
    out = [_f("volume", "obv_flow", n, n=n) for n in (10, 20)]
    out += [_f("volume", "ad_flow", n, n=n) for n in (10, 20)]
    out += [_f("volume", "adosc_rel", 10 + _ema_conv(10), fast=3, slow=10)]
    out += [_f("volume", "cmf", n - 1, n=n) for n in (10, 20)]
    out += [_f("volume", "efi_rel", 13 + _ema_conv(13) + 20, n=13, norm=20)]
    out += [_f("volume", "vol_zscore", n - 1, n=n) for n in (20, 50)]
    out += [_f("volume", "log_vol_ratio", n - 1, n=n) for n in (5, 20, 50)]
    out += [_f("volume", "vol_ema_ratio", 20 + _ema_conv(20), fast=5, slow=20)]
    out += [_f("volume", "vwap_dist", n - 1, n=n) for n in (20, 50)]
    out += [_f("volume", "up_vol_share", n, n=n) for n in (10, 20)]
    out += [_f("volume", "ret_vol_corr", n, n=n) for n in (20, 50)]
    return out


_CDL = (
    "CDLDOJI",
    "CDLHAMMER",
    "CDLENGULFING",
    "CDLHARAMI",
    "CDLMORNINGSTAR",
    "CDLEVENINGSTAR",
    "CDLSHOOTINGSTAR",
    "CDLINVERTEDHAMMER",
    "CDLHANGINGMAN",
    "CDL3WHITESOLDIERS",
    "CDL3BLACKCROWS",
    "CDLDRAGONFLYDOJI",
    "CDLGRAVESTONEDOJI",
    "CDLMARUBOZU",
    "CDLSPINNINGTOP",
    "CDLPIERCING",
    "CDLDARKCLOUDCOVER",
    "CDLHIGHWAVE",
    "CDLLONGLEGGEDDOJI",
    "CDLBELTHOLD",
    "CDLCLOSINGMARUBOZU",
    "CDLHARAMICROSS",
    "CDL3INSIDE",
    "CDL3OUTSIDE",
    "CDLRICKSHAWMAN",
    "CDLLONGLINE",
    "CDLSHORTLINE",
    "CDLTAKURI",
    "CDLDOJISTAR",
    "CDLMATCHINGLOW",
    "CDLHIKKAKE",
    "CDLSEPARATINGLINES",
)


def _candle() -> list[FeatureDef]:
    out = [
        _f("candle", "shape", 1, o)
        for o in ("body", "upper_wick", "lower_wick", "body_pct", "range_pct", "close_pos", "gap")
    ]
    out += [_f("candle", "shape_mean", 5 + 1, o, n=5) for o in ("body", "close_pos")]
    # TA-Lib candle settings average body/shadow sizes over at most 10 bars; 3-bar patterns add 2.
    out += [_f("candle", "pattern", 15, pattern=p) for p in _CDL]
    return out


def _micro() -> list[FeatureDef]:
    out = [_f("micro", "amihud", n, n=n) for n in (20, 50)]
    out += [_f("micro", "corwin_schultz", n + 2, n=n) for n in (20, 50)]
    out += [_f("micro", "roll", n + 2, n=n) for n in (20, 50)]
    out += [_f("micro", "kyle_lambda", n, n=n) for n in (20, 50)]
    out += [_f("micro", "abdi_ranaldo", n + 2, n=n) for n in (20,)]
    return out


def _stats() -> list[FeatureDef]:
    out = [_f("stats", m, n, n=n) for m in ("skew", "kurt") for n in (20, 50)]
    out += [_f("stats", "autocorr", n + lag, n=n, lag=lag) for n, lag in ((20, 1), (50, 1), (50, 2))]
    out += [_f("stats", "hurst", n, n=n) for n in (50, 96)]
    out += [_f("stats", "efficiency", n, n=n) for n in (10, 20, 50)]
    out += [_f("stats", "perm_entropy", n + 2, n=n, order=3) for n in (20, 50)]
    out += [_f("stats", "zscore", n - 1, n=n) for n in (20, 50)]
    out += [_f("stats", "pct_rank", n - 1, n=n) for n in (20, 50)]
    out += [_f("stats", "drawdown", n - 1, n=n) for n in (20, 50)]
    out += [_f("stats", "up_share", n, n=n) for n in (20, 50)]
    return out


def _time() -> list[FeatureDef]:
    return [_f("time", "cyclical", 0, f"{u}_{t}") for u in ("minute", "hour", "weekday") for t in ("sin", "cos")]


def _cross() -> list[FeatureDef]:
    out = [_f("cross", "btc_corr", n, n=n) for n in (20, 50, 96)]
    out += [_f("cross", "btc_beta", n, n=n) for n in (20, 50, 96)]
    out += [_f("cross", "rel_strength", n, n=n) for n in (4, 16, 48, 96)]
    out += [_f("cross", "btc_logret", k, lag=k) for k in (1, 4, 16)]
    out += [_f("cross", "btc_rsi", 14 + _wilder_conv(14), n=14)]
    out += [_f("cross", "btc_natr", 14 + _wilder_conv(14), n=14)]
    out += [_f("cross", "btc_realized", 21, n=20), _f("cross", "rv_ratio_btc", 21, n=20)]
    out += [_f("cross", "residual_ret", 20, n=20)]
    return out


FEATURES: tuple[FeatureDef, ...] = tuple(
    _returns()
    + _trend()
    + _momentum()
    + _volatility()
    + _volume()
    + _candle()
    + _micro()
    + _stats()
    + _time()
    + _cross()
)
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(f.group for f in FEATURES))
WARMUP: int = max(f.warmup for f in FEATURES)
# Extra bars beyond the declared warm-ups: a safety margin for the recursive indicators, whose
# warm-up is an estimate of when their seed is forgotten (checked by the parity test).
RECURSIVE_MARGIN: int = 16


def spec_json(features: tuple[FeatureDef, ...] = FEATURES) -> str:
    """The canonical JSON of the spec (sorted keys, no whitespace): what SPEC_HASH hashes."""
    return json.dumps([asdict(f) for f in features], sort_keys=True, separators=(",", ":"))


def spec_hash(features: tuple[FeatureDef, ...] = FEATURES) -> str:
    return hashlib.sha256(spec_json(features).encode()).hexdigest()[:16]


SPEC_HASH: str = spec_hash()


def live_window(n_rows: int = 1) -> int:
    """Bars needed so that the last ``n_rows`` rows equal the full-history rows (relative 1e-6)."""
    if n_rows < 1:
        raise ValueError("n_rows must be >= 1")
    return WARMUP + RECURSIVE_MARGIN + n_rows
