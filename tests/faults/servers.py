"""What the fault suites share: a real redis-server they can kill, a Serve deployment's
replicas (named actors in Serve's namespace) found, killed and waited for, and SQL on the
app's database."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
from sqlalchemy import create_engine, text


class RedisServer:
    """A real redis-server on a spare port (with a password when given), AOF with fsync always:
    a kill -9 loses nothing that was acknowledged."""

    def __init__(self, port: int, workdir: Path, password: str | None = None) -> None:
        self.port, self.workdir, self.password = port, workdir, password
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        auth = ["--requirepass", self.password] if self.password else []
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *auth,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, decode_responses=True, socket_timeout=2)


def replicas(app_name: str, deployment: str) -> list[str]:
    """Names of the live replica actors of a deployment."""
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and a["name"].startswith(prefix))


def kill_replica(app_name: str, deployment: str) -> str:
    """Kill the deployment's only replica; its actor name."""
    import ray

    (name,) = replicas(app_name, deployment)
    ray.kill(ray.get_actor(name, namespace="serve"))
    return name


def wait_replaced(app_name: str, deployment: str, old: str, timeout: float = 120) -> None:
    """Until another replica than ``old`` is alive and the deployment is HEALTHY."""
    from ray import serve

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = replicas(app_name, deployment)
        status = serve.status().applications[app_name].deployments[deployment].status
        if alive and old not in alive and status == "HEALTHY":
            return
        time.sleep(0.5)
    raise AssertionError(f"{deployment} was not restarted within {timeout}s")


def db_rows(app: dict, sql: str) -> list:
    engine = create_engine(app["pg_url"])
    try:
        with engine.connect() as c:
            return list(c.execute(text(sql)))
    finally:
        engine.dispose()
