"""bench/sse_upstream.py: the SSE upstream of the benchmark's streaming parts frames MCP
messages as SSE events, streams the number asked for, and holds streams open until released."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.bench.modules import bench_module

upstream = bench_module("sse_upstream")
streams = bench_module("sse_streams")


def test_a_stream_is_progress_notifications_then_the_result() -> None:
    events = list(upstream.stream_events(7, "tok", 5))
    assert len(events) == 5
    assert all(e.startswith(b"event: message\ndata: ") and e.endswith(b"\n\n") for e in events)
    assert all(e.count(b"\n\n") == 1 for e in events), "one event per write"
    messages = streams.sse_messages(b"".join(events))
    assert [m["params"]["progress"] for m in messages[:-1]] == [1, 2, 3, 4]
    assert {m["method"] for m in messages[:-1]} == {"notifications/progress"}
    assert {m["params"]["progressToken"] for m in messages[:-1]} == {"tok"}
    assert messages[-1]["id"] == 7
    assert messages[-1]["result"]["content"][0]["text"] == "streamed 5 events"


@pytest.mark.parametrize(
    ("body", "call"),
    [
        pytest.param(
            b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"stream",'
            b'"arguments":{"events":9},"_meta":{"progressToken":"p"}}}',
            (3, "stream", {"events": 9}, "p"),
            id="stream-with-token",
        ),
        pytest.param(
            b'{"id":1,"method":"tools/call","params":{"name":"hold"}}',
            (1, "hold", {}, 1),
            id="hold-default-token",
        ),
        pytest.param(b'{"id":1,"method":"tools/list"}', None, id="not-a-call"),
        pytest.param(b'{"id":1,"method":"tools/call","params":{}}', None, id="no-name"),
        pytest.param(b"not json", None, id="unparsable"),
    ],
)
def test_call_of(body: bytes, call: Any) -> None:
    assert upstream.call_of(body) == call


async def serve(aiohttp_raw_server: Any) -> tuple[Any, str]:
    holds = upstream.Holds()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return await upstream.handle(request, holds)

    server = await aiohttp_raw_server(handler)
    return holds, f"http://127.0.0.1:{server.port}"


async def test_it_streams_the_events_asked_for(aiohttp_raw_server: Any) -> None:
    _, base = await serve(aiohttp_raw_server)
    await streams.relay_streams(f"{base}/mcp", None, 3, 25)  # raises unless 25 events and result


async def test_held_streams_stay_open_until_released(aiohttp_raw_server: Any) -> None:
    holds, base = await serve(aiohttp_raw_server)

    def held() -> str:
        with urllib.request.urlopen(f"{base}/held", timeout=5) as resp:
            return str(resp.read().decode())

    seen = await streams.hold_streams(f"{base}/mcp", "Bearer x", 5, f"{base}/release", held)
    assert seen == "5"
    assert holds.open == 0
    assert holds.release.is_set()
    # A new round of holds after a release is held again, not finished at once.
    assert await streams.hold_streams(f"{base}/mcp", None, 2, f"{base}/release", held) == "2"


async def test_a_call_of_another_tool_gets_a_json_rpc_error(aiohttp_raw_server: Any) -> None:
    _, base = await serve(aiohttp_raw_server)
    body = json.loads(streams.call_body("echo", {}))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/mcp", json=body) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == -32602
