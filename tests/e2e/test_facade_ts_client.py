"""Facade mode with local users, end to end with a second real client: the TypeScript SDK
(`@modelcontextprotocol/client` 2.x, pinned in tests/node). Starting from the MCP URL alone it
discovers the protected resource and authorization server metadata, registers dynamically, is
sent through the gateway's sign-in and consent pages (followed headlessly by the Node script),
and checks the gateway's RFC 9207 `iss` in `transport.finishAuth` before redeeming the code.
Tampering with `iss` makes that same client refuse: the check is real, not a formality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartGateway
from tests.support.facade import ROUTE, facade_gateway, write_users
from tests.support.processes import HttpServerProcess
from tests.support.secrets import remember
from tests.support.ts_client import run_ts_client

PASSWORD = remember("tr0ub4dor & 3, typed by a TypeScript user")


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users(tmp_path / "users.yaml", PASSWORD)


def _paths(exchanges: list[dict[str, Any]], base: str) -> list[str]:
    return [e["url"].removeprefix(base) for e in exchanges if e["url"].startswith(base)]


async def test_ts_client_discovers_registers_signs_in_and_calls_a_tool(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json.url, users_file)
    result = await run_ts_client(gw.url(ROUTE), username="alice", password=PASSWORD)
    for token in (result["access_token"], result["refresh_token"]):
        if token:
            remember(token)

    assert result["call"] == {"is_error": False, "text": "hello"}
    assert "echo" in result["tools"]
    assert "add" in result["tools"]  # listed: alice (eng) could be granted files:write
    # The issuer the SDK discovered, and the `iss` it checked in finishAuth, are the gateway's.
    assert result["issuer"].rstrip("/") == gw.base
    assert result["callback_iss"] == result["issuer"]
    assert result["iss_parameter_supported"] is True
    assert result["access_token"]
    assert result["client_id"]

    # Everything came from the MCP URL: 401, PRM, AS metadata, registration, token, MCP.
    client_paths = _paths(result["requests"], gw.base)
    assert client_paths[0] == ROUTE
    assert result["requests"][0]["status"] == 401
    assert any(p.startswith("/.well-known/oauth-protected-resource") for p in client_paths)
    assert any(p.startswith("/.well-known/oauth-authorization-server") for p in client_paths)
    assert "/oauth/register" in client_paths
    assert "/oauth/token" in client_paths
    assert result["authorization_url"] == gw.url("/oauth/authorize")
    # The browser leg went through the gateway's own sign-in and consent pages.
    browser = [(e["method"], e["url"].removeprefix(gw.base)) for e in result["browser"]]
    assert ("POST", "/oauth/sign-in") in browser
    assert ("POST", "/oauth/consent") in browser


async def test_ts_client_refuses_a_tampered_iss(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json.url, users_file)
    result = await run_ts_client(
        gw.url(ROUTE), username="alice", password=PASSWORD, tamper_iss=True
    )

    refused = result["refused"]
    assert refused["name"] == "IssuerMismatchError", refused
    assert refused["issuer_mismatch"] is True
    assert refused["kind"] == "authorization_response"
    assert refused["expected"] == result["issuer"]
    assert refused["received"] == result["callback_iss"] + "x"
    assert result["callback_iss"].rstrip("/") == gw.base
    # The code was never redeemed.
    assert result["token_saved"] is False
    assert "/oauth/token" not in _paths(result["requests"], gw.base)
