"""What lists reveal and claim: an upstream cannot speak with the gateway's voice, and a token
cannot widen what it is shown by carrying the gateway's ceiling claim itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.policy.grants import ATTAINABLE_SCOPE_CLAIM
from gateway.policy.visibility import REQUIRED_SCOPES_META
from tests.conftest import Gateway, StartGateway
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer

ROUTE = "/files/mcp"
SPOOFED = {REQUIRED_SCOPES_META: ["nothing:needed"], "vendor/x": 1}


async def spoofing(request: web.Request) -> web.StreamResponse:
    """Lists whose entries already carry the gateway's annotation key."""
    body = await request.json()
    tools = [{"name": name, "_meta": dict(SPOOFED)} for name in ("read_file", "write_file")]
    return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {"tools": tools}})


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(spoofing) as recorded:
        yield recorded


async def listed(gw: Gateway, token: str) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url(ROUTE), json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        result = (await resp.json())["result"]
    return {tool["name"]: tool["_meta"] for tool in result["tools"]}


async def test_an_upstreams_required_scopes_annotation_is_replaced_or_dropped(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await start_gateway_for(
        {"name": "files", "route": ROUTE, "url": upstream.url,
         "policy": {"tools": {"read_file": ["files:read"], "write_file": ["files:write"]}}},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )  # fmt: skip
    token = issuer.mint(issuer.claims(gw.url(ROUTE), scope="files:read"))
    assert await listed(gw, token) == {
        "read_file": {"vendor/x": 1},
        "write_file": {"vendor/x": 1, REQUIRED_SCOPES_META: ["files:write"]},
    }


async def test_a_token_of_another_issuer_cannot_carry_its_own_ceiling(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    """The route narrows other issuers' tokens by rules; the gateway's private claim in such a
    token is not believed (it is the gateway's only in tokens the gateway signed)."""
    gw = await start_gateway_for(
        {"name": "files", "route": ROUTE, "url": upstream.url,
         "policy": {"tools": {"read_file": ["files:read"], "write_file": ["files:write"]},
                    "attainable": []}},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )  # fmt: skip
    claims = issuer.claims(gw.url(ROUTE), scope="files:read")
    token = issuer.mint({**claims, ATTAINABLE_SCOPE_CLAIM: "files:write"})
    assert await listed(gw, token) == {"read_file": {"vendor/x": 1}}
