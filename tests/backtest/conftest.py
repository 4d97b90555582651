"""The tiny real-spec test bundle the backtest and policy tests share (one per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundles import make_test_bundle


@pytest.fixture(scope="session")
def bundle(shipped_candles, tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("m") / "tiny", shipped_candles)


@pytest.fixture(scope="session")
def bundle15(shipped_candles, tmp_path_factory) -> Path:
    """15-minute bars, context 16: a chunk's warm-up (225 grid rows) is longer than its minutes.
    Seed 1: random heads that trade on these minutes (seed 0's are NEUTRAL throughout), so
    comparisons of trades are not vacuous."""
    return make_test_bundle(tmp_path_factory.mktemp("d") / "b15", shipped_candles, bar_minutes=15, context=16,
                            seed=1)
