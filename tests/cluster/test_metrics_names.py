"""Every Grafana query and every alert expression names a metric a real gateway exports,
with labels it carries; the scrape manifests point at what the gateway serves.

The exported names come from the two expositions of the test gateway (`/metrics` of the
pod, `/metrics/cluster` with the controller's decisions, read from Redis), after enough
traffic that the families alerts watch hold samples.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest_asyncio
import yaml
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import CLUSTER_FAMILIES, POD_FAMILIES
from cluster import validate
from tests.support.factories import joined_candidate, new_exam

MONITORING = validate.MANIFESTS / "monitoring"
NUMBERS = {"m1": ["6620401", "6620402"]}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# PromQL words that are not metric names.
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
SEVERITIES = frozenset({"critical", "warning", "info"})
# Labels Prometheus adds to every scraped sample.
TARGET_LABELS = frozenset({"job", "instance", "namespace"})


class Exported:
    """Sample names a query may use, each with the label names its samples carry."""

    def __init__(self) -> None:
        self.labels: dict[str, set[str]] = {}
        self.types: dict[str, str] = {}

    def add(self, text: str) -> None:
        for name, kind in re.findall(r"^# TYPE (\w+) (\w+)$", text, flags=re.MULTILINE):
            family = name.removesuffix("_total") if kind == "counter" else name
            self.types[family] = kind
            for suffix in SUFFIXES.get(kind, ("",)):
                self.labels.setdefault(family + suffix, set())
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.labels.setdefault(sample.name, set()).update(sample.labels)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def exported(client: httpx.AsyncClient, app: FastAPI) -> Exported:
    world = await new_exam(client, app.state.runtime, NUMBERS)
    for number in NUMBERS["m1"]:
        await joined_candidate(client, world.exam_id, number)
    found = Exported()
    for path in ("/metrics", "/metrics/cluster"):
        response = await client.get(path)
        assert response.status_code == 200, response.text
        found.add(response.text)
    return found


def metric_names(expr: str) -> dict[str, set[str]]:
    """The metric names a PromQL expression selects, each with its matchers' label names."""
    found: dict[str, set[str]] = {}
    for name, matchers in re.findall(r"(?<![\w:$])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        found.setdefault(name, set()).update(re.findall(r"(\w+)\s*[=!]~?", matchers))
    bare = re.sub(r'"[^"]*"', '""', expr)  # label values and Grafana variables
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)  # matchers, ranges
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    for name in re.findall(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare):
        if name.lower() not in KEYWORDS and not re.fullmatch(r"group_(left|right)", name):
            found.setdefault(name, set())
    return found


def dashboard_queries() -> list[str]:
    dashboard = json.loads((validate.MANIFESTS / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            # label_values(metric, label): the metric is the first argument.
            metric = re.fullmatch(r"label_values\((\w+(?:\{[^}]*\})?),\s*\w+\)", variable["query"])
            assert metric is not None, variable["query"]
            queries.append(metric.group(1))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    assert rules["kind"] == "PrometheusRule"
    return [rule for group in rules["spec"]["groups"] for rule in group["rules"]]


def scrape_manifests() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all((MONITORING / "scrape.yaml").read_text())}


def unknown(expr: str, exported: Exported) -> list[str]:
    problems = []
    names = metric_names(expr)
    for name, labels in names.items():
        if name not in exported.labels:
            problems.append(f"{name} is not exported")
        elif exported.labels[name] and not labels <= exported.labels[name] | TARGET_LABELS:
            problems.append(f"{name} has no label {sorted(labels - exported.labels[name])}")
    carried = [exported.labels.get(name, set()) for name in names]
    if all(carried):  # every metric has samples: the labels it groups by must exist
        lists = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
        grouped = {label.strip() for found in lists for label in found.split(",")} - {""}
        missing = grouped - set().union(*carried) - TARGET_LABELS
        problems += [f"no metric of it has label {label}" for label in sorted(missing)]
    return problems


def test_the_name_parser_finds_what_queries_select() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="j", x=~"$v"}[5m])))'
        " > scalar(0.5 * max(b)) and on (exam) c or absent(d_total)"
    )
    assert metric_names(expr) == {"a_bucket": {"job", "x"}, "b": set(), "c": set(),
                                        "d_total": set()}  # fmt: skip


async def test_every_dashboard_query_names_an_exported_metric(exported: Exported) -> None:
    queries = dashboard_queries()
    assert queries
    problems = {q: unknown(q, exported) for q in queries}
    assert {q: p for q, p in problems.items() if p} == {}
    named = {name for q in queries for name in metric_names(q)}
    assert "http_server_request_duration_seconds_bucket" in named


async def test_every_alert_names_an_exported_metric(exported: Exported, app: FastAPI) -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
    problems = {rule["alert"]: unknown(rule["expr"], exported) for rule in rules}
    assert {alert: p for alert, p in problems.items() if p} == {}
    # The exam-day signals the issue asks for each have their alert.
    watched = {name for rule in rules for name in metric_names(rule["expr"])}
    assert {
        "http_server_request_duration_seconds_bucket",  # login p99
        "examday_candidate_cameras",  # tracks missing
        "examday_verifier_queue_depth",
        "examday_room_shard_uptime_seconds",  # shard restarts
        "examday_redis_persistence_info",
        "examday_region_store_up",
    } <= watched
    # Route label values are route templates of the gateway.
    routes = set(app.openapi()["paths"])  # the route templates requests are labelled with
    texts = [rule["expr"] for rule in rules] + dashboard_queries()
    for route in {r for text in texts for r in re.findall(r'http_route="([^"]*)"', text)}:
        assert route in routes, route


async def test_the_family_catalogue_is_what_the_gateway_exports(exported: Exported) -> None:
    assert exported.types.items() >= {**CLUSTER_FAMILIES, **POD_FAMILIES}.items()
    ours = {name for name in exported.types if name.startswith("examday_")}
    assert ours == set(CLUSTER_FAMILIES)


def test_the_scrape_manifests_point_at_the_gateway(app: FastAPI) -> None:
    gateway = {d["kind"]: d for d in validate.load_all(validate.GATEWAY)}
    pod = gateway["Deployment"]["spec"]["template"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    monitors = scrape_manifests()
    # Every pod's own /metrics, job named by the pods' `app` label (what the alerts filter).
    per_pod = monitors["PodMonitor"]["spec"]
    assert per_pod["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["labels"][per_pod["jobLabel"]] == "examday-gateway"
    assert [(e["port"], e["path"]) for e in per_pod["podMetricsEndpoints"]] == [
        ("http", "/metrics")
    ]
    assert "http" in ports
    # /metrics/cluster once, through the Service.
    once = monitors["ScrapeConfig"]["spec"]
    assert once["metricsPath"] == "/metrics/cluster"
    assert [sd["role"] for sd in once["kubernetesSDConfigs"]] == ["Service"]
    keep = next(r for r in once["relabelings"] if r.get("action") == "keep")
    service = gateway["Service"]
    names = [f"{service['metadata']['name']};{p['name']}" for p in service["spec"]["ports"]]
    assert [n for n in names if re.fullmatch(keep["regex"], n)] == ["examday-gateway;http"]
    routes = set(app.openapi()["paths"])  # the route templates requests are labelled with
    assert {"/metrics", "/metrics/cluster"} <= routes
