"""The files under deploy/ stay true to the code: every Grafana query names a metric that
serve_app/metrics.py really exports (and every exported metric has a panel), the KubeRay
RayService embeds serve_config.yaml, the compose file and Dockerfile keep secrets out."""

from __future__ import annotations

import ast
import json
import re

import yaml

from tests.conftest import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
# PromQL functions, aggregations and keywords these dashboards may use
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
                "by", "without", "on", "ignoring", "and", "or", "unless", "offset", "clamp_min", "topk"}


def exported_series() -> set[str]:
    """Prometheus series names of the metrics defined in serve_app/metrics.py: Ray exports
    application metrics with the ``ray_`` prefix; a histogram as _bucket, _sum and _count."""
    tree = ast.parse((PROJECT_ROOT / "serve_app" / "metrics.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("Counter", "Gauge", "Histogram") and node.args
                and isinstance(node.args[0], ast.Constant)):
            name = "ray_" + node.args[0].value
            out |= {name + s for s in ("_bucket", "_sum", "_count")} if node.func.attr == "Histogram" else {name}
    return out


def metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are neither functions/keywords nor labels."""
    e = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", e)  # grouping labels
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", e)) - PROMQL_WORDS
    return names


def panels() -> list[dict]:
    return json.loads((DEPLOY / "grafana" / "mlsignals.json").read_text())["panels"]


def test_every_panel_query_names_an_exported_metric_and_every_metric_has_a_panel():
    exported = exported_series()
    assert "ray_mlsignals_ticks_total" in exported and "ray_mlsignals_stage_latency_ms_bucket" in exported
    used: set[str] = set()
    for p in panels():
        assert p["targets"], p["title"]
        for t in p["targets"]:
            names = metric_names(t["expr"])
            assert names, (p["title"], t["expr"])
            assert names <= exported, (p["title"], names - exported)
            used |= names
    histograms = {n.removesuffix("_bucket") for n in exported if n.endswith("_bucket")}
    plain = {n for n in exported if not n.endswith(("_bucket", "_sum", "_count"))}
    for name in plain | {h + "_bucket" for h in histograms}:
        assert name in used, f"{name} has no panel"


def test_metric_name_extraction_sees_metrics_and_skips_labels():
    assert metric_names('histogram_quantile(0.95, sum by (le, stage) (rate(x_bucket{a="b"}[5m])))') == {"x_bucket"}
    assert metric_names("sum(increase(foo_total[1h])) + max(bar)") == {"foo_total", "bar"}


def test_dashboard_is_importable_json():
    d = json.loads((DEPLOY / "grafana" / "mlsignals.json").read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in d["panels"])
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource"}


def test_prometheus_example_scrapes_ray_nodes():
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = cfg["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_rayservice_embeds_serve_config():
    manifest = yaml.safe_load((DEPLOY / "kuberay" / "rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    local = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    assert embedded["http_options"]["host"] == "0.0.0.0"  # in a pod: every interface
    embedded["http_options"]["host"] = local["http_options"]["host"]
    assert embedded == local  # everything else the same: edit both (this test says when)
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in head["env"]}
    for name in ("REDIS_URL", "DATABASE_URL", "MLSIGNALS_API_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"], name  # secrets from a Secret, never inline


def test_compose_keeps_secrets_in_the_environment():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    svc = compose["services"]
    assert set(svc) == {"redis", "postgres", "mlsignals"}
    app = svc["mlsignals"]
    assert app["depends_on"] == {"redis": {"condition": "service_healthy"},
                                 "postgres": {"condition": "service_healthy"}}
    for key in ("REDIS_URL", "DATABASE_URL", "MLSIGNALS_API_KEY"):
        assert "${" in app["environment"][key], key
    assert svc["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")
    assert all(p.startswith("127.0.0.1:") for p in app["ports"])
    assert (DEPLOY / app["build"]["dockerfile"].removeprefix("deploy/")).is_file()


def test_dockerfile_container_config_is_serve_config_on_every_interface():
    """The Dockerfile derives the container's Serve config from serve_config.yaml with sed: the
    expression must still match the shipped file."""
    docker = (DEPLOY / "Dockerfile").read_text()
    m = re.search(r"sed -E 's/(.+?)/(.+?)/' serve_config\.yaml > serve_config\.container\.yaml", docker)
    assert m, "the sed line is gone"
    pattern, repl = m.group(1), m.group(2).replace("\\1", "\\g<1>")
    text = (PROJECT_ROOT / "serve_config.yaml").read_text()
    out, n = re.subn(pattern, repl, text, flags=re.M)
    assert n == 1
    cfg, local = yaml.safe_load(out), yaml.safe_load(text)
    assert cfg["http_options"]["host"] == "0.0.0.0"
    cfg["http_options"]["host"] = local["http_options"]["host"]
    assert cfg == local
