"""NaN and inf are not JSON: one helper turns them (and numpy scalars) into plain JSON values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_safe(o: Any) -> Any:
    """Recursively: non-finite floats -> None, numpy scalars -> Python numbers."""
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o
