"""tools/list through the gateway shows only what the caller may call (`list_visibility: held`)
or everything but what is denied (`all`): real MCP servers (an mcp 2.x server answering JSON,
server-everything answering SSE), the official client, real tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import StartGateway
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import HttpServerProcess
from tests.support.sdk_client import list_and_call

ROUTE = "/up/mcp"


async def listed(
    start: StartGateway,
    issuer: LocalIssuer,
    upstream: HttpServerProcess,
    policy: dict[str, Any],
    scope: str,
) -> list[str]:
    gw = await start(
        {
            "name": "up",
            "route": ROUTE,
            "url": upstream.url,
            "scopes": ["mcp:tools"],
            "policy": policy,
        },
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )
    token = issuer.mint(issuer.claims(gw.url(ROUTE), scope=scope))
    outcome = await list_and_call(gw.url(ROUTE), headers={"Authorization": f"Bearer {token}"})
    return outcome.tools


@pytest.mark.parametrize("upstream", ["sdk_json", "sdk_sse"])
async def test_sdk_upstream_list_is_filtered(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: str,
    request: pytest.FixtureRequest,
) -> None:
    server: HttpServerProcess = request.getfixturevalue(upstream)
    policy = {"tools": {"add": ["files:write"], "fail": "deny"}, "list_visibility": "held"}
    everything_visible = (await list_and_call(server.url)).tools
    assert {"add", "fail", "echo"} <= set(everything_visible)

    reader = await listed(start_gateway_for, issuer, server, policy, "mcp:tools")
    assert reader == [t for t in everything_visible if t not in ("add", "fail")]
    writer = await listed(start_gateway_for, issuer, server, policy, "mcp:tools files:write")
    assert writer == [t for t in everything_visible if t != "fail"]


async def test_server_everything_sse_list_is_filtered(
    start_gateway_for: StartGateway, issuer: LocalIssuer, everything: HttpServerProcess
) -> None:
    policy = {
        "tools": {"get-env": "deny", "gzip-file-as-resource": ["files:write"]},
        "list_visibility": "held",
    }
    direct = (await list_and_call(everything.url)).tools
    assert {"get-env", "gzip-file-as-resource", "echo"} <= set(direct)

    through = await listed(start_gateway_for, issuer, everything, policy, "mcp:tools")
    assert through == [t for t in direct if t not in ("get-env", "gzip-file-as-resource")]


async def test_visibility_all_shows_everything_but_what_is_denied(
    start_gateway_for: StartGateway, issuer: LocalIssuer, sdk_json: HttpServerProcess
) -> None:
    policy = {"tools": {"fail": "deny", "add": ["files:write"]}, "list_visibility": "all"}
    direct = (await list_and_call(sdk_json.url)).tools
    through = await listed(start_gateway_for, issuer, sdk_json, policy, "mcp:tools")
    assert through == [t for t in direct if t != "fail"]
    assert "add" in through
