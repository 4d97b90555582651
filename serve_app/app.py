"""The application builder used by ``serve run serve_config.yaml`` (import path
``serve_app.app:build_app``) and by tests: four deployments composed with DeploymentHandles
plus the HTTP ingress."""

from __future__ import annotations

from typing import Any

from ray.serve import Application
from ray.serve.deployment import Deployment

from serve_app.deployments import FeatureCalculator, MLManager, SignalProcessor
from serve_app.ingress import Ingress
from serve_app.scheduler import SignalScheduler


def _with_env(d: Deployment, env: dict[str, str] | None) -> Deployment:
    """The deployment with ``env`` in every replica's environment (Ray's runtime_env)."""
    if not env:
        return d
    opts = dict(d.ray_actor_options or {})
    opts["runtime_env"] = {**opts.get("runtime_env", {}), "env_vars": dict(env)}
    return d.options(ray_actor_options=opts)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """args: ``config`` = path of the YAML config (default configs/default.yaml or
    $MLSIGNALS_CONFIG); ``ml_user_config`` = MLManager's user_config when not set by
    serve_config.yaml (tests); ``env`` = environment variables for every replica (how an
    operator's secrets reach the deployments without a config file: REDIS_URL, DATABASE_URL,
    MLSIGNALS_API_KEY). Resources and ``user_config`` come from serve_config.yaml."""
    args = args or {}
    config, env = args.get("config"), args.get("env")
    features = _with_env(FeatureCalculator, env).bind(config)
    ml_deployment = _with_env(MLManager, env)
    if "ml_user_config" in args:
        ml_deployment = ml_deployment.options(user_config=args["ml_user_config"])
    ml = ml_deployment.bind(config)
    signals = _with_env(SignalProcessor, env).bind(config)
    scheduler = _with_env(SignalScheduler, env).bind(features, ml, signals, config)
    return _with_env(Ingress, env).bind(features, ml, signals, scheduler, config)
