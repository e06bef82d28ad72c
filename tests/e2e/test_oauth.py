"""The gateway as an OAuth protected resource, with a real OpenID provider (npm `oidc-provider`)
and the official mcp 2.x client's OAuth support, driven headlessly."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.oauth_client import (
    InMemoryTokenStorage,
    authorize_token,
    oauth_list_and_call,
)
from tests.support.oidc import OidcProviderProcess, oidc_provider
from tests.support.processes import HttpServerProcess
from tests.support.secrets import remember

ROUTE = "/files/mcp"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProviderProcess]:
    # Registered scopes are no ceiling here, so a client can step up after registering.
    with oidc_provider(registered_scope_ceiling=False) as running:
        yield running


async def protected_gateway(
    start: StartGateway,
    provider: OidcProviderProcess,
    upstream: HttpServerProcess,
    policy: dict[str, object] | None = None,
    **extra: object,
) -> Gateway:
    return await start(
        {
            "name": "files",
            "route": ROUTE,
            "url": upstream.url,
            "scopes": ["mcp:tools"],
            "policy": policy or {},
        },
        auth={
            "resource_server": {
                "authorization_servers": [
                    {"name": "idp", "issuer": provider.issuer, "require_at_jwt": True}
                ],
                **extra,
            }
        },
    )


MODERN_LIST = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/list",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}
MODERN_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/list",
}


async def post(gw: Gateway, token: str) -> int:
    """A stateless 2026-07-28 tools/list with `token`; the status the client gets."""
    headers = MODERN_HEADERS | {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url(ROUTE), json=MODERN_LIST, headers=headers) as resp,
    ):
        return resp.status


async def test_sdk_client_discovers_authorizes_and_calls_tools_from_the_gateway_url_alone(
    start_gateway_for: StartGateway, provider: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await protected_gateway(start_gateway_for, provider, sdk_json)

    outcome, record = await oauth_list_and_call(gw.url(ROUTE), "echo", {"text": "through oauth"})
    assert record.access_token is not None
    remember(record.access_token)
    if record.refresh_token:
        remember(record.refresh_token)

    assert outcome.protocol_version == "2026-07-28"
    assert outcome.call is not None
    assert outcome.call.text == "through oauth"
    assert record.issuer == provider.issuer
    requested = record.requested_urls
    assert requested[0] == gw.url(ROUTE)  # it started from the gateway URL alone
    assert gw.url("/.well-known/oauth-protected-resource" + ROUTE) in requested
    claims = json.loads(base64.urlsafe_b64decode(record.access_token.split(".")[1] + "=="))
    assert claims["aud"] == gw.url(ROUTE)
    [line] = [
        json.loads(entry)
        for entry in gateway_log().splitlines()
        if '"request_completed"' in entry and '"rpc_method": "tools/call"' in entry
    ]
    assert (line["sub"], line["client_id"]) == ("alice", record.client_id)


async def test_a_token_for_another_resource_is_refused(
    start_gateway_for: StartGateway, provider: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await protected_gateway(start_gateway_for, provider, sdk_json)
    mine = remember(await authorize_token(provider.issuer, gw.url(ROUTE)))
    other = remember(await authorize_token(provider.issuer, "http://127.0.0.1:1/other/mcp"))
    assert await post(gw, mine) == 200
    assert await post(gw, other) == 401


async def test_an_expired_token_is_refused(
    start_gateway_for: StartGateway, provider: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await protected_gateway(start_gateway_for, provider, sdk_json, leeway=0)
    token = remember(await authorize_token(provider.issuer, gw.url(ROUTE), ttl=3))
    assert await post(gw, token) == 200
    deadline = time.monotonic() + 10
    while (status := await post(gw, token)) == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # waiting for the token's own expiry, not for a race
    assert status == 401
    assert '"reason": "expired"' in gateway_log()


async def test_step_up_the_sdk_client_reauthorizes_with_the_scopes_the_challenge_names(
    start_gateway_for: StartGateway, provider: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    policy = {"tools": {"echo": ["mcp:tools"], "add": ["files:write"]}}
    gw = await protected_gateway(start_gateway_for, provider, sdk_json, policy)
    storage = InMemoryTokenStorage()

    first, record = await oauth_list_and_call(
        gw.url(ROUTE), "echo", {"text": "read only"}, storage=storage
    )
    assert first.call is not None
    assert first.call.text == "read only"
    assert record.access_token is not None
    remember(record.access_token)
    assert set(record.scope.split()) == {"mcp:tools"}

    second, record = await oauth_list_and_call(
        gw.url(ROUTE), "add", {"a": 2, "b": 3}, storage=storage
    )
    assert record.access_token is not None
    remember(record.access_token)
    if record.refresh_token:
        remember(record.refresh_token)
    assert second.call is not None
    assert second.call.text == "5"
    assert {"mcp:tools", "files:write"} <= set(record.scope.split())

    adds = [
        json.loads(entry)
        for entry in gateway_log().splitlines()
        if '"request_completed"' in entry and '"name": "add"' in entry
    ]
    assert [(a["status"], a["decision"], a["upstream_status"]) for a in adds] == [
        (403, "insufficient_scope", None),  # refused at the gateway: the upstream never saw it
        (200, "allow", 200),
    ]
