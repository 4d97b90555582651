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


def test_features_fill_a_short_gap_like_the_service(tmp_path, capsys):
    """A candle missing from the file: the CLI prints what the service's feature stage computes
    (the gap filled by the configured policy), not features of the gapped bars."""
    from features.calculator import RealTimeIndicatorCalculator
    from features.sources.base import FrameSource
    from mlsignals.factories import gap_policy
    from mlsignals.pipeline import FeatureStage
    from mlsignals.settings import load_settings

    at = "2025-01-20T12:14Z"
    eth = validate_candles(read_candles_csv(D / "ETHUSDT_1m.csv.gz"), "ETHUSDT").loc[:at].iloc[-12_000:]
    btc = validate_candles(read_candles_csv(D / "BTCUSDT_1m.csv.gz"), "BTCUSDT").loc[eth.index[0] : at]
    gapped = eth.drop(eth.index[-40])  # inside the last bars the features read
    gapped.to_csv(tmp_path / "ETHUSDT_1m.csv", index_label="timestamp")
    btc.to_csv(tmp_path / "BTCUSDT_1m.csv", index_label="timestamp")
    main(["features", "--symbol", "ETHUSDT", "--candles", str(tmp_path / "ETHUSDT_1m.csv"),
          "--candles", str(tmp_path / "BTCUSDT_1m.csv"), "--at", at, "--json"])
    out = np.array(list(json.loads(capsys.readouterr().out)["features"].values()))
    stage = FeatureStage(FrameSource({"ETHUSDT": gapped, "BTCUSDT": btc}),
                         RealTimeIndicatorCalculator(bar_minutes=15, n_rows=1), gap_policy(load_settings()))
    served = stage.compute(["ETHUSDT"], end=eth.index[-1])["ETHUSDT"]
    assert served.error is None
    np.testing.assert_array_equal(out, served.window[-1].astype(float))
