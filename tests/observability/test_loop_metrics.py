"""Lock-free counters and histograms expose exactly what prometheus-client's own would."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from gateway.observability.loop_metrics import LoopCounter, LoopHistogram
from gateway.observability.metrics import LATENCY_BUCKETS, GatewayMetrics

Family = Any
Exercise = Callable[[Family], None]


def count_requests(family: Family) -> None:
    family.labels("echo", "POST", 200).inc()
    family.labels("echo", "POST", 200).inc()
    family.labels("none", "other", 404).inc(3)
    family.labels("idle", "GET", "200")  # created, never counted: exposed as 0


def observe_durations(family: Family) -> None:
    busy = family.labels("echo")
    for amount in (0.0001, 0.0005, 0.00050001, 0.001, 0.003, 0.1, 10, 11.5, math.inf, -1, 0):
        busy.observe(amount)
    family.labels("idle")
    family.labels(7).observe(0.25)


def observe_nan(family: Family) -> None:
    family.labels("odd").observe(0.002)
    family.labels("odd").observe(math.nan)  # in the sum, in no bucket


COUNTER = ("mcp_gateway_things_total", ("upstream", "method", "status"), {})
HISTOGRAM = ("mcp_gateway_thing_seconds", ("upstream",), {"buckets": LATENCY_BUCKETS})
CASES = {
    "counter": (Counter, LoopCounter, COUNTER, count_requests),
    "histogram": (Histogram, LoopHistogram, HISTOGRAM, observe_durations),
    "histogram-nan": (Histogram, LoopHistogram, HISTOGRAM, observe_nan),
}


def exposition(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode() + generate_openmetrics(registry).decode()
    return re.sub(r"(_created(\{[^}]*\})?) [0-9.e+]+", r"\1 <time>", text)


@pytest.fixture(params=["created", "no-created"])
def created_series(request: pytest.FixtureRequest) -> Iterator[bool]:
    """With and without the `_created` series (prometheus-client's switch, 0.17 and later)."""
    if request.param == "created":
        yield True
        return
    if not hasattr(prometheus_client, "disable_created_metrics"):
        pytest.skip("this prometheus-client always writes the _created series")
    prometheus_client.disable_created_metrics()
    try:
        yield False
    finally:
        prometheus_client.enable_created_metrics()


@pytest.mark.parametrize(
    ("stock", "loop", "declaration", "exercise"), list(CASES.values()), ids=list(CASES)
)
def test_the_exposition_is_prometheus_clients(
    stock: Callable[..., Family],
    loop: Callable[..., Family],
    declaration: tuple[str, tuple[str, ...], dict[str, Any]],
    exercise: Exercise,
    created_series: bool,
) -> None:
    """Same calls on a stock family and a loop family: the same text and OpenMetrics
    exposition, but for the `_created` times."""
    name, labels, options = declaration
    expositions = []
    for kind in (stock, loop):
        registry = CollectorRegistry()
        exercise(kind(name, "What it measures.", labels, registry=registry, **options))
        expositions.append(exposition(registry))
    stock_text, loop_text = expositions
    assert loop_text == stock_text
    assert ("<time>" in loop_text) is created_series
    assert re.search(r"\} [1-9][0-9.]*$", loop_text, re.MULTILINE)  # something was counted


def test_a_loop_family_takes_the_same_name_as_a_stock_one_once() -> None:
    registry = CollectorRegistry()
    LoopCounter("mcp_gateway_thing_total", "What it counts.", ("route",), registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("mcp_gateway_thing_total", "Again.", ("route",), registry=registry)


@pytest.mark.parametrize("values", [(), ("a", "b")], ids=["too-few", "too-many"])
def test_labels_must_match_the_label_names(values: tuple[str, ...]) -> None:
    family = LoopCounter("mcp_gateway_thing_total", "x", ("route",), registry=CollectorRegistry())
    with pytest.raises(ValueError, match="expected labels"):
        family.labels(*values)


def test_a_counter_refuses_to_go_down() -> None:
    family = LoopCounter("mcp_gateway_thing_total", "x", ("route",), registry=CollectorRegistry())
    with pytest.raises(ValueError, match="non-negative"):
        family.labels("a").inc(-1)


def test_the_gateways_request_counter_folds_unknown_methods() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.count_request("echo", "POST", 200)
    metrics.count_request("echo", "POST", 200)
    metrics.count_request("echo", "BREW", 418)
    sample = registry.get_sample_value
    assert (
        sample(
            "mcp_gateway_requests_total", {"upstream": "echo", "method": "POST", "status": "200"}
        )
        == 2
    )
    assert (
        sample(
            "mcp_gateway_requests_total", {"upstream": "echo", "method": "other", "status": "418"}
        )
        == 1
    )
