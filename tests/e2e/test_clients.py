"""Official MCP clients through the gateway to real MCP servers, in both protocol eras.

Each scenario is also run directly against the upstream: the gateway must be invisible, so what
the client sees through it equals what it sees without it.
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Gateway, StartGateway
from tests.support.mcp1 import run_mcp1_client
from tests.support.processes import HttpServerProcess
from tests.support.sdk_client import Client, ProgressEvent, call_with_progress, list_and_call
from tests.support.sdk_server import SDK_TOOLS

MODERN = "2026-07-28"
STATEFUL = "2025-11-25"


async def gateway_in_front_of(start: StartGateway, server: HttpServerProcess) -> Gateway:
    return await start({"name": "up", "route": "/up/mcp", "url": server.url})


@pytest.mark.parametrize("upstream", ["sdk_json", "sdk_sse"])
async def test_sdk2_client_settles_on_the_modern_era_through_the_gateway(
    start_gateway_for: StartGateway, upstream: str, request: pytest.FixtureRequest
) -> None:
    server: HttpServerProcess = request.getfixturevalue(upstream)
    gw = await gateway_in_front_of(start_gateway_for, server)

    through = await list_and_call(gw.url("/up/mcp"), "echo", {"text": "hello"})
    direct = await list_and_call(server.url, "echo", {"text": "hello"})

    assert through == direct
    assert through.protocol_version == MODERN
    assert set(through.tools) == SDK_TOOLS
    assert through.call is not None
    assert through.call.text == "hello"
    assert not through.call.is_error


async def test_sdk2_client_falls_back_to_the_stateful_era_against_server_everything(
    start_gateway_for: StartGateway, everything: HttpServerProcess
) -> None:
    gw = await gateway_in_front_of(start_gateway_for, everything)

    through = await list_and_call(gw.url("/up/mcp"), "echo", {"message": "hi there"})
    direct = await list_and_call(everything.url, "echo", {"message": "hi there"})

    assert through == direct
    assert through.protocol_version == STATEFUL
    assert "echo" in through.tools
    assert through.call is not None
    assert through.call.text == "Echo: hi there"


@pytest.mark.parametrize("upstream", ["sdk_json", "sdk_sse", "everything"])
async def test_sdk1_client_lists_and_calls_through_the_gateway(
    start_gateway_for: StartGateway, upstream: str, request: pytest.FixtureRequest
) -> None:
    server: HttpServerProcess = request.getfixturevalue(upstream)
    gw = await gateway_in_front_of(start_gateway_for, server)
    tool, arguments, expected = (
        ("echo", {"message": "one"}, "Echo: one")
        if upstream == "everything"
        else ("echo", {"text": "one"}, "one")
    )

    through = await run_mcp1_client(gw.url("/up/mcp"), call=tool, arguments=arguments)
    direct = await run_mcp1_client(server.url, call=tool, arguments=arguments)

    assert through == direct
    assert through["protocol_version"] == STATEFUL
    assert tool in through["tools"]
    assert through["call"]["is_error"] is False
    assert [block["text"] for block in through["call"]["content"]] == [expected]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_progress_reaches_the_client_before_the_tool_finishes(
    start_gateway_for: StartGateway, sdk_sse: HttpServerProcess, mode: str
) -> None:
    """The tool sends progress 1, then blocks until released; the client releases it only
    from its progress callback. Had the gateway held the SSE stream back until the tool
    finished, the first event would never arrive and the call would time out."""
    gw = await gateway_in_front_of(start_gateway_for, sdk_sse)
    key = uuid.uuid4().hex

    async def release_on_first(event: ProgressEvent, client: Client) -> None:
        if event.progress == 1:
            await client.call_tool("release", {"key": key})

    outcome = await call_with_progress(
        gw.url("/up/mcp"),
        "slow_progress",
        {"steps": 3, "key": key},
        on_progress=release_on_first,
        mode=mode,  # type: ignore[arg-type]
        timeout=20,
    )
    assert [e.progress for e in outcome.events] == [1, 2, 3]
    assert outcome.events_before_result == 3
    assert outcome.result.text == "completed 3 steps"
    assert outcome.protocol_version == (MODERN if mode == "auto" else STATEFUL)
