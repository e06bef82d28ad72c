"""Identity headers: the upstream learns who is calling from the gateway, never from the client."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.conftest import StartGateway
from tests.support.http_upstream import recording_upstream
from tests.support.local_issuer import LocalIssuer

RPC = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
IDENTITY = {
    "subject": "X-User",
    "client_id": "X-Client",
    "issuer": "X-Issuer",
    "scopes": "X-Scopes",
}


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


async def test_identity_comes_from_the_token_and_forged_spellings_are_dropped(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    async with recording_upstream(ok) as upstream:
        gw = await start_gateway_for(
            {
                "name": "files",
                "route": "/files/mcp",
                "url": upstream.url,
                "identity_headers": IDENTITY,
            },
            auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        )
        claims = issuer.claims(gw.url("/files/mcp"), sub="J\u00f6rg\r\nX-Admin: 1")
        token = issuer.mint(claims)
        forged = [
            ("X-User", "root"),
            ("x-user", "root"),
            ("X_User", "root"),
            ("X_CLIENT", "admin-console"),
            ("X-Scopes", "files:admin"),
            ("X-Admin", "1"),
        ]
        headers = [("Authorization", f"Bearer {token}"), *forged]
        async with (
            aiohttp.ClientSession() as http,
            http.post(gw.url("/files/mcp"), json=RPC, headers=headers) as resp,
        ):
            assert resp.status == 200
    [seen] = upstream.requests
    sent = [(k.lower(), v) for k, v in seen.header_list]
    assert [v for k, v in sent if k.replace("_", "-") == "x-user"] == [
        "J%C3%B6rg%0D%0AX-Admin%3A%201"
    ]
    assert [v for k, v in sent if k.replace("_", "-") == "x-client"] == ["client-1"]
    assert [v for k, v in sent if k == "x-issuer"] == [issuer.issuer]
    assert [v for k, v in sent if k == "x-scopes"] == ["files:read mcp:tools"]
    # Headers outside the allowlist do not pass at all (issue 14, finding 4).
    assert [v for k, v in sent if k == "x-admin"] == []
