"""The tiny real-spec test bundle the backtest and policy tests share (one per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundles import make_test_bundle


@pytest.fixture(scope="session")
def bundle(shipped_candles, tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("m") / "tiny", shipped_candles)
