"""The gateway is no stricter than the MCP specification where it has nothing to decide
(issue 14, finding 11): the upstream's own spec-mandated answer reaches the client.

- At 2026-07-28, `resources/subscribe` / `resources/unsubscribe` no longer exist: they are
  forwarded without the `params.uri` the old revisions required, and the upstream's 404 -32601
  (Streamable HTTP, "Protocol Version Header") reaches the client.
- A protocol version the gateway does not know, date-shaped or not, reaches the upstream, whose
  `UnsupportedProtocolVersionError` (-32022, listing its versions) lets dual-era clients retry;
  a version header that is not header-safe is still refused before anything goes upstream.
- Session limits apply only to requests that open a gateway session: at the per-principal limit
  a stateless-era `initialize` is forwarded, and opens no session whatever the upstream answers.

Each runs through a real gateway requiring a bearer token, against the `mcp` SDK's own stateless
server, or against a recording upstream where what arrives matters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Gateway, StartGateway
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import HttpServerProcess
from tests.support.sdk_server import sdk_server

ROUTE = "/up/mcp"
MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
BOUND = 10.0


@pytest.fixture(scope="module")
def stateless_sdk() -> Iterator[HttpServerProcess]:
    with sdk_server(json_response=True, stateless=True) as server:
        yield server


async def protected_gateway(
    start: StartGateway, issuer: LocalIssuer, url: str, **sessions: Any
) -> tuple[Gateway, str]:
    """A gateway route in front of `url` that requires a token, and a token for it."""
    gw = await start(
        {"name": "up", "route": ROUTE, "url": url},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        sessions=sessions,
    )
    return gw, issuer.mint(issuer.claims(gw.url(ROUTE)))


def modern_message(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A 2026-07-28 request: protocol version and capabilities in `_meta`."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {
        "jsonrpc": "2.0",
        "id": 7,
        "method": method,
        "params": {**(params or {}), "_meta": meta},
    }


async def post(
    url: str, message: object, headers: dict[str, str], token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    sent = {"Accept": ACCEPT, "Content-Type": "application/json", **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=json.dumps(message), headers=sent) as response,
    ):
        body = await response.read()
        return response.status, dict(response.headers), json.loads(body) if body else None


@pytest.mark.parametrize("method", ["resources/subscribe", "resources/unsubscribe"])
@pytest.mark.parametrize("params", [{}, {"uri": "test://greeting"}], ids=["no-uri", "uri"])
async def test_methods_removed_at_2026_07_28_get_the_upstreams_method_not_found(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    stateless_sdk: HttpServerProcess,
    method: str,
    params: dict[str, Any],
) -> None:
    gw, token = await protected_gateway(start_gateway_for, issuer, stateless_sdk.url)
    message = modern_message(method, params)
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}

    direct = await post(stateless_sdk.url, message, headers)
    status, _, body = await post(gw.url(ROUTE), message, headers, token)

    assert (direct[0], direct[2]["error"]["code"]) == (404, -32601)
    assert (status, body["error"]["code"], body["id"]) == (404, -32601, 7)


async def test_an_unknown_protocol_version_gets_the_upstreams_supported_versions(
    start_gateway_for: StartGateway, issuer: LocalIssuer, stateless_sdk: HttpServerProcess
) -> None:
    gw, token = await protected_gateway(start_gateway_for, issuer, stateless_sdk.url)
    message = modern_message("tools/list")
    message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "v999.0.0"
    headers = {"MCP-Protocol-Version": "v999.0.0", "Mcp-Method": "tools/list"}

    direct = await post(stateless_sdk.url, message, headers)
    status, _, body = await post(gw.url(ROUTE), message, headers, token)

    assert (status, body) == (direct[0], direct[2])
    assert (status, body["error"]["code"]) == (400, -32022)
    assert MODERN in body["error"]["data"]["supported"]


@pytest.mark.parametrize(
    "version", [b"v999\x01", b"2026-07-28\x7f", b"v\x00999"], ids=["soh", "del", "nul"]
)
async def test_a_version_header_that_is_not_header_safe_reaches_no_upstream(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    version: bytes,
) -> None:
    gw, token = await protected_gateway(start_gateway_for, issuer, upstream.url)
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    head = (
        b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Accept: " + ACCEPT.encode() + b"\r\nMCP-Protocol-Version: " + version + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.running.port)
    try:
        writer.write(head + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1])
    assert status == 400
    assert upstream.requests == []


def initialize_message() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "limit-test", "version": "1"},
        },
    }


async def lenient_initialize(request: web.Request) -> web.StreamResponse:
    """A dual-era upstream that opens a session on every `initialize`, whatever its version."""
    return web.json_response(
        {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25"}},
        headers={"Mcp-Session-Id": "upstream-session-1"},
    )


async def test_at_the_session_limit_a_stateless_era_request_is_forwarded_and_opens_nothing(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    async with recording_upstream(lenient_initialize) as upstream:
        gw, token = await protected_gateway(
            start_gateway_for, issuer, upstream.url, max_per_principal=1
        )
        url = gw.url(ROUTE)

        first = await post(url, initialize_message(), {}, token)
        assert first[0] == 200
        assert "Mcp-Session-Id" in first[1]
        at_limit = await post(url, initialize_message(), {}, token)
        assert at_limit[0] == 429  # the limit holds for requests that open sessions
        assert len(upstream.requests) == 1

        modern = await post(
            url,
            modern_message("initialize"),
            {"MCP-Protocol-Version": MODERN, "Mcp-Method": "initialize"},
            token,
        )
        assert modern[0] == 200
        assert len(upstream.requests) == 2
        # The upstream opened a session, but the gateway opened none: no id reaches the client.
        assert "Mcp-Session-Id" not in modern[1]
        still_at_limit = await post(url, initialize_message(), {}, token)
        assert still_at_limit[0] == 429
