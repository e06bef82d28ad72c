"""Strict message inspection at the gateway: each malformed request gets its documented 400 and
reaches no upstream."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import StartGateway
from tests.support.http_upstream import recording_upstream

MODERN = {"MCP-Protocol-Version": "2026-07-28", "Accept": "application/json, text/event-stream"}


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


def sentinel(value: str) -> str:
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


CALL = b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file"}}'
CASES = [
    # id, body, headers, expected JSON-RPC code
    (
        "duplicate-key",
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":'
        b'{"name":"read_file","name":"delete_all"}}',
        {},
        -32700,
    ),
    (
        "duplicate-top-level-method",
        b'{"jsonrpc":"2.0","id":3,"method":"tools/list","method":"tools/call"}',
        {},
        -32700,
    ),
    (
        "deep-nesting",
        b'{"jsonrpc":"2.0","id":3,"method":"x","params":{"a":' + b"[" * 100 + b"]" * 100 + b"}}",
        {},
        -32700,
    ),
    (
        "lone-surrogate-in-name",
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read\\ud800"}}',
        {},
        -32700,
    ),
    (
        "nan-in-arguments",
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"a","arguments":NaN}}',
        {},
        -32700,
    ),
    ("method-look-alike", b'{"jsonrpc":"2.0","id":3,"method":"tools/call\\u0000"}', {}, -32600),
    (
        "batch-ids-shared",
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":1,"method":"ping"}]',
        {},
        -32600,
    ),
    ("not-jsonrpc", b'{"id":3,"method":"tools/list"}', {}, -32600),
    (
        "tool-name-not-a-string",
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":7}}',
        {},
        -32602,
    ),
    (
        "batch-in-2025-11-25",
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]',
        {"MCP-Protocol-Version": "2025-11-25"},
        -32600,
    ),
    (
        "batch-in-2026-07-28",
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]',
        {**MODERN, "Mcp-Method": "tools/list"},
        -32600,
    ),
    ("modern-without-mcp-method", CALL, {**MODERN, "Mcp-Name": "read_file"}, -32020),
    (
        "mcp-method-mismatch",
        CALL,
        {**MODERN, "Mcp-Method": "tools/list", "Mcp-Name": "read_file"},
        -32020,
    ),
    (
        "mcp-name-mismatch",
        CALL,
        {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "delete_all"},
        -32020,
    ),
    (
        "mcp-name-sentinel-mismatch",
        CALL,
        {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": sentinel("delete_all")},
        -32020,
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_malformed_requests_get_400_and_reach_no_upstream(
    start_gateway_for: StartGateway, body: bytes, headers: dict[str, str], code: int
) -> None:
    async with recording_upstream(ok) as upstream:
        gw = await start_gateway_for({"name": "up", "route": "/up/mcp", "url": upstream.url})
        async with (
            aiohttp.ClientSession() as http,
            http.post(gw.url("/up/mcp"), data=body, headers=headers) as resp,
        ):
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == code
    assert upstream.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "read_file"},
        {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": sentinel("read_file")},
        {"MCP-Protocol-Version": "2025-11-25"},
        {},
    ],
    ids=["modern-plain", "modern-sentinel", "stateful-era", "no-version-header"],
)
async def test_well_formed_requests_pass(
    start_gateway_for: StartGateway, headers: dict[str, str]
) -> None:
    async with recording_upstream(ok) as upstream:
        gw = await start_gateway_for({"name": "up", "route": "/up/mcp", "url": upstream.url})
        async with (
            aiohttp.ClientSession() as http,
            http.post(gw.url("/up/mcp"), data=CALL, headers=headers) as resp,
        ):
            assert resp.status == 200
    assert len(upstream.requests) == 1


async def test_a_batch_is_accepted_in_2025_03_26(start_gateway_for: StartGateway) -> None:
    batch = b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"x/y"}]'
    async with recording_upstream(ok) as upstream:
        gw = await start_gateway_for({"name": "up", "route": "/up/mcp", "url": upstream.url})
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                gw.url("/up/mcp"), data=batch, headers={"MCP-Protocol-Version": "2025-03-26"}
            ) as resp,
        ):
            assert resp.status == 200
    assert len(upstream.requests) == 1
