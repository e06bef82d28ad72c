"""`upstream_auth: {kind: mint}`: the upstream gets a JWT the gateway signed for the caller.

Proved against a real `mcp` SDK server that is its own OAuth protected resource
(`tests/servers/sdk_protected_server.py`: the SDK's `TokenVerifier` checking RFC 9068 tokens
against the issuer's JWKS, found by discovery at the gateway) and a recording upstream that
shows the exact token; the client is the real `mcp` SDK client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway.oauth.signing import SigningKey
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.facade import write_users
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import HttpServerProcess, free_port
from tests.support.sdk_client import list_and_call
from tests.support.sdk_protected_server import sdk_protected_server
from tests.support.secrets import remember

SCOPES = "mcp:tools files:read"


@pytest.fixture
def protected_servers() -> Iterator[tuple[str, HttpServerProcess, HttpServerProcess]]:
    """Two protected SDK servers trusting the gateway (at a port chosen here) as issuer."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with (
        sdk_protected_server(issuer, json_response=True) as first,
        sdk_protected_server(issuer, json_response=True) as second,
    ):
        yield issuer, first, second


async def _gateway(
    start: StartGateway,
    issuer: LocalIssuer,
    tmp_path: Path,
    *routes: tuple[str, str, str],
    port: int | None = None,
) -> Gateway:
    """A gateway with the facade (an RS256 key, which the SDK server's verifier takes) that
    also trusts `issuer`; each route (name, upstream URL, mint audience) mints."""
    users = write_users(tmp_path / "users.yaml", "x" * 16)
    key = remember(SigningKey.generate("RS256").to_pem())
    auth = {
        "authorization_server": {"login": {"local": {"users_file": users}}, "signing_key": key},
        "resource_server": {"authorization_servers": [issuer.auth_server()]},
    }
    upstreams: list[dict[str, Any]] = [
        {
            "name": name,
            "route": f"/{name}/mcp",
            "url": url,
            "scopes": ["mcp:tools"],
            "authorization_servers": ["local"],
            "policy": {"tools": {"whoami": ["mcp:tools"], "echo": ["mcp:tools"]}},
            "upstream_auth": {"kind": "mint", "audience": audience, "lifetime": 120},
        }
        for name, url, audience in routes
    ]
    return await start(*upstreams, port=port, auth=auth)


def _client_token(issuer: LocalIssuer, gateway: Gateway, route: str, **claims: Any) -> str:
    return issuer.mint(issuer.claims(gateway.url(route), scope=SCOPES, **claims))


async def test_an_upstream_verifying_tokens_itself_accepts_the_minted_token(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    tmp_path: Path,
    protected_servers: tuple[str, HttpServerProcess, HttpServerProcess],
) -> None:
    gateway_issuer, first, _ = protected_servers
    port = int(gateway_issuer.rsplit(":", 1)[1])
    gateway = await _gateway(
        start_gateway_for, issuer, tmp_path, ("one", first.url, first.url), port=port
    )
    token = _client_token(issuer, gateway, "/one/mcp", sub="alice", client_id="cli-7")
    outcome = await list_and_call(
        gateway.url("/one/mcp"), "whoami", headers={"Authorization": f"Bearer {token}"}
    )
    assert outcome.call is not None
    assert not outcome.call.is_error
    # sub and client_id are the caller's; scope only what the route's policy knows
    # (files:read is the caller's but no rule of this route asks for it).
    assert outcome.call.text == "alice cli-7 mcp:tools"


async def test_the_minted_token_replaces_the_clients_and_binds_the_upstream_audience(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    tmp_path: Path,
    protected_servers: tuple[str, HttpServerProcess, HttpServerProcess],
) -> None:
    gateway_issuer, first, second = protected_servers
    port = int(gateway_issuer.rsplit(":", 1)[1])
    async with recording_upstream(_ok) as recorder:
        gateway = await _gateway(
            start_gateway_for,
            issuer,
            tmp_path,
            ("one", first.url, first.url),
            ("spy", recorder.url, first.url),  # mints exactly what route one mints
            port=port,
        )
        token = _client_token(issuer, gateway, "/spy/mcp")
        for _ in range(2):
            status, _ = await _post(gateway.url("/spy/mcp"), token)
            assert status == 200
        minted = _sent_token(recorder)
        assert token not in str(recorder.requests[0].header_list)
        assert minted == _sent_token(recorder, 1)  # reused, not signed per request
        claims = await _verified_claims(gateway, minted)
        assert claims["iss"] == gateway_issuer
        assert claims["aud"] == first.url
        assert (claims["sub"], claims["client_id"], claims["scope"]) == (
            "alice",
            "client-1",
            "mcp:tools",
        )
        assert claims["act"] == {"sub": gateway_issuer}
        assert claims["exp"] - claims["iat"] == 120
        minted_lines = [
            line for line in gateway_log().splitlines() if "upstream_token_minted" in line
        ]
        assert len(minted_lines) == 1  # once per caller per lifetime, not per request
        logged = json.loads(minted_lines[0])
        assert (logged["upstream"], logged["sub"], logged["scopes"]) == (
            "spy",
            "alice",
            ["mcp:tools"],
        )
        # The same token, presented straight to each upstream: its audience takes it, the
        # other upstream (another route's) refuses it.
        own_status, own_text = await _post(first.url, minted)
        assert own_status == 200, own_text
        assert (await _post(second.url, minted))[0] == 401


async def test_a_token_without_a_subject_gets_no_minted_token(
    start_gateway_for: StartGateway, issuer: LocalIssuer, tmp_path: Path
) -> None:
    async with recording_upstream(_ok) as recorder:
        gateway = await _gateway(
            start_gateway_for, issuer, tmp_path, ("spy", recorder.url, "https://spy.example")
        )
        token = _client_token(issuer, gateway, "/spy/mcp", sub=None)
        status, text = await _post(gateway.url("/spy/mcp"), token)
        body = json.loads(text)
        assert status == 403
        assert body["error"]["data"]["reason"] == "upstream_credential_refused"
        assert recorder.requests == []


_CALL = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},'
    b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    b'"io.modelcontextprotocol/clientCapabilities":{}}}}'
)


async def _post(url: str, token: str) -> tuple[int, str]:
    """POST the tool call with `token`: the status and body."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=_CALL, headers=_headers(token)) as answer,
    ):
        return answer.status, await answer.text()


def _headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "whoami",
    }


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"content": []}})


def _sent_token(recorder: RecordingUpstream, index: int = 0) -> str:
    authorization = [v for n, v in recorder.requests[index].header_list if n == "Authorization"]
    assert len(authorization) == 1
    assert authorization[0].startswith("Bearer ")
    return remember(authorization[0].removeprefix("Bearer "))


async def _verified_claims(gateway: Gateway, token: str) -> dict[str, Any]:
    """The token's claims, its signature checked against the gateway's published JWKS."""
    async with aiohttp.ClientSession() as http:
        jwks = await (await http.get(gateway.url("/oauth/jwks"))).json()
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert decoded.header["typ"] == "at+jwt"
    return dict(decoded.claims)
