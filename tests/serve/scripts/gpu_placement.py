"""Run in a subprocess by test_gpu_placement: a two-node Ray cluster where only one node
declares a GPU. MLManager asks for num_gpus=1 and must land there; the other deployments must
not hold the GPU. Prints one JSON line with the placement."""

from __future__ import annotations

import json
import sys

import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from serve_app.app import build_app
from serve_app.deployments import MLManager

config_path = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "resources": {"head": 1}})
gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})

# The same override serve_config.yaml applies with `num_gpus: 1`.
import serve_app.app as app_module  # noqa: E402

app_module.MLManager = MLManager.options(ray_actor_options={"num_cpus": 0.5, "num_gpus": 1})
serve.run(build_app({"config": config_path}), name="gpu-test", route_prefix="/")
info = serve.get_deployment_handle("MLManager", "gpu-test").info.remote().result()
placement = {}
for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True):
    name = a.class_name or ""
    if name.startswith("ServeReplica:gpu-test:"):
        placement[name.split(":")[-1]] = {"node": a.node_id, "gpus": (a.required_resources or {}).get("GPU", 0)}
print("RESULT " + json.dumps({"placement": placement, "gpu_node": gpu_node.node_id, "device": info["device"]}), flush=True)
serve.shutdown()
ray.shutdown()
cluster.shutdown()
