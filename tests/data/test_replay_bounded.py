"""The replay source serves minute after minute without anything piling up: what a replica does
for hours (the soak, README). Each minute's candles used to be sliced out of the long-lived
recorded frames, and under pandas' copy-on-write every slice left a weak reference on those
frames' blocks, pruned only in batches of hundreds: ~1,800 more objects a minute at 100 symbols."""

from __future__ import annotations

import gc
import weakref

import pandas as pd

from features.sources.replay import ReplaySource


def _weakrefs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is weakref.ReferenceType)


def test_serving_minutes_leaves_nothing_behind(shipped_candles):
    frames = {s: f.copy() for s, f in shipped_candles.items()}  # our own, untouched by other tests
    src = ReplaySource(frames, history=2000)
    t0 = pd.Timestamp("2026-11-25 12:00", tz="UTC")
    for k in range(5):  # warm up whatever is made once
        for s in src.symbols():
            src.get_candles(s, 500, end=t0 + pd.Timedelta(minutes=k))
    before = _weakrefs()
    minutes = 200
    for k in range(5, 5 + minutes):
        for s in src.symbols():
            src.get_candles(s, 500, end=t0 + pd.Timedelta(minutes=k))
    grown = _weakrefs() - before
    # the old slicing left >= one per symbol and minute (7 x 200 = 1,400 here)
    assert grown < 50, f"{grown} weak references more after {minutes} minutes of {len(frames)} symbols"


def test_served_rows_are_the_recorded_ones_with_wall_clock_times(shipped_candles):
    src = ReplaySource(shipped_candles, history=2000)
    t = pd.Timestamp("2026-11-25 12:00", tz="UTC")
    got = src.get_candles("ETHUSDT", 300, end=t)
    row = src.recorded_row(t)
    want = shipped_candles["ETHUSDT"].iloc[row - 299 : row + 1]
    assert list(got.columns) == list(want.columns)
    assert (got.to_numpy() == want.to_numpy()).all()
    assert got.index.name == "timestamp" and got.index[-1] == t and len(got) == 300
    assert (got.index[1:] - got.index[:-1] == pd.Timedelta(minutes=1)).all()
    # the caller owns its frame: writing to it changes nothing for the next caller
    got.iloc[-1, 0] = -1.0
    assert src.get_candles("ETHUSDT", 300, end=t).iloc[-1, 0] == want.iloc[-1, 0]
    assert src.get_candles("ETHUSDT", 0, end=t).empty
