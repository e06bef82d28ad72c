"""bench/naive_proxy.py: the comparison proxy checks tokens as the gateway's production path
must (signature, issuer, audience, expiry) before it forwards, so the rows compare like work."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from joserfc.jwk import KeySet

from tests.bench.modules import bench_module
from tests.support.http_upstream import recording_upstream
from tests.support.local_issuer import LocalIssuer

naive = bench_module("naive_proxy")

HEADERS = {"Content-Type": "application/json", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}'


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/json")


def refused_tokens(issuer: LocalIssuer, public_url: str, resource: str) -> dict[str, str | None]:
    """Tokens a proxy in front of `resource` must refuse, by why."""
    return {
        "no token": None,
        "another audience": issuer.mint(issuer.claims(public_url + "/other/mcp")),
        "expired": issuer.mint(issuer.claims(resource, exp=int(time.time()) - 60)),
        "another issuer": issuer.mint(issuer.claims(resource, iss="http://127.0.0.1:1")),
    }


async def test_it_forwards_only_requests_with_a_valid_token_for_the_route(
    aiohttp_client: Any,
) -> None:
    issuer = LocalIssuer()
    async with recording_upstream(echo) as upstream:
        settings = naive.Settings(
            issuer.issuer, KeySet([issuer.key]), {"/echo/mcp": upstream.url}, ""
        )
        client = await aiohttp_client(naive.make_app(settings))
        settings.public_url = f"http://127.0.0.1:{client.server.port}"
        resource = settings.public_url + "/echo/mcp"
        for why, token in refused_tokens(issuer, settings.public_url, resource).items():
            auth = {} if token is None else {"Authorization": f"Bearer {token}"}
            resp = await client.post("/echo/mcp", data=BODY, headers=HEADERS | auth)
            assert resp.status == 401, why
        assert upstream.requests == []

        good = issuer.mint(issuer.claims(resource))
        for _ in range(2):
            resp = await client.post(
                "/echo/mcp", data=BODY, headers=HEADERS | {"Authorization": f"Bearer {good}"}
            )
            assert resp.status == 200
            assert await resp.read() == BODY
        assert good in settings.verified  # verified once, then served from the cache
    assert len(upstream.requests) == 2
    assert upstream.requests[0].headers["Mcp-Method"] == "tools/call"
    assert "Authorization" not in upstream.requests[0].headers
    assert len(upstream.connection_ports) == 1, "no keep-alive to the upstream"
