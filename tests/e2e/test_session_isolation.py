"""Session hijacking through the gateway, against the real server-everything (2025-11-25).

server-everything mints UUID session ids and answers 400 for ids it does not know; through the
gateway a client sees only gateway ids, bound to the principal that initialized the session,
and every refused or ended id gets 404 as the MCP transport specifies.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.session.seal import new_key
from tests.conftest import Gateway, StartGateway
from tests.support.crowd import ACCEPT, Exchange, RawMcpClient
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import HttpServerProcess
from tests.support.secrets import remember

ROUTE = "/everything/mcp"


@pytest.fixture
async def other_issuer() -> AsyncIterator[LocalIssuer]:
    server = LocalIssuer()
    await server.start()
    yield server
    await server.stop()


async def everything_gateway(
    start: StartGateway, everything: HttpServerProcess, issuers: list[LocalIssuer]
) -> Gateway:
    servers = [issuer.auth_server(f"issuer-{n}") for n, issuer in enumerate(issuers)]
    return await start(
        {"name": "everything", "route": ROUTE, "url": everything.url},
        auth={"resource_server": {"authorization_servers": servers}},
    )


async def get_stream_status(url: str, token: str, session_id: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Mcp-Session-Id": session_id}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status


def echoed(exchange: Exchange) -> list[object]:
    return [summary[2] for summary in exchange.summaries() if summary[0] == "result"]


async def test_only_the_principal_that_initialized_a_session_can_use_it(
    start_gateway_for: StartGateway,
    everything: HttpServerProcess,
    issuer: LocalIssuer,
    other_issuer: LocalIssuer,
) -> None:
    gw = await everything_gateway(start_gateway_for, everything, [issuer, other_issuer])
    url = gw.url(ROUTE)
    resource = url

    def token(who: LocalIssuer, **claims: object) -> str:
        return who.mint(who.claims(resource, **claims))

    alice = RawMcpClient(url, token(issuer), era="stateful")
    attackers = {
        "another subject": token(issuer, sub="mallory"),
        "same subject, other issuer": token(other_issuer),
        "same subject, other client": token(issuer, client_id="client-2"),
    }
    async with alice:
        [init, initialized] = await alice.open(1)
        assert (init.status, initialized.status) == (200, 202)
        assert alice.session_id is not None
        remember(alice.session_id)
        # server-everything's ids are UUIDs; ours are not
        with pytest.raises(ValueError, match="badly formed"):
            uuid.UUID(alice.session_id)

        async with RawMcpClient(url, token(issuer), era="stateful") as stranger:
            stranger.session_id = new_key()  # well-formed, but no session of this gateway
            unknown = await stranger.call_tool(2, "echo", {"message": "x"})
            assert unknown.status == 404

        for who, bearer in attackers.items():
            async with RawMcpClient(url, bearer, era="stateful") as attacker:
                attacker.session_id = alice.session_id
                replayed = await attacker.call_tool(2, "echo", {"message": "hijacked"})
                assert replayed == unknown, who
                assert await get_stream_status(url, bearer, alice.session_id) == 404, who
                assert await attacker.end_session() == 404, who

        mine = await alice.call_tool(2, "echo", {"message": "still mine"})
        assert mine.status == 200
        assert echoed(mine) == ["Echo: still mine"]


async def test_an_ended_session_gets_404_where_server_everything_would_say_400(
    start_gateway_for: StartGateway, everything: HttpServerProcess, issuer: LocalIssuer
) -> None:
    gw = await everything_gateway(start_gateway_for, everything, [issuer])
    url = gw.url(ROUTE)
    bearer = issuer.mint(issuer.claims(url))
    async with RawMcpClient(url, bearer, era="stateful") as client:
        await client.open(1)
        assert client.session_id is not None
        remember(client.session_id)
        assert await client.end_session() == 200
        after = await client.call_tool(2, "echo", {"message": "x"})
        assert after.status == 404
        assert await get_stream_status(url, bearer, client.session_id) == 404

    # What server-everything itself answers for a session it does not know:
    async with RawMcpClient(everything.url, bearer, era="stateful") as direct:
        direct.session_id = str(uuid.uuid4())
        assert (await direct.call_tool(2, "echo", {"message": "x"})).status == 400
