"""Tracing a stdio route: the gateway's span for each request reaches the server process as
the request's `params._meta.traceparent` (MCP 2026-07-28, "General fields: `_meta`"), in place
of any trace context the client put there."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import StartGateway
from tests.support import stdio_trace_server
from tests.support.otlp_receiver import otlp_receiver

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"
OTHER = "00-11111111111111111111111111111111-2222222222222222-01"
ACCEPT = "application/json, text/event-stream"


def sse_messages(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


async def test_a_stdio_server_gets_the_gateways_span_as_its_parent_in_meta(
    start_gateway_for: StartGateway,
) -> None:
    async with otlp_receiver() as receiver:
        command = [sys.executable, str(Path(stdio_trace_server.__file__))]
        gw = await start_gateway_for(
            {"name": "rec", "route": "/rec/mcp", "command": command},
            tracing={"enabled": True, "endpoint": receiver.url, "schedule_delay": 0.05,
                     "trusted_clients": "all"},
        )  # fmt: skip
        headers = {"Accept": ACCEPT, "traceparent": TRACEPARENT}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
        meta = {"traceparent": OTHER, "progressToken": 7}  # the client's own trace context too
        params = {"name": "meta", "arguments": {}, "_meta": meta}
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.url("/rec/mcp"), json=init, headers=headers) as resp:
                assert resp.status == 200
                session = resp.headers["Mcp-Session-Id"]
                initialized = json.loads(await resp.text())
            headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
            async with http.post(gw.url("/rec/mcp"), json=call, headers=headers) as resp:
                assert resp.status == 200
                (answer,) = sse_messages(await resp.text())
        spans = await receiver.wait_for(4)
    got = json.loads(answer["result"]["content"][0]["text"])
    exchange = receiver.one("tools/call")
    assert got == {"traceparent": f"00-{CLIENT_TRACE}-{exchange.span_id}-01", "progressToken": 7}
    servers = receiver.named("POST /rec/mcp")
    assert {s.parent_span_id for s in servers} == {"00f067aa0ba902b7"}
    assert exchange.parent_span_id in {s.span_id for s in servers}
    assert exchange.attributes["mcp.method.name"] == "tools/call"
    got_at_start = json.loads(initialized["result"]["instructions"])
    assert got_at_start == {
        "traceparent": f"00-{CLIENT_TRACE}-{receiver.one('initialize').span_id}-01"
    }
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}
    assert session.encode() not in b"".join(receiver.bodies)  # never a session id
