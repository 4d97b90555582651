"""The policy's walk-forward choice and its day-clustered t on hand-made trades (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from mlsignals.backtest.metrics import NS_PER_DAY, day_clustered_t
from mlsignals.backtest.walk_forward import CandidateTrades, best_candidate, block_edges, walk_forward

HOUR = 3_600 * 10**9


def _cand(ret, time) -> CandidateTrades:
    return CandidateTrades(np.asarray(ret, dtype=np.float64), np.asarray(time, dtype=np.int64))


def test_one_trade_a_day_gives_the_plain_t() -> None:
    r = np.random.default_rng(0).normal(0.001, 0.01, 200)
    plain = r.mean() / (r.std(ddof=1) / np.sqrt(r.size))
    assert day_clustered_t(r, np.arange(200) * NS_PER_DAY) == pytest.approx(plain)


def test_trades_moving_together_within_a_day_count_as_one() -> None:
    # ten symbols trading the same move each day: ten times the trades, not ten times the evidence
    r = np.random.default_rng(1).normal(0.001, 0.01, 100)
    days = np.arange(100) * NS_PER_DAY
    once = day_clustered_t(r, days)
    tenfold = day_clustered_t(np.repeat(r, 10), np.repeat(days, 10) + np.tile(np.arange(10) * HOUR, 100))
    assert tenfold == pytest.approx(once)
    naive = r.mean() / (np.repeat(r, 10).std(ddof=1) / np.sqrt(1000))
    assert naive > 3 * once


def test_best_candidate_is_the_best_t_not_the_luckiest_mean() -> None:
    rng = np.random.default_rng(2)
    days = np.arange(300) * NS_PER_DAY
    steady = _cand(rng.normal(0.002, 0.01, 300), days)  # t about 3.5
    lucky = _cand(rng.normal(0.02, 0.2, 40), days[:40])  # higher mean, t well below
    assert lucky.ret.mean() > steady.ret.mean()
    assert best_candidate([lucky, steady], min_trades=30) == 1
    assert best_candidate([lucky, steady], min_trades=50, before=int(days[30])) is None


def _world(n_days: int = 120):
    """Two candidates over ``n_days``: A wins the first third and loses after; B earns a small
    steady edge throughout (six trades a day each)."""
    rng = np.random.default_rng(3)
    t = np.repeat(np.arange(n_days) * NS_PER_DAY, 6) + np.tile(np.arange(6) * 4 * HOUR, n_days)
    first = t < n_days // 3 * NS_PER_DAY
    a = np.where(first, 0.01, -0.004) + rng.normal(0, 0.002, t.size)
    b = 0.001 + rng.normal(0, 0.004, t.size)
    return [_cand(a, t), _cand(b, t)], t


def test_walk_forward_trades_each_block_with_what_was_best_before_it() -> None:
    cands, t = _world()
    edges = block_edges(t, 6)
    walk = walk_forward(cands, edges, min_trades=30, purge_ns=12 * HOUR)
    assert len(walk.picks) == 5
    assert walk.picks[0] == 0  # A looked best after block 0 ...
    assert walk.picks[-1] == 1  # ... and B once A's losses were on record
    assert (walk.trades.time >= edges[1]).all()  # block 0 is never traded: nothing came before it
    # the out-of-sample trades are exactly the picked candidate's trades inside each block
    for b, pick in enumerate(walk.picks, start=1):
        inside = (walk.trades.time >= edges[b]) & (walk.trades.time < edges[b + 1])
        c = cands[pick]
        expect = c.ret[(c.time >= edges[b]) & (c.time < edges[b + 1])]
        np.testing.assert_array_equal(walk.trades.ret[inside], expect)


def test_walk_forward_choices_never_read_later_trades() -> None:
    cands, t = _world()
    edges = block_edges(t, 6)
    base = walk_forward(cands, edges, min_trades=30, purge_ns=12 * HOUR)
    # rewrite everything from block 3 on: picks for blocks 1..3 must not move
    late = t >= edges[3] - 12 * HOUR
    flipped = [_cand(np.where(late, -c.ret * 50, c.ret), c.time) for c in cands]
    again = walk_forward(flipped, edges, min_trades=30, purge_ns=12 * HOUR)
    assert again.picks[:3] == base.picks[:3]
    assert again.picks != base.picks  # (the rewrite does change the later picks)


def test_trades_still_open_at_a_block_start_do_not_count_for_its_choice() -> None:
    # B's only trades are decided in the 6 hours before block 1: their outcome (12 h horizon) is
    # not known when block 1 starts, so A must be chosen; without the purge B would be
    days = np.arange(40) * NS_PER_DAY
    a = _cand(np.random.default_rng(4).normal(0.001, 0.01, 40), days)
    edges = np.array([0, 40 * NS_PER_DAY + 3 * HOUR, 80 * NS_PER_DAY], dtype=np.int64)  # B spans two days
    late = edges[1] - np.arange(1, 41) * (6 * HOUR // 40)
    b = _cand(0.01 + np.random.default_rng(5).normal(0, 0.001, 40), late)
    assert walk_forward([a, b], edges, min_trades=30, purge_ns=12 * HOUR).picks == [0]
    assert walk_forward([a, b], edges, min_trades=30, purge_ns=0).picks == [1]


def test_in_sample_best_can_lose_out_of_sample() -> None:
    # A alone: great on the first third, so it is "best" in sample, and it loses walk-forward
    cands, t = _world()
    a = cands[0]
    assert a.ret.mean() > 0
    walk = walk_forward([a], block_edges(t, 6), min_trades=30, purge_ns=12 * HOUR)
    assert walk.summary["mean_net"] < 0 and walk.summary["t"] < 0


def test_the_shipped_policy_was_validated_walk_forward_and_trades_only_what_passed() -> None:
    from pathlib import Path

    from mlsignals.backtest.walk_forward import MIN_T
    from model.bundle import load_bundle
    from signals.policy import TradingPolicy

    bundle = load_bundle(Path(__file__).resolve().parents[2] / "models" / "default")  # checksums verified
    policy = TradingPolicy.from_dict(bundle.policy)
    v = policy.validation
    assert v["protocol"] == "walk-forward" and v["min_t"] >= MIN_T and len(v["block_edges"]) >= 4
    assert (policy.fee_bps, policy.slippage_bps) == (4.0, 1.0)
    for h, walk in zip(policy.horizons, v["walk_forward"], strict=True):
        assert (h.val_trades, h.val_mean_net, h.val_t) == (walk["trades"], walk["mean_net"], walk["t"])
        passed = h.val_trades >= 30 and (h.val_mean_net or 0) > 0 and (h.val_t or -np.inf) >= v["min_t"]
        assert passed if h.enabled else h.why.startswith("no validated edge"), h.why
