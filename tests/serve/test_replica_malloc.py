"""The replicas' malloc settings (common/allocator.py): a process that imported the Serve app gives
freed multi-MiB buffers back to the kernel, where glibc's defaults kept them (the soak's
FeatureCalculator grew ~1.1 GiB/hour that way, README). Each case runs in a fresh interpreter:
the settings are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common.allocator import _libc
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.skipif(_libc() is None, reason="glibc's mallopt is not available")

# What a tick does to the heap, in small: on a worker thread (as Serve runs sync methods), a big
# buffer made and freed (glibc then raises its mmap threshold to that size), then 1 MiB arrays
# with small live allocations between them, the arrays freed. Prints the MiB still resident.
_CHILD = """
import json, sys, threading
import numpy as np
if sys.argv[1] == "app":
    import serve_app  # noqa: F401  what every replica imports first
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
out = {}
def tick():
    big = np.ones(24 * 2**20 // 8)
    del big
    before = anon()
    blocks, keep = [], []
    for _ in range(150):
        blocks.append(np.ones(2**20 // 8))
        keep.append(np.ones(300))  # small, malloc'd, still alive after the tick
    del blocks
    out["retained_mib"] = anon() - before
t = threading.Thread(target=tick)
t.start()
t.join()
print(json.dumps(out))
"""


def _retained(mode: str) -> float:
    r = subprocess.run([sys.executable, "-c", _CHILD, mode], cwd=PROJECT_ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["retained_mib"]


def test_a_replica_process_gives_freed_buffers_back():
    default = _retained("plain")
    app = _retained("app")
    print(f"resident after the freed 150 MiB: glibc defaults {default:.0f} MiB, Serve app's settings {app:.0f} MiB")
    assert default > 100  # the mechanism the soak saw: freed, yet resident
    assert app < 20
