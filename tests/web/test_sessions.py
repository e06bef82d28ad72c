"""Gateway-minted, principal-bound sessions, against a real stateful HTTP upstream on loopback.

The upstream here behaves like server-everything (2025-11-25): it mints its own session ids on
`initialize` and answers 400 for ids it does not know. End-to-end runs against server-everything
itself are in tests/e2e/test_session_isolation.py.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.session.seal import new_key
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.secrets import remember

ROUTE = "/files/mcp"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "session-test", "version": "1"},
    },
}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami"}}
CANCELLED = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}}


@dataclass
class StatefulServer:
    """Sessions like server-everything's: minted on initialize, 400 for unknown ids."""

    sessions: set[str] = field(default_factory=set)
    ended: list[str] = field(default_factory=list)
    streams_open: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        session = request.headers.get("Mcp-Session-Id")
        if request.method == "POST":
            body = json.loads(await request.read())
            if body.get("method") == "initialize":
                new = f"upstream-session-{next(self._ids)}"
                self.sessions.add(new)
                result = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {}}
                return web.json_response(
                    {"jsonrpc": "2.0", "id": body["id"], "result": result},
                    headers={"Mcp-Session-Id": new},
                )
        if session not in self.sessions:
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": "Bad"}},
                status=400,
            )
        if request.method == "DELETE":
            self.sessions.discard(session)
            self.ended.append(session)
            return web.Response(status=200)
        if request.method == "GET":
            return await self._stream(request)
        if "id" not in body:
            return web.Response(status=202)
        result = {"content": [{"type": "text", "text": session}]}
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """A server-to-client stream that stays open until the other side ends it."""
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        await stream.write(b"id: ev-1\ndata: \n\n")
        self.streams_open += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.streams_open -= 1
        return stream


@pytest.fixture
async def server() -> AsyncIterator[tuple[StatefulServer, RecordingUpstream]]:
    stateful = StatefulServer()
    async with recording_upstream(stateful.handle) as recorded:
        yield stateful, recorded


async def protected(
    start: StartGateway,
    issuers: list[LocalIssuer],
    url: str,
    *,
    sessions: dict[str, Any] | None = None,
    leeway: float = 30,
) -> Gateway:
    return await start(
        {"name": "files", "route": ROUTE, "url": url},
        {"name": "other", "route": "/other/mcp", "url": url},
        auth={
            "resource_server": {
                "authorization_servers": [
                    issuer.auth_server(f"issuer-{n}") for n, issuer in enumerate(issuers)
                ],
                "leeway": leeway,
            }
        },
        sessions=sessions,
    )


def token(issuer: LocalIssuer, gw: Gateway, route: str = ROUTE, **claims: Any) -> str:
    return issuer.mint(issuer.claims(gw.url(route), **claims))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def send(
    gw: Gateway,
    method: str,
    bearer: str,
    *,
    session: str | None = None,
    body: dict[str, Any] | None = None,
    route: str = ROUTE,
    extra: dict[str, str] | None = None,
) -> Answer:
    headers = {**HEADERS, "Authorization": f"Bearer {bearer}", **(extra or {})}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, gw.url(route), json=body, headers=headers) as resp,
    ):
        return Answer(resp.status, dict(resp.headers), await resp.read())


async def initialize(gw: Gateway, bearer: str, route: str = ROUTE) -> str:
    answer = await send(gw, "POST", bearer, body=INITIALIZE, route=route)
    assert answer.status == 200, answer.body
    return remember(answer.headers["Mcp-Session-Id"])


def comparable(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    """What must be identical between two refusals: all but the per-response headers."""
    varying = {"date", "x-request-id"}
    headers = {k.lower(): v for k, v in answer.headers.items() if k.lower() not in varying}
    return answer.status, headers, answer.body


async def test_client_sees_only_gateway_ids_and_upstream_only_its_own(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    stateful, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url)
    alice = token(issuer, gw)
    session = await initialize(gw, alice)

    assert session not in stateful.sessions
    assert "upstream-session" not in session
    assert re.fullmatch(r"[\x21-\x7e]+", session)
    assert len(base64.urlsafe_b64decode(session + "==")) >= 16 + 16  # >= 128 random bits
    answer = await send(gw, "POST", alice, session=session, body=CALL)
    assert answer.status == 200
    assert json.loads(answer.body)["result"]["content"][0]["text"] == "upstream-session-1"
    assert "Mcp-Session-Id" not in answer.headers  # only the initialize response carries it

    assert [r.headers.get("Mcp-Session-Id") for r in upstream.requests] == [
        None,
        "upstream-session-1",
    ]
    assert session not in gateway_log()


async def test_each_initialize_gets_a_distinct_unguessable_id(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    _, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url)
    alice = token(issuer, gw)
    ids = [await initialize(gw, alice) for _ in range(5)]
    assert len(set(ids)) == 5
    # No shared prefix beyond the key id: the rest is nonce and ciphertext.
    assert len({i[6:16] for i in ids}) == 5


async def test_another_principal_gets_the_same_404_as_an_unknown_session(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    stateful, upstream = server
    second_issuer = LocalIssuer()
    await second_issuer.start()
    try:
        gw = await protected(start_gateway_for, [issuer, second_issuer], upstream.url)
        alice = token(issuer, gw)
        session = await initialize(gw, alice)
        unknown = await send(gw, "POST", alice, session=new_key(), body=CALL)
        assert unknown.status == 404
        attackers = {
            "another subject": token(issuer, gw, sub="mallory"),
            "same subject, other issuer": token(second_issuer, gw),
            "same subject, other client": token(issuer, gw, client_id="client-2"),
        }
        seen_before = len(upstream.requests)
        for who, bearer in attackers.items():
            for method, body in (("POST", CALL), ("GET", None), ("DELETE", None)):
                answer = await send(gw, method, bearer, session=session, body=body)
                assert comparable(answer) == comparable(unknown), (who, method)
        assert len(upstream.requests) == seen_before, "a hijack attempt reached the upstream"

        answer = await send(gw, "POST", alice, session=session, body=CALL)
        assert answer.status == 200, "the owner's session must survive hijack attempts"
        assert stateful.sessions == {"upstream-session-1"}
    finally:
        await second_issuer.stop()
    log = gateway_log()
    rejected = [json.loads(line) for line in log.splitlines() if '"session_rejected"' in line]
    assert [event["reason"] for event in rejected] == ["unknown"] + ["foreign"] * 9
    assert {event["sub"] for event in rejected} == {"alice", "mallory"}
    assert session not in log


async def test_a_session_id_is_bound_to_its_route(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    _, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url)
    session = await initialize(gw, token(issuer, gw))
    other_route = token(issuer, gw, route="/other/mcp")
    answer = await send(gw, "POST", other_route, session=session, body=CALL, route="/other/mcp")
    assert answer.status == 404


async def test_a_token_without_sub_binds_the_session_to_that_token(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    _, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url)
    first = token(issuer, gw, sub=None)
    session = await initialize(gw, first)
    assert (await send(gw, "POST", first, session=session, body=CALL)).status == 200
    # Same issuer and client, also without `sub`: not the same principal for sure.
    second = token(issuer, gw, sub=None)
    assert (await send(gw, "POST", second, session=session, body=CALL)).status == 404


async def test_after_delete_the_id_gets_404_although_the_upstream_would_say_400(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    stateful, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url)
    alice = token(issuer, gw)
    session = await initialize(gw, alice)
    assert (await send(gw, "DELETE", alice, session=session)).status == 200
    assert stateful.ended == ["upstream-session-1"]
    seen = len(upstream.requests)
    for method, body in (("POST", CALL), ("GET", None), ("DELETE", None)):
        assert (await send(gw, method, alice, session=session, body=body)).status == 404
    assert len(upstream.requests) == seen


async def test_last_event_id_is_forwarded_only_within_a_session(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    _, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url)
    alice = token(issuer, gw)
    resume = {"Last-Event-ID": "ev-1"}
    await send(gw, "POST", alice, body=CALL, extra=resume)  # no session: nothing to resume
    session = await initialize(gw, alice)
    await send(gw, "POST", alice, session=session, body=CALL, extra=resume)
    without, _, within = upstream.requests
    assert "Last-Event-ID" not in without.headers
    assert within.headers["Last-Event-ID"] == "ev-1"


async def test_sessions_survive_a_replica_with_the_same_keys_and_key_rotation(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    """Two gateways with no shared store: the sealed id carries everything needed."""
    _, upstream = server
    old, new = remember(new_key()), remember(new_key())
    first = await protected(start_gateway_for, [issuer], upstream.url, sessions={"keys": [old]})
    session = await initialize(first, token(issuer, first))

    rotated = await protected(
        start_gateway_for, [issuer], upstream.url, sessions={"keys": [new, old]}
    )
    answer = await send(rotated, "POST", token(issuer, rotated), session=session, body=CALL)
    assert answer.status == 200
    assert json.loads(answer.body)["result"]["content"][0]["text"] == "upstream-session-1"
    mallory = token(issuer, rotated, sub="mallory")
    assert (await send(rotated, "POST", mallory, session=session, body=CALL)).status == 404

    retired = await protected(start_gateway_for, [issuer], upstream.url, sessions={"keys": [new]})
    answer = await send(retired, "POST", token(issuer, retired), session=session, body=CALL)
    assert answer.status == 404


async def test_session_limits_refuse_new_sessions_not_existing_ones(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    _, upstream = server
    gw = await protected(
        start_gateway_for, [issuer], upstream.url, sessions={"max_per_principal": 2, "max_total": 3}
    )
    alice, bob, carol = (token(issuer, gw, sub=name) for name in ("alice", "bob", "carol"))
    first = await initialize(gw, alice)
    await initialize(gw, alice)
    seen = len(upstream.requests)
    too_many = await send(gw, "POST", alice, body=INITIALIZE)
    assert too_many.status == 429
    assert too_many.headers["Retry-After"]
    assert len(upstream.requests) == seen, "a refused initialize must not reach the upstream"
    assert (await send(gw, "POST", alice, session=first, body=CALL)).status == 200

    await initialize(gw, bob)
    full = await send(gw, "POST", carol, body=INITIALIZE)
    assert full.status == 503

    assert (await send(gw, "DELETE", alice, session=first)).status == 200
    await initialize(gw, carol)  # room again


async def test_stream_limit_refuses_new_streams_while_open_ones_keep_flowing(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    _, upstream = server
    gw = await protected(
        start_gateway_for, [issuer], upstream.url, sessions={"max_streams_per_principal": 1}
    )
    alice = token(issuer, gw)
    session = await initialize(gw, alice)
    for _ in range(3):  # a request answered with JSON holds no place once answered
        assert (await send(gw, "POST", alice, session=session, body=CALL)).status == 200
    headers = {**HEADERS, "Authorization": f"Bearer {alice}", "Mcp-Session-Id": session}
    async with (
        aiohttp.ClientSession() as http,
        http.get(gw.url(ROUTE), headers=headers) as stream,
    ):
        assert stream.status == 200
        assert await stream.content.readuntil(b"\n\n") == b"id: ev-1\ndata: \n\n"
        second = await send(gw, "GET", alice, session=session)
        assert second.status == 429
        # A POSTed request may be answered with a stream too: refused before it is forwarded.
        seen = len(upstream.requests)
        assert (await send(gw, "POST", alice, session=session, body=CALL)).status == 429
        assert len(upstream.requests) == seen
        # A notification opens nothing (and must get through, to cancel something at the limit).
        assert (await send(gw, "POST", alice, session=session, body=CANCELLED)).status == 202
        bob = token(issuer, gw, sub="bob")
        bob_session = await initialize(gw, bob)
        async with http.get(
            gw.url(ROUTE),
            headers={**headers, "Authorization": f"Bearer {bob}", "Mcp-Session-Id": bob_session},
        ) as other:
            assert other.status == 200  # the limit is per principal
        assert not stream.content.at_eof()
    # The GET stream has ended: its place is free again.
    assert (await send(gw, "POST", alice, session=session, body=CALL)).status == 200


async def test_a_stream_closes_when_the_token_that_opened_it_expires(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    stateful, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url, leeway=0)
    long_lived = token(issuer, gw)
    session = await initialize(gw, long_lived)
    short_lived = token(issuer, gw, exp=int(time.time()) + 3)
    headers = {**HEADERS, "Authorization": f"Bearer {short_lived}", "Mcp-Session-Id": session}
    async with (
        aiohttp.ClientSession() as http,
        http.get(gw.url(ROUTE), headers=headers) as stream,
    ):
        assert stream.status == 200
        async with asyncio.timeout(20):
            rest = await stream.content.read()  # returns at the end of the stream
    assert b"ev-1" in rest
    assert '"token_expired"' in gateway_log()
    async with asyncio.timeout(10):
        while stateful.streams_open:  # the upstream side of the stream was closed too
            await asyncio.sleep(0.05)
    # The session itself lives on for a client with a fresh token.
    assert (await send(gw, "POST", long_lived, session=session, body=CALL)).status == 200


async def test_idle_sessions_are_reaped_and_the_upstream_told(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    stateful, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url, sessions={"idle_timeout": 0.4})
    alice = token(issuer, gw)
    session = await initialize(gw, alice)
    async with asyncio.timeout(15):
        while not stateful.ended:
            await asyncio.sleep(0.05)
    assert stateful.ended == ["upstream-session-1"]
    assert (await send(gw, "POST", alice, session=session, body=CALL)).status == 404


async def test_a_session_past_its_lifetime_gets_404(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
) -> None:
    _, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url, sessions={"max_lifetime": 1})
    alice = token(issuer, gw)
    session = await initialize(gw, alice)
    async with asyncio.timeout(15):
        while (await send(gw, "POST", alice, session=session, body=CALL)).status == 200:
            await asyncio.sleep(0.1)
    assert (await send(gw, "POST", alice, session=session, body=CALL)).status == 404


@pytest.mark.parametrize(
    "value",
    ["", "x" * 5000, "not base64 !", new_key() + "A", "AAAA", "\u00e9t\u00e9"],
    ids=["empty", "huge", "not-base64", "bad-length", "short", "non-ascii"],
)
async def test_malformed_session_ids_get_the_same_404(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    server: tuple[StatefulServer, RecordingUpstream],
    value: str,
) -> None:
    _, upstream = server
    gw = await protected(start_gateway_for, [issuer], upstream.url)
    alice = token(issuer, gw)
    reference = await send(gw, "POST", alice, session=new_key(), body=CALL)
    headers = {**HEADERS, "Authorization": f"Bearer {alice}"}
    async with aiohttp.ClientSession() as http:
        raw_headers = {**headers, "Mcp-Session-Id": value}
        async with http.post(
            gw.url(ROUTE), data=json.dumps(CALL).encode("utf-8"), headers=raw_headers
        ) as resp:
            answer = Answer(resp.status, dict(resp.headers), await resp.read())
    assert comparable(answer) == comparable(reference)
    assert upstream.requests == []
