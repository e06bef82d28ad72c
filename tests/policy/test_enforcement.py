"""Policy enforcement at the gateway: real tokens, a real upstream, nothing refused forwarded."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer

POLICY = {
    "tools": {"read_file": ["files:read"], "write_file": ["files:write"], "drop_db": "deny"},
}


async def ok(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": {}})


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(ok) as recorded:
        yield recorded


async def files_gateway(
    start: StartGateway, issuer: LocalIssuer, url: str, **extra: Any
) -> Gateway:
    """The /files/mcp route under POLICY, trusting `issuer`; `extra` goes to the config."""
    return await start(
        {
            "name": "files",
            "route": "/files/mcp",
            "url": url,
            "scopes": ["mcp:tools"],
            "policy": POLICY,
        },
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        **extra,
    )


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> Gateway:
    return await files_gateway(start_gateway_for, issuer, upstream.url)


def call_tool(name: object, rpc_id: int = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": name}}


async def post(
    gw: Gateway, token: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url("/files/mcp"), json=body, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json()


async def test_allowed_call_is_forwarded(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="files:read"))
    status, _, _ = await post(gw, token, call_tool("read_file"))
    assert status == 200
    assert [json.loads(r.body)["params"]["name"] for r in upstream.requests] == ["read_file"]


async def test_missing_scope_gets_a_step_up_challenge_and_is_not_forwarded(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="files:read"))
    status, headers, body = await post(gw, token, call_tool("write_file", rpc_id=41))
    assert status == 403
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="files:write", ')
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    assert params["resource_metadata"] == gw.url("/.well-known/oauth-protected-resource/files/mcp")
    assert params["error_description"]
    assert body["id"] == 41
    assert body["error"]["code"] == -31043
    assert body["error"]["message"] == (
        "write_file needs files:write; this client's token has files:read. "
        "Re-authorize with files:write."
    )
    assert upstream.requests == []
    line = next(
        json.loads(entry)
        for entry in gateway_log().splitlines()
        if '"request_completed"' in entry and '"write_file"' in entry
    )
    assert (line["decision"], line["status"], line["upstream_status"]) == (
        "insufficient_scope",
        403,
        None,
    )
    assert (line["required_scopes"], line["granted_scopes"]) == (["files:write"], ["files:read"])


async def test_broader_scope_satisfies_through_implication(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await files_gateway(
        start_gateway_for,
        issuer,
        upstream.url,
        scopes={"implies": {"files:admin": ["files:write"], "files:write": ["files:read"]}},
    )
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="files:admin"))
    for tool in ("read_file", "write_file"):
        assert (await post(gw, token, call_tool(tool)))[0] == 200
    assert len(upstream.requests) == 2


async def test_deny_entries_get_403_without_a_step_up_hint(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="files:read files:write"))
    status, headers, body = await post(gw, token, call_tool("drop_db"))
    assert status == 403
    assert "WWW-Authenticate" not in headers
    assert body["error"]["code"] == -31044
    assert body["error"]["message"] == (
        "drop_db is not available here: the gateway's policy denies it whatever the scopes."
    )
    assert upstream.requests == []


@pytest.mark.parametrize("name", [7, None, "", ["read_file"]], ids=["int", "null", "empty", "list"])
async def test_a_tool_name_that_is_not_a_string_is_invalid_params(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, name: object
) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    status, _, body = await post(gw, token, call_tool(name))
    assert status == 400
    assert body["error"]["code"] == -32602
    assert upstream.requests == []


async def test_decisions_are_counted(gw: Gateway, issuer: LocalIssuer) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="mcp:tools files:read"))
    for tool in ("read_file", "write_file", "drop_db", "other"):
        await post(gw, token, call_tool(tool))
    async with aiohttp.ClientSession() as http, http.get(gw.url("/metrics")) as resp:
        metrics = await resp.text()
    for decision, count in (("allow", 2), ("insufficient_scope", 1), ("deny", 1)):
        line = f'mcp_gateway_decisions_total{{decision="{decision}",route="files"}} {count}.0'
        assert line in metrics


@pytest.mark.parametrize(
    ("visibility", "shown"),
    [
        ("attainable", [{"name": "read_file"}, {"name": "write_file", "_meta": {
            "io.mcp-auth-gateway/requiredScopes": ["files:write"]}}]),
        ("held", [{"name": "read_file"}]),
    ],
)  # fmt: skip
async def test_a_streamed_sse_list_is_filtered_event_by_event(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    visibility: str,
    shown: list[dict[str, Any]],
) -> None:
    release = asyncio.Event()
    tools = [{"name": n} for n in ("read_file", "write_file", "drop_db")]

    async def sse_list(request: web.Request) -> web.StreamResponse:
        rpc_id = (await request.json())["id"]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/x"}\n\n')
        await release.wait()
        result = {"jsonrpc": "2.0", "id": rpc_id, "result": {"tools": tools, "nextCursor": "c2"}}
        await resp.write(b"event: message\nid: 9\ndata: " + json.dumps(result).encode() + b"\n\n")
        await resp.write_eof()
        return resp

    async with recording_upstream(sse_list) as upstream:
        gw = await start_gateway_for(
            {
                "name": "files",
                "route": "/files/mcp",
                "url": upstream.url,
                "policy": {**POLICY, "list_visibility": visibility},
            },
            auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        )
        token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="files:read"))
        body = {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                gw.url("/files/mcp"), json=body, headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            first = await resp.content.readuntil(b"\n\n")
            assert b"notifications/x" in first  # passed through before the result exists
            release.set()
            rest = (await resp.content.read()).decode()
    lines = rest.strip().splitlines()
    assert lines[:2] == ["event: message", "id: 9"]
    message = json.loads(lines[2].removeprefix("data: "))
    assert message["result"] == {"tools": shown, "nextCursor": "c2"}
