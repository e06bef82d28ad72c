"""bench/lean_relay.py: the floor row checks tokens as the naive proxy does (signature, issuer,
audience, expiry) and keeps its upstream connection, so the rows compare like work."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from joserfc.jwk import KeySet

from tests.bench.modules import bench_module
from tests.bench.test_naive_proxy import BODY, HEADERS, echo, refused_tokens
from tests.support.http_upstream import recording_upstream
from tests.support.local_issuer import LocalIssuer

sys.modules.setdefault("naive_proxy", bench_module("naive_proxy"))  # lean_relay imports it
relay_module = bench_module("lean_relay")


async def test_it_relays_only_requests_with_a_valid_token_for_the_route() -> None:
    issuer = LocalIssuer()
    loop = asyncio.get_running_loop()
    async with recording_upstream(echo) as upstream:
        settings = relay_module.Settings(
            issuer.issuer, KeySet([issuer.key]), {"/echo/mcp": upstream.url}, ""
        )
        relay = relay_module.Relay(settings, loop)
        server = await loop.create_server(lambda: relay_module.Client(relay), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings.public_url = f"http://127.0.0.1:{port}"
        resource = settings.public_url + "/echo/mcp"
        refused = refused_tokens(issuer, settings.public_url, resource)
        good = issuer.mint(issuer.claims(resource))
        try:
            async with aiohttp.ClientSession() as session:
                for why, token in refused.items():
                    auth = {} if token is None else {"Authorization": f"Bearer {token}"}
                    async with session.post(resource, data=BODY, headers=HEADERS | auth) as resp:
                        assert resp.status == 401, why
                assert upstream.requests == []
                for _ in range(2):
                    auth = {"Authorization": f"Bearer {good}"}
                    async with session.post(resource, data=BODY, headers=HEADERS | auth) as resp:
                        assert resp.status == 200
                        assert await resp.read() == BODY
        finally:
            server.close()
            await server.wait_closed()
            for pool in relay.pools.values():
                for conn in pool:
                    conn.transport.close()
        assert good in settings.verified  # verified once, then served from the cache
    assert len(upstream.requests) == 2
    assert upstream.requests[0].headers["Mcp-Method"] == "tools/call"
    assert "Authorization" not in upstream.requests[0].headers
    assert len(upstream.connection_ports) == 1, "no keep-alive to the upstream"
