"""The application builder used by ``serve run serve_config.yaml`` (import path
``serve_app.app:build_app``) and by tests: four deployments composed with DeploymentHandles
plus the HTTP ingress."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve_app.deployments import FeatureCalculator, MLManager, SignalProcessor
from serve_app.ingress import Ingress
from serve_app.scheduler import SignalScheduler


def build_app(args: dict[str, Any] | None = None) -> Application:
    """args: ``config`` = path of the YAML config (default configs/default.yaml or
    $MLSIGNALS_CONFIG); ``ml_user_config`` = MLManager's user_config when not set by
    serve_config.yaml (tests). Resources and ``user_config`` come from serve_config.yaml."""
    args = args or {}
    config = args.get("config")
    features = FeatureCalculator.bind(config)
    ml_deployment = MLManager.options(user_config=args["ml_user_config"]) if "ml_user_config" in args else MLManager
    ml = ml_deployment.bind(config)
    signals = SignalProcessor.bind(config)
    scheduler = SignalScheduler.bind(features, ml, signals, config)
    return Ingress.bind(features, ml, signals, scheduler, config)
