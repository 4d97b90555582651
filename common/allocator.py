"""glibc malloc settings for the long-running service processes (the Ray Serve replicas).

Why: the soak (benchmarks/bench_soak.py, README) saw the FeatureCalculator replica's resident
memory grow by ~1.1 GiB/hour while the memory its Python objects and numpy arrays hold stayed
flat (tracemalloc), and ``malloc_trim(0)`` inside the replica gave ~95% of the growth back: it
was free memory that glibc kept, not live objects. Two of glibc's defaults do it under the
replica's allocation pattern (multi-MB candle frames and feature arrays, made and freed every
tick, on whichever of Serve's worker threads runs the call):

- the *dynamic mmap threshold*: a freed mmap'd block raises the threshold to its size (up to
  32 MiB), so from then on blocks of several MiB come from the heap arenas instead of mmap, and
  freed ones stay there as holes only ``malloc_trim`` returns;
- one arena per thread up to 8 x cores: each of Serve's worker threads fills its own arena with
  such holes, so what is kept adds up over threads and time.

``limit_retained_memory`` fixes the mmap threshold (so blocks of 128 KiB and more are mmap'd
and go back to the kernel when freed) and caps the arenas at 2. Measured on the 100-symbol
tick: no slower (README, Benchmarks). A no-op where glibc is not the C library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value, now fixed (no dynamic raise)
ARENA_MAX = 2

_applied = False


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc (and compatible) only
        return libc
    except (OSError, AttributeError):
        return None


def limit_retained_memory() -> bool:
    """Apply the settings above to this process (idempotent). True when they were applied."""
    global _applied
    if _applied:
        return True
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX))
    if not ok:
        log.warning("mallopt refused the service's malloc settings; freed memory may be retained")
    _applied = ok
    return ok


def trim() -> None:
    """Give free heap memory back to the kernel now (diagnostics and tests)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
