"""The application of serve_app.app.build_app, with environment variables given to every replica
through ``runtime_env``: how tests hand secrets (REDIS_URL, DATABASE_URL, MLSIGNALS_API_KEY) to
the deployments the way an operator's environment does, without writing them into a config file.
Same deployments and wiring as build_app; only the replicas' environment is added."""

from __future__ import annotations

from ray.serve import Application
from ray.serve.deployment import Deployment

from serve_app.deployments import FeatureCalculator, MLManager, SignalProcessor
from serve_app.ingress import Ingress
from serve_app.scheduler import SignalScheduler


def _with_env(d: Deployment, env: dict[str, str]) -> Deployment:
    opts = dict(d.ray_actor_options or {})
    opts["runtime_env"] = {"env_vars": dict(env)}
    return d.options(ray_actor_options=opts)


def build_app_with_env(config: str, env: dict[str, str], ml_user_config: dict | None = None) -> Application:
    features = _with_env(FeatureCalculator, env).bind(config)
    ml_deployment = _with_env(MLManager, env)
    if ml_user_config is not None:
        ml_deployment = ml_deployment.options(user_config=ml_user_config)
    ml = ml_deployment.bind(config)
    signals = _with_env(SignalProcessor, env).bind(config)
    scheduler = _with_env(SignalScheduler, env).bind(features, ml, signals, config)
    return _with_env(Ingress, env).bind(features, ml, signals, scheduler, config)
