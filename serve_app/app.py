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
    $MLSIGNALS_CONFIG). Resources and ``user_config`` come from serve_config.yaml."""
    config = (args or {}).get("config")
    features = FeatureCalculator.bind(config)
    ml = MLManager.bind(config)
    signals = SignalProcessor.bind(config)
    scheduler = SignalScheduler.bind(features, ml, signals, config)
    return Ingress.bind(features, ml, signals, scheduler, config)
