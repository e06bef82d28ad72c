"""bench/sse_streams.py: the streaming parts' client helpers read SSE bodies, judge a relayed
stream whole or not, read a process's RSS and raise the open-files limit."""

from __future__ import annotations

import os
import resource

import pytest

from tests.bench.modules import bench_module

streams = bench_module("sse_streams")

RESULT = b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'
PROGRESS = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\n\n'


def test_sse_messages_reads_each_events_data_with_either_line_ending() -> None:
    body = PROGRESS + RESULT.replace(b"\n", b"\r\n") + b": a comment\n\n"
    messages = streams.sse_messages(body)
    assert [m.get("method") for m in messages] == ["notifications/progress", None]
    assert messages[1]["id"] == 1


@pytest.mark.parametrize(
    ("body", "events", "problem"),
    [
        pytest.param(PROGRESS * 2 + RESULT, 3, None, id="whole"),
        pytest.param(PROGRESS * 2, 2, "last event is not the result", id="no-result"),
        pytest.param(PROGRESS + RESULT, 3, "2 events, expected 3", id="cut-short"),
        pytest.param(b"data: {not json\n\n", 1, "unparsable SSE body", id="unparsable"),
    ],
)
def test_stream_problem(body: bytes, events: int, problem: str | None) -> None:
    found = streams.stream_problem(body, events)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


def test_vmrss_kib_reads_the_vmrss_line() -> None:
    status = "Name:\tpython\nVmPeak:\t  300000 kB\nVmRSS:\t   93068 kB\nRssAnon:\t 80000 kB\n"
    assert streams.vmrss_kib(status) == 93068
    with pytest.raises(ValueError, match="no VmRSS"):
        streams.vmrss_kib("Name:\tkthreadd\nState:\tS (sleeping)\n")
    assert streams.process_rss_kib(os.getpid()) > 1024  # this interpreter: over 1 MiB


def test_raise_open_files_limit_raises_the_soft_limit_up_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        wanted = soft + 1 if hard == resource.RLIM_INFINITY or soft < hard else soft
        got = streams.raise_open_files_limit(wanted)
        assert got == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert got == wanted
        assert streams.raise_open_files_limit(10) == got, "never lowered"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_merge_streaming_replaces_only_the_streaming_figures() -> None:
    old_target = {"target": "gateway RSS per open stream <= 12 KiB", "value": 30.0, "met": False}
    recorded = {
        "date": "2026-12-01T00:00:00+00:00",
        "rows": [{"upstream": "echo"}],
        "targets": [{"target": "gateway/direct vs echo >= 50%", "value": 0.4}, old_target],
        "sse_stream": None,
        "open_streams": None,
    }
    new_target = old_target | {"value": 20.0}
    run = {
        "date": "2026-12-03T12:00:00+00:00",
        "machine": {"nproc": 2},
        "settings": {"sse_stream": True},
        "rows": [],
        "targets": [new_target],
        "sse_stream": {"ratio_gateway_nginx": 2.0},
        "open_streams": {"kib_per_stream": 20.0},
    }
    merged = streams.merge_streaming(recorded, run)
    assert merged["date"] == recorded["date"]
    assert merged["rows"] == recorded["rows"]
    assert merged["targets"] == [recorded["targets"][0], new_target]
    assert merged["sse_stream"] == {"ratio_gateway_nginx": 2.0}
    assert merged["open_streams"] == {"kib_per_stream": 20.0}
    assert merged["streaming_run"] == {
        "date": run["date"],
        "machine": run["machine"],
        "settings": run["settings"],
    }
