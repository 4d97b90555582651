"""How a tick's symbols are cut into FeatureCalculator shards (plain functions, no Ray), and that
a shard without BTC still gets the cross-asset features it would get in one big call."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.errors import ConfigError
from features.sources.base import FrameSource
from mlsignals import factories
from mlsignals.settings import load_settings
from mlsignals.shards import failed_shard, shard_symbols
from tests.bundles import make_test_bundle

SYMS = [f"S{k:03d}USDT" for k in range(205)]


def test_every_symbol_once_in_order_and_balanced():
    shards = shard_symbols(SYMS, 25)
    assert [s for sh in shards for s in sh] == SYMS  # each symbol exactly once, order kept
    assert len(shards) == 9  # ceil(205 / 25)
    assert {len(sh) for sh in shards} == {22, 23}  # no straggler shard of 5
    assert all(len(sh) <= 25 for sh in shards)


@pytest.mark.parametrize(("n", "size", "lens"), [
    (7, 25, [7]),  # the embedded default: one shard, as before sharding
    (50, 25, [25, 25]),
    (51, 25, [17, 17, 17]),
    (3, 1, [1, 1, 1]),
    (0, 25, []),
])
def test_shard_sizes(n, size, lens):
    assert [len(sh) for sh in shard_symbols(SYMS[:n], size)] == lens


def test_bad_size_and_duplicates_refused():
    with pytest.raises(ValueError, match="at least 1"):
        shard_symbols(SYMS, 0)
    with pytest.raises(ValueError, match="S001USDT"):
        shard_symbols([*SYMS[:5], "S001USDT"], 2)


def test_shard_size_is_validated_in_settings():
    assert load_settings().scheduler.shard_size == 25
    assert load_settings(scheduler={"shard_size": 3}).scheduler.shard_size == 3
    with pytest.raises(ConfigError, match="scheduler.shard_size"):
        load_settings(scheduler={"shard_size": 0})


def test_failed_shard_is_neutral_material_with_a_reason():
    minute = pd.Timestamp("2026-11-30 12:00", tz="UTC")
    out = failed_shard(["ETHUSDT", "SOLUSDT"], minute, "feature shard 3 failed: ActorDiedError")
    assert list(out) == ["ETHUSDT", "SOLUSDT"]
    for sym, fr in out.items():
        assert fr.window is None and fr.bar_time == minute
        assert fr.error == f"{sym}: feature shard 3 failed: ActorDiedError"


def test_a_shard_without_btc_gets_the_same_cross_asset_features(shipped_candles, tmp_path):
    """BTC is named in one shard only; the others still load it as the cross-asset reference,
    so a symbol's window is the same whichever shard it is in."""
    bundle = make_test_bundle(tmp_path / "tiny", shipped_candles)
    frames = {s: df.iloc[:3000] for s, df in shipped_candles.items()}
    settings = load_settings(model={"path": str(bundle), "compile": False})
    end = frames["BTCUSDT"].index[-1]
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
    whole = factories.feature_stage(settings, FrameSource(frames)).compute(symbols, end=end)
    stage = factories.feature_stage(settings, FrameSource(frames))  # a fresh cache
    sharded = {}
    for shard in shard_symbols(symbols, 2):  # [BTC, ETH], [SOL, DOGE]: the second has no BTC
        sharded.update(stage.compute(shard, end=end))
    assert list(sharded) == symbols
    for s in symbols:
        assert sharded[s].error is None, sharded[s].error
        np.testing.assert_array_equal(sharded[s].window, whole[s].window)
    # and without BTC's candles at all, the shard's symbols say why instead of using other data
    no_btc = factories.feature_stage(settings, FrameSource({s: f for s, f in frames.items() if s != "BTCUSDT"}))
    res = no_btc.compute(["SOLUSDT", "DOGEUSDT"], end=end)
    assert all(r.window is None and r.error for r in res.values())
