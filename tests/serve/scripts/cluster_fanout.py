"""Run in a subprocess by test_cluster_fanout (a Cluster needs its own Ray, not the test
session's): a simulated three-node Ray cluster, a head and two "feature" nodes that each declare
one unit of a custom resource FeatureCalculator replicas ask for, so its two replicas must land
on different nodes. Runs scheduler ticks over every symbol of the config, then kills one
FeatureCalculator replica while a tick is in flight. Prints one ``RESULT {json}`` line with the
tick reports and what the test needs to judge them; the test asserts, this script only observes.

    python tests/serve/scripts/cluster_fanout.py CONFIG HTTP_PORT
"""

from __future__ import annotations

import json
import sys
import time

import httpx
import pandas as pd
import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

import serve_app.app as app_module
from features.sources.base import last_closed_minute
from serve_app.deployments import FeatureCalculator

APP = "fanout"
FC_CLASS = f"ServeReplica:{APP}:FeatureCalculator"
config_path, port = sys.argv[1], int(sys.argv[2])
t_start = time.monotonic()

small = {"object_store_memory": 150 * 1024**2}  # three raylets on one 2-core machine
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, **small})
feature_nodes = [cluster.add_node(num_cpus=1, resources={"features": 1}, **small) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
# one HTTP proxy: the simulated nodes share one IP address, so only one can bind the port
serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})

# Two replicas, one "features" unit each: Ray cannot put both on one node.
app_module.FeatureCalculator = FeatureCalculator.options(
    num_replicas=2, ray_actor_options={"num_cpus": 0.5, "resources": {"features": 1}})
serve.run(app_module.build_app({"config": config_path}), name=APP, route_prefix="/")
sched = serve.get_deployment_handle("SignalScheduler", APP)
t_ready = time.monotonic()


def fc_replicas() -> list:
    return [a for a in list_actors(filters=[("class_name", "=", FC_CLASS), ("state", "=", "ALIVE")])]


def wait_two_replicas(timeout: float = 120) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = serve.status().applications[APP].deployments["FeatureCalculator"]
        alive = fc_replicas()
        if status.status == "HEALTHY" and status.replica_states.get("RUNNING", 0) == 2 and len(alive) == 2:
            return alive
        time.sleep(1)
    raise RuntimeError(f"FeatureCalculator did not get back to 2 running replicas: {serve.status()}")


def report_dict(report) -> dict:
    d = dict(report.__dict__)
    json.dumps(d)  # the report must stay JSON as is (/readyz serves it)
    return d


now = last_closed_minute()
minutes = [now - pd.Timedelta(minutes=k) for k in range(30, 0, -1)]  # a fresh minute per tick
normal = []
for _ in range(2):  # the first one includes the replicas' cold start (model meta, first features)
    normal.append(report_dict(sched.tick.remote(minutes.pop(0)).result(timeout_s=240)))
ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30).json()

# Kill one FeatureCalculator replica while a tick is in flight; if the kill missed the feature
# stage (too early or too late), wait for Serve to replace the replica and try another delay.
kills = []
feature_s = max(sh["seconds"] for sh in normal[-1]["shards"])
for delay in (0.25 * feature_s, 0.1 * feature_s, 0.5 * feature_s, 0.0):
    victim = wait_two_replicas()[0]
    pending = sched.tick.remote(minutes.pop(0))
    time.sleep(delay)
    ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
    report = report_dict(pending.result(timeout_s=240))
    kills.append({"delay_s": delay, "victim_node": victim.node_id, "report": report})
    if any(sh["error"] for sh in report["shards"]):
        break
wait_two_replicas()
after = report_dict(sched.tick.remote(minutes.pop(0)).result(timeout_s=240))  # Serve replaced the replica

print("RESULT " + json.dumps({
    "feature_nodes": [n.node_id for n in feature_nodes],
    "normal": normal, "kills": kills, "after": after,
    "readyz_last_tick": ready.get("scheduler", {}).get("last_tick"),
    "startup_s": round(t_ready - t_start, 1), "total_s": round(time.monotonic() - t_start, 1),
}), flush=True)
serve.shutdown()
ray.shutdown()
cluster.shutdown()
