"""GPU pinning without a GPU: a simulated two-node cluster (ray.cluster_utils.Cluster), one node
declaring num_gpus=1. The MLManager replica is placed on that node holding the GPU, the other
deployments hold none, and the model falls back to CPU there (no CUDA on this machine)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.bundles import make_test_bundle
from tests.conftest import PROJECT_ROOT, free_port
from tests.serve.test_serve_app import write_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_mlmanager_lands_on_the_gpu_node(shipped_candles, tmp_path):
    bundle = make_test_bundle(tmp_path / "tiny", shipped_candles)
    cfg = write_config(tmp_path / "config.yaml", bundle, f"sqlite:///{tmp_path / 'db.sqlite'}",
                       f"test:{uuid.uuid4().hex[:8]}")
    out = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tests/serve/scripts/gpu_placement.py"), str(cfg), str(free_port())],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    placement = result["placement"]
    assert placement["MLManager"] == {"node": result["gpu_node"], "gpus": 1}
    others = {k: v for k, v in placement.items() if k != "MLManager"}
    assert len(others) == 4 and all(v["gpus"] == 0 for v in others.values()), placement
    assert result["device"] == "cpu"  # declared GPU, no CUDA: the engine falls back and says so
