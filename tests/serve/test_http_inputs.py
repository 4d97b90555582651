"""Properties of the HTTP request models and error handlers, in process (no Ray): any JSON value
in any field is either accepted and usable, or refused with a response that names the field and
the rule and that can always be written. The same properties run over HTTP against the real app
in tests/faults/test_fault_ride_through.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from common.errors import CandleValidationError
from serve_app.inputs import CandleIn, PredictRequest, candle_frame, http_error, json_safe_input, validation_error

# Any JSON value, including what Python's json module reads beyond the standard (NaN, Infinity,
# numbers that overflow a float, integers far beyond 64 bits) and strings with NUL bytes and
# lone surrogates.
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**400), max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=60)
           | st.sampled_from(["\x00", "\ud800", "BTC\x00USDT", "x" * 5000, "2262-04-12T00:00:00",
                              "0001-01-01T00:00:00-23:59", "9999-12-31T23:59:59+14:00", "1e400", "NaN"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                     max_size=4), max_leaves=12)
TIMESTAMPS = (st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                           timezones=st.none() | st.just(UTC) | st.builds(
                               lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439))).map(
                                   lambda d: d.isoformat())
              | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True, allow_infinity=True))
FIELDS = ["timestamp", "open", "high", "low", "close", "volume"]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _refusal(exc: ValidationError) -> dict:
    """What the app answers for this validation error (the real handler), as the client reads it."""
    errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]  # as FastAPI reports a body's errors
    resp = asyncio.run(validation_error(None, RequestValidationError(errors)))
    assert resp.status_code == 422
    body = json.loads(resp.body)  # always valid JSON, whatever the input was
    for item in body["detail"]:
        assert item["loc"] and item["msg"]  # the field and the rule
    return body


@FAST
@given(body=JSON)
def test_any_json_body_is_accepted_or_refused_with_field_and_rule(body):
    try:
        PredictRequest.model_validate(body)
    except ValidationError as exc:
        _refusal(exc)


@FAST
@given(field=st.sampled_from(["symbol", "candles", "btc_candles"]), value=JSON)
def test_any_value_in_any_request_field(field, value):
    try:
        PredictRequest.model_validate({"symbol": "BTCUSDT", field: value})
    except ValidationError as exc:
        body = _refusal(exc)
        assert any(item["loc"][1] == field for item in body["detail"])


@FAST
@given(field=st.sampled_from(FIELDS), value=JSON | TIMESTAMPS)
def test_any_value_in_any_candle_field_is_refused_or_usable(field, value):
    good = {"timestamp": "2025-06-01T00:00:00", "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0}
    try:
        req = PredictRequest.model_validate({"symbol": "ETHUSDT", "candles": [{**good, field: value}]})
    except ValidationError as exc:
        body = _refusal(exc)
        assert any(field in item["loc"] or "candles" in item["loc"] for item in body["detail"])
        return
    try:  # accepted: the ingress turns it into a frame, or refuses it naming the candle's rule
        candle_frame(req.candles, "ETHUSDT")
    except CandleValidationError as exc:
        assert "ETHUSDT" in str(exc)


@FAST
@given(ts=TIMESTAMPS)
def test_accepted_timestamps_are_representable(ts):
    try:
        c = CandleIn(timestamp=ts, open=1, high=1, low=1, close=1, volume=0)
    except ValidationError:
        return
    t = pd.Timestamp(c.timestamp, unit="ms", tz="UTC") if isinstance(c.timestamp, int) else pd.Timestamp(c.timestamp)
    assert datetime(1970, 1, 1, tzinfo=UTC) <= t.to_pydatetime() < datetime(2262, 1, 1, tzinfo=UTC)
    try:
        candle_frame([c], "BTCUSDT")
    except CandleValidationError as exc:  # e.g. off the minute grid: a named candle rule
        assert "BTCUSDT @" in str(exc)


def test_overflowing_and_out_of_range_values_name_field_and_rule():
    cases = {
        '{"symbol": 1e400}': ("symbol", "valid string"),
        '{"symbol": "BTC\\u0000USDT"}': ("symbol", "pattern"),
        '{"symbol": "ETHUSDT", "candles": [{"timestamp": "9999-12-31T00:00:00", "open": 1, "high": 1, "low": 1,'
        ' "close": 1, "volume": 1}]}': ("timestamp", "2262"),
        '{"symbol": "ETHUSDT", "candles": [{"timestamp": 99999999999999999, "open": 1, "high": 1, "low": 1,'
        ' "close": 1, "volume": 1}]}': ("timestamp", "epoch milliseconds"),
        '{"symbol": "ETHUSDT", "candles": [{"timestamp": 0, "open": Infinity, "high": 1, "low": 1,'
        ' "close": 1, "volume": 1}]}': ("open", "finite"),
    }
    for raw, (field, rule) in cases.items():
        try:
            PredictRequest.model_validate(json.loads(raw))
        except ValidationError as exc:
            body = _refusal(exc)
            assert any(field in item["loc"] and rule in item["msg"] for item in body["detail"]), body
        else:
            raise AssertionError(f"accepted: {raw}")


def test_error_bodies_can_always_be_written():
    weird = [float("inf"), float("nan"), 10**5000, "\ud800\x00", b"\xff", object(), {1: [float("-inf")] * 50},
             [[[[[["deep"]]]]]], "y" * 10_000]
    for v in weird:
        resp = asyncio.run(http_error(None, HTTPException(404, detail=v)))
        assert resp.status_code == 404
        json.loads(resp.body)
        json.dumps(json_safe_input(v), allow_nan=False)
