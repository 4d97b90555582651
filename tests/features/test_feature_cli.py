"""`mlsignals features` on the shipped candles: JSON row at a time, and the missing-BTC error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from features.calculator import compute_features
from features.candles import read_candles_csv, resample, validate_candles
from features.spec import FEATURE_NAMES, SPEC_HASH
from mlsignals.cli import main

D = Path(__file__).resolve().parents[2] / "data" / "candles" / "binance_spot_2025-01"


def test_features_json_row_matches_full_history(capsys):
    main(
        [
            "features",
            "--symbol",
            "ETHUSDT",
            "--candles",
            str(D / "ETHUSDT_1m.csv.gz"),
            "--candles",
            str(D / "BTCUSDT_1m.csv.gz"),
            "--at",
            "2025-01-20T12:14Z",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert out["spec_hash"] == SPEC_HASH and list(out["features"]) == FEATURE_NAMES
    eth = validate_candles(read_candles_csv(D / "ETHUSDT_1m.csv.gz"), "ETHUSDT")
    btc = validate_candles(read_candles_csv(D / "BTCUSDT_1m.csv.gz"), "BTCUSDT")
    full = compute_features(resample(eth, 15), resample(btc, 15), "ETHUSDT")
    ref = full.loc["2025-01-20T12:00Z"].to_numpy()
    np.testing.assert_allclose(np.array(list(out["features"].values())), ref, rtol=1e-5, atol=1e-6)


def test_features_without_btc_file_fails_with_a_clear_message(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["features", "--symbol", "ETHUSDT", "--candles", str(D / "ETHUSDT_1m.csv.gz"), "--json"])
    assert exc.value.code == 2
    assert "add BTC's file to --candles" in capsys.readouterr().err
