"""The Grafana dashboard and Prometheus alert rules in deploy/: well formed, valid PromQL, and
only metrics (and labels) the gateway really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.keys import METRICS_KEY
from tests.conftest import StartGateway
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "mcp-auth-gateway.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
OPERATIONS = REPO / "docs" / "operations.md"

# Grafana's built-in interval variables become durations; every other variable sits inside a
# label matcher's quotes, where any text is valid.
GRAFANA_DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
PROMETHEUS_METRICS = {"up"}  # added by Prometheus to every scrape target
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def query_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def substitute(expr: str) -> str:
    """A Grafana query as Prometheus receives it, with placeholder values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_DURATIONS.get(name, "placeholder")

    return GRAFANA_VARIABLE.sub(value, expr)


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries (the
    selector inside `label_values(selector, label)`)."""
    queries = [t["expr"] for p in query_panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["query"]["query"])
            assert match, variable["name"]
            queries.append(match.group(1))
    return [substitute(q) for q in queries]


def alert_queries() -> list[str]:
    return [rule["expr"] for rule in alert_rules()]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names it is matched or grouped on) for every selector in `expr`.

    Grouping labels (`by (...)`) are charged to every metric under the aggregation."""
    found: list[tuple[str, set[str]]] = []

    def visit(node: promql_parser.Expr, grouping: frozenset[str]) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            matched = {m.name for m in node.matchers.matchers}
            found.append((node.name, matched | grouping))
            return
        if isinstance(node, promql_parser.AggregateExpr):
            modifier = node.modifier
            if modifier is not None and modifier.type == promql_parser.AggModifierType.By:
                grouping = grouping | frozenset(modifier.labels)
        for attribute in ("expr", "lhs", "rhs", "vector_selector"):
            child = getattr(node, attribute, None)
            if isinstance(child, promql_parser.Expr):
                visit(child, grouping)
        for argument in getattr(node, "args", None) or ():
            if isinstance(argument, promql_parser.Expr):
                visit(argument, grouping)

    visit(promql_parser.parse(expr), frozenset())
    return found


# -- the dashboard -------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard() -> None:
    document = dashboard()
    for key in ("title", "uid", "panels", "templating", "schemaVersion", "time"):
        assert key in document, key
    assert document["schemaVersion"] >= 36
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables)


def test_every_panel_is_placed_and_queries_the_chosen_datasource() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert len(query_panels()) >= 10
    for panel in query_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert "$job" in target["expr"], f"{panel['title']}: not filtered by $job"
            assert "$instance" in target["expr"], f"{panel['title']}: not filtered by $instance"


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("expr", dashboard_queries())
def test_dashboard_queries_parse(expr: str) -> None:
    promql_parser.parse(expr)


# -- the alert rules -----------------------------------------------------------------------


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"(\d+(ms|[smhdwy]))+", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        assert rule["annotations"]["runbook"].strip(), rule["alert"]


def test_runbook_links_point_at_operations_headings() -> None:
    headings = {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    links = {
        anchor
        for rule in alert_rules()
        for anchor in re.findall(r"docs/operations\.md#([\w-]+)", rule["annotations"]["runbook"])
    }
    assert links
    assert links <= headings


@pytest.mark.parametrize("expr", alert_queries())
def test_alert_expressions_parse(expr: str) -> None:
    promql_parser.parse(expr)


# -- against a real gateway ----------------------------------------------------------------


async def exposed_metrics(start_gateway_for: StartGateway) -> dict[str, set[str]]:
    """Metric name -> label names, from a running gateway: every `# TYPE` line of /metrics
    (histograms also as their _bucket/_sum/_count series) with the labels its collector
    declares and those its samples carry."""
    gateway = await start_gateway_for(
        {"name": "files", "route": "/files/mcp", "url": f"http://127.0.0.1:{free_port()}/mcp"}
    )
    async with aiohttp.ClientSession() as http, http.get(gateway.url("/metrics")) as response:
        assert response.status == 200
        text = await response.text()
    declared: dict[str, set[str]] = {}
    metrics = gateway.running.app[METRICS_KEY]
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            declared[collector._name] = set(collector._labelnames)
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert "mcp_gateway_decisions_total" in typed  # labelled, without samples yet
    exposed: dict[str, set[str]] = {}
    for name, kind in typed.items():
        base = name.removesuffix("_total").removesuffix("_info")
        labels = declared.get(base, set()) | TARGET_LABELS
        names = [name] + ([name + s for s in HISTOGRAM_SUFFIXES] if kind == "histogram" else [])
        for series in names:
            exposed[series] = labels | ({"le"} if series.endswith("_bucket") else set())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exposed.setdefault(sample.name, set(TARGET_LABELS)).update(sample.labels)
    return exposed


@pytest.mark.parametrize(
    "queries",
    [pytest.param(dashboard_queries, id="dashboard"), pytest.param(alert_queries, id="alerts")],
)
async def test_only_real_metrics_and_labels_are_used(
    queries: Any, start_gateway_for: StartGateway
) -> None:
    exposed = await exposed_metrics(start_gateway_for)
    used = [found for expr in queries() for found in selectors(expr)]
    assert used
    for name, labels in used:
        if name in PROMETHEUS_METRICS:
            continue
        assert name in exposed, f"{name} is not in the gateway's /metrics"
        unknown = labels - exposed[name]
        assert not unknown, f"{name} has no label(s) {sorted(unknown)}"


def test_selectors_sees_metrics_and_labels() -> None:
    """The checker itself: it must find names and labels inside functions, aggregations,
    binary operators and matrix selectors, or the test above would pass vacuously."""
    expr = (
        'histogram_quantile(0.9, sum by (le, upstream) (rate(a_bucket{job="x"}[5m])))'
        ' / on (job) group_left sum by (job) (b{kind="k"}) > 2 * c'
    )
    assert selectors(expr) == [
        ("a_bucket", {"job", "le", "upstream"}),
        ("b", {"job", "kind"}),
        ("c", set()),
    ]
