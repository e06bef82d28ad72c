"""Log-safe field values: truncation with a marker, escaping of what orjson refuses."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from gateway.observability.logging import (
    MAX_LOGGED_ITEMS,
    AccessLog,
    UtcClock,
    bound_field_values,
    dumps_escaping,
    loggable,
    truncated,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("x" * 200, "x" * 200),
        ("x" * 201, "x" * 200 + "…[+1 chars]"),
        ("é" * 10_000, "é" * 200 + "…[+9800 chars]"),
    ],
    ids=["empty", "at-limit", "one-over", "long-non-ascii"],
)
def test_truncated(value: str, expected: str) -> None:
    assert truncated(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tool\ud800", "tool\\ud800"),
        ("\udfff" * 300, ("\\udfff" * 34)[:200] + f"…[+{6 * 300 - 200} chars]"),
        ("\U0001f600", "\U0001f600"),
        ({"k\ud800": ["v\udc00", 1, None]}, {"k\\ud800": ["v\\udc00", 1, None]}),
        (("a", "b"), ["a", "b"]),
        (list(range(60)), [*range(MAX_LOGGED_ITEMS), "…[+10 items]"]),
        (2**80, 2**80),
    ],
    ids=["lone-surrogate", "surrogates-cut", "pair-kept", "nested", "tuple", "long-list", "int"],
)
def test_loggable(value: object, expected: object) -> None:
    assert loggable(value) == expected


def test_the_processor_bounds_every_field_but_tracebacks() -> None:
    exc_info = (ValueError, ValueError("x"), None)
    event = {"event": "e", "name": "n" * 500, "uri": "u\ud800", "n": 3, "exc_info": exc_info}
    assert bound_field_values(None, "info", event) == {
        "event": "e",
        "name": "n" * 200 + "…[+300 chars]",
        "uri": "u\\ud800",
        "n": 3,
        "exc_info": exc_info,
    }


@pytest.mark.parametrize(
    "value",
    [{"sub": "alice\ud800"}, {"big": 2**70}, {"odd": object()}],
    ids=["lone-surrogate", "int-over-64-bits", "unknown-type"],
)
def test_dumps_escaping_writes_what_orjson_refuses(value: dict[str, object]) -> None:
    line = json.loads(dumps_escaping(value).decode("utf-8"))
    assert set(line) == set(value)


def test_the_structlog_renderer_escapes_instead_of_failing() -> None:
    render = structlog.processors.JSONRenderer(serializer=dumps_escaping)
    event = {"event": "policy_decided", "name": "x\ud800", "n": 2**70}
    assert json.loads(render(None, "info", event)) == {  # type: ignore[arg-type]
        "event": "policy_decided",
        "name": "x\\ud800",
        "n": 2**70,
    }


def test_the_access_line_is_written_whatever_its_fields_hold() -> None:
    sink = io.BytesIO()
    access = AccessLog()
    access.configure(sink, logging.INFO)
    access.emit(
        {
            "name": "\ud800" + "n" * 10_000,
            "sub": "alice\udfff",
            "granted_scopes": [f"s{i}" for i in range(500)],
            "status": 200,
        }
    )
    raw = sink.getvalue()
    assert raw.endswith(b"\n")
    assert len(raw) < 2_000
    line = json.loads(raw.decode("utf-8"))
    assert line["name"] == "\\ud800" + "n" * 194 + "…[+9806 chars]"
    assert line["sub"] == "alice\\udfff"
    assert line["granted_scopes"][-1] == "…[+450 items]"
    assert (line["event"], line["status"]) == ("request_completed", 200)


@pytest.mark.parametrize(
    "scopes",
    [
        ["mcp:read", "mcp:tools"],
        ["s" * 201],
        ["é"],
        ["ok", "\ud800"],
        ["ok", 7],
        [f"s{i}" for i in range(51)],
        [],
    ],
    ids=["plain", "long-item", "non-ascii", "surrogate", "not-a-string", "too-many", "empty"],
)
def test_a_list_in_the_access_line_is_bounded_as_loggable_bounds_it(scopes: list[object]) -> None:
    sink = io.BytesIO()
    access = AccessLog()
    access.configure(sink, logging.INFO)
    access.emit({"granted_scopes": list(scopes)})
    logged = json.loads(sink.getvalue().decode("utf-8"))["granted_scopes"]
    assert logged == json.loads(dumps_escaping(loggable(scopes)))


@pytest.mark.parametrize(
    "micros",
    [0, 1, 999_999, 1_764_000_000_000_000, 1_764_000_000_123_456, 1_764_000_001_000_100],
    ids=["epoch", "one-micro", "last-micro", "whole-second", "fraction", "next-second"],
)
def test_the_access_line_clock_writes_what_isoformat_writes(micros: int) -> None:
    expected = datetime.fromtimestamp(micros // 10**6, UTC).replace(microsecond=micros % 10**6)
    clock = UtcClock()
    clock.at(micros - 1_000_000)  # a cached second that is not this one
    assert clock.at(micros) == expected.isoformat().replace("+00:00", "Z")
    assert clock.at(micros) == expected.isoformat().replace("+00:00", "Z")  # from the cache


def test_the_access_line_carries_the_current_time() -> None:
    sink = io.BytesIO()
    access = AccessLog()
    access.configure(sink, logging.INFO)
    before = datetime.now(UTC).replace(microsecond=0)
    access.emit({"status": 200})
    stamped = datetime.fromisoformat(json.loads(sink.getvalue())["timestamp"])
    assert stamped.utcoffset() == timedelta(0)
    assert stamped >= before
