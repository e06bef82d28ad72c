"""The tracer's own rules: whose trace context it takes, and how export failures are told."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import cast

import pytest
from multidict import CIMultiDict
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import get_current_span

from gateway.config.tracing import TracingSettings
from gateway.observability.tracing import GuardedExporter, Tracing
from tests.conftest import gateway_log

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Refusing(SpanExporter):
    """An exporter whose collector is down: it fails, or raises."""

    def __init__(self, *, raises: bool = False) -> None:
        self.raises = raises
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.raises:
            raise ConnectionError("collector down")
        return SpanExportResult.FAILURE


@pytest.fixture
def tracing_for() -> Iterator[list[Tracing]]:
    made: list[Tracing] = []
    yield made
    for tracing in made:
        tracing._stop()


def tracer(made: list[Tracing], trusted: object) -> Tracing:
    settings = TracingSettings.model_validate(
        {"enabled": True, "endpoint": "http://127.0.0.1:9/v1/traces", "trusted_clients": trusted}
    )
    made.append(Tracing(settings, exporter=Refusing()))
    return made[-1]


@pytest.mark.parametrize(
    ("trusted", "client", "trusts"),
    [
        pytest.param(["10.0.0.0/8"], "10.1.2.3", True, id="in-network"),
        pytest.param(["10.0.0.0/8"], "192.168.1.1", False, id="outside"),
        pytest.param(["fd00::/8"], "fd00::1", True, id="ipv6"),
        pytest.param(["10.0.0.0/8"], None, False, id="no-address"),
        pytest.param(["10.0.0.0/8"], "unix-socket", False, id="not-an-address"),
        pytest.param([], "127.0.0.1", False, id="nobody-by-default"),
        pytest.param("all", None, True, id="all"),
    ],
)
def test_whose_trace_context_is_taken(
    tracing_for: list[Tracing], trusted: object, client: str | None, trusts: bool
) -> None:
    assert tracer(tracing_for, trusted).trusts(client) is trusts


@pytest.mark.parametrize(
    ("headers", "continues"),
    [
        pytest.param([("traceparent", PARENT)], True, id="one"),
        pytest.param([("traceparent", PARENT), ("traceparent", PARENT)], False, id="twice"),
        pytest.param([("traceparent", "00-xyz-01")], False, id="malformed"),
        pytest.param([], False, id="none"),
    ],
)
def test_a_trace_context_is_one_valid_traceparent(
    tracing_for: list[Tracing], headers: list[tuple[str, str]], continues: bool
) -> None:
    parent = tracer(tracing_for, "all").parent_of(CIMultiDict(headers))
    assert (parent is not None) is continues
    if parent is not None:
        assert get_current_span(parent).get_span_context().trace_id == int(PARENT[3:35], 16)


def test_tracestate_lines_are_combined(tracing_for: list[Tracing]) -> None:
    headers = CIMultiDict([("traceparent", PARENT), ("tracestate", "a=1"), ("tracestate", "b=2")])
    parent = tracer(tracing_for, "all").parent_of(headers)
    assert parent is not None
    assert get_current_span(parent).get_span_context().trace_state.to_header() == "a=1,b=2"


@pytest.mark.parametrize(
    ("payload", "continues"),
    [
        pytest.param({"params": {"_meta": {"traceparent": PARENT}}}, True, id="in-meta"),
        pytest.param({"params": {"_meta": {"traceparent": "00-bad"}}}, False, id="malformed"),
        pytest.param({"params": {"_meta": {"traceparent": 7}}}, False, id="not-a-string"),
        pytest.param({"params": {"_meta": []}}, False, id="meta-not-an-object"),
        pytest.param({"params": {}}, False, id="no-meta"),
        pytest.param([{"params": {"_meta": {"traceparent": PARENT}}}], False, id="batch"),
        pytest.param(None, False, id="no-body"),
    ],
)
def test_a_trace_context_in_meta(
    tracing_for: list[Tracing], payload: object, continues: bool
) -> None:
    parent = tracer(tracing_for, "all").meta_parent(payload)
    assert (parent is not None) is continues


@pytest.mark.parametrize("raises", [False, True], ids=["fails", "raises"])
def test_failed_exports_are_warned_about_once_per_interval(raises: bool) -> None:
    inner = Refusing(raises=raises)
    guarded = GuardedExporter(inner, interval=3600)
    results = [guarded.export([]) for _ in range(3)]
    assert results == [SpanExportResult.FAILURE] * 3
    assert inner.calls == 3
    warnings = [json.loads(line) for line in gateway_log().splitlines()
                if "trace_export_failed" in line]  # fmt: skip
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"


def test_each_warning_counts_the_spans_lost_since_the_last() -> None:
    guarded = GuardedExporter(Refusing(), interval=0)
    spans = [cast(ReadableSpan, object()) for _ in range(5)]  # only counted
    guarded.export(spans[:2])
    guarded.export(spans[2:])
    lost = [json.loads(line)["spans_lost"] for line in gateway_log().splitlines()
            if "trace_export_failed" in line]  # fmt: skip
    assert lost == [2, 3]


def test_no_export_begins_after_the_shutdown_deadline() -> None:
    inner = Refusing()
    guarded = GuardedExporter(inner)
    guarded.stop_at(0.0)
    assert guarded.export([]) is SpanExportResult.FAILURE
    assert inner.calls == 0
