"""Response streams cannot outlive what allowed them, nor escape the limits, nor pin upstreams.

- A token revoked at the facade (RFC 7009, or a refresh family on reuse) ends the streams it
  opened: at once on the replica that revoked it, within the re-check interval on the others.
- An event stream answering a POST counts toward the stream limits like a GET stream; a POSTed
  request is refused before it is forwarded when the caller has no room for a stream.
- A client that stops reading loses its stream after `stalled_stream_timeout`, and the upstream
  sees its connection closed (not parked in the pool).

All against real sockets: a streaming HTTP upstream on loopback, the gateway's own facade (local
sign-in), a local issuer's JWTs, a real `redis-server` for two replicas.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from gateway.oauth.upstream import pkce_pair
from gateway.session.seal import new_key
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.facade import ROUTE, facade_gateway, write_users
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.oauth_client import SignIn, follow_authorization, loopback_redirect_uri
from tests.support.processes import free_port
from tests.support.redis import RedisServer
from tests.support.secrets import remember

PASSWORD = remember("streams end when their token does")
SSE = {"Accept": "text/event-stream"}
MCP = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
WAIT = 20  # seconds: a bound on waiting for something that must happen, never a measurement


def call(rpc_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": "slow"}}


CANCELLED = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}


@dataclass
class StreamingServer:
    """Answers GETs and POSTed requests with an event stream that stays open (one event, then
    silence; or, with `flood`, that payload again and again); notifications get 202."""

    flood: bytes = b""
    open: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the gateway closed an open stream's connection."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and "id" not in json.loads(await request.read()):
            return web.Response(status=202)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        self.open += 1
        try:
            await stream.write(b"id: 1\ndata: {}\n\n")
            while self.flood:
                await stream.write(self.flood)
            await asyncio.Event().wait()
        except (ConnectionResetError, asyncio.CancelledError):
            self.closed.set()
            raise
        finally:
            self.open -= 1
        return stream


@pytest.fixture
async def streaming() -> AsyncIterator[tuple[StreamingServer, RecordingUpstream]]:
    server = StreamingServer()
    async with recording_upstream(server.handle) as upstream:
        yield server, upstream


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users(tmp_path / "users.yaml", PASSWORD)


# -- a token the facade issued ------------------------------------------------------------------


@dataclass
class Tokens:
    client_id: str
    access: str
    refresh: str | None


async def sign_in(public: str, at: str, *, offline: bool = False) -> Tokens:
    """Register a public client at replica `at`, sign alice in and redeem the code there."""
    redirect_uri = loopback_redirect_uri()
    verifier, challenge = pkce_pair()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            at + "/oauth/register",
            json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none",
                  "grant_types": ["authorization_code", "refresh_token"]},
        ) as registered:  # fmt: skip
            assert registered.status == 201, await registered.text()
            client_id = (await registered.json())["client_id"]
        query = urlencode(
            {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
             "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
             "resource": public + ROUTE,
             "scope": "mcp:tools offline_access" if offline else "mcp:tools"}
        )  # fmt: skip
        result = await follow_authorization(
            f"{at}/oauth/authorize?{query}", redirect_uri, sign_in=SignIn("alice", PASSWORD)
        )
        form = {"grant_type": "authorization_code", "code": remember(result.code),
                "client_id": client_id, "redirect_uri": redirect_uri,
                "code_verifier": verifier}  # fmt: skip
        body = await token_request(http, at, form)
    return Tokens(client_id, body["access_token"], body.get("refresh_token"))


async def token_request(
    http: aiohttp.ClientSession, at: str, form: dict[str, str], status: int = 200
) -> dict[str, Any]:
    async with http.post(at + "/oauth/token", data=form) as answer:
        assert answer.status == status, await answer.text()
        body: dict[str, Any] = await answer.json()
    for name in ("access_token", "refresh_token"):
        if name in body:
            remember(body[name])
    return body


async def revoke(at: str, tokens: Tokens) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            at + "/oauth/revoke", data={"token": tokens.access, "client_id": tokens.client_id}
        ) as answer,
    ):
        assert answer.status == 200


def closed_streams() -> list[tuple[str, str]]:
    """(level, reason) of each `stream_closed` line so far; and no line at error level."""
    records = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    assert [r for r in records if r.get("level") in {"error", "critical"}] == []
    return [(r["level"], r["reason"]) for r in records if r.get("event") == "stream_closed"]


async def until_it_ends(stream: aiohttp.ClientResponse) -> bytes:
    """The rest of a stream, which must end (cleanly) within the test's bound."""
    async with asyncio.timeout(WAIT):
        return await stream.content.read()


async def until_closed_upstream(server: StreamingServer) -> None:
    async with asyncio.timeout(WAIT):
        await server.closed.wait()
        while server.open:
            await asyncio.sleep(0.02)


# -- revocation ---------------------------------------------------------------------------------


async def test_revoking_an_access_token_ends_its_open_stream_at_once(
    start_gateway_for: StartGateway,
    streaming: tuple[StreamingServer, RecordingUpstream],
    users_file: Path,
) -> None:
    server, upstream = streaming
    gw = await facade_gateway(start_gateway_for, upstream.url, users_file)
    tokens = await sign_in(gw.base, gw.base)
    other = await sign_in(gw.base, gw.base)  # the same user's other token: not revoked
    async with aiohttp.ClientSession() as http:
        revoked_stream = await http.get(
            gw.url(ROUTE), headers={**SSE, "Authorization": f"Bearer {tokens.access}"}
        )
        kept_stream = await http.get(
            gw.url(ROUTE), headers={**SSE, "Authorization": f"Bearer {other.access}"}
        )
        for stream in (revoked_stream, kept_stream):
            assert stream.status == 200
            assert await stream.content.readuntil(b"\n\n") == b"id: 1\ndata: {}\n\n"

        await revoke(gw.base, tokens)
        assert await until_it_ends(revoked_stream) == b""  # ended cleanly, nothing more
        await until_closed_upstream_count(server, 1)
        assert ("info", "token_revoked") in closed_streams()
        assert not kept_stream.content.at_eof()
        kept_stream.close()
        revoked_stream.close()


async def until_closed_upstream_count(server: StreamingServer, remaining: int) -> None:
    async with asyncio.timeout(WAIT):
        while server.open != remaining:
            await asyncio.sleep(0.02)


async def test_reusing_a_refresh_token_ends_the_streams_of_its_family(
    start_gateway_for: StartGateway,
    streaming: tuple[StreamingServer, RecordingUpstream],
    users_file: Path,
) -> None:
    server, upstream = streaming
    gw = await facade_gateway(start_gateway_for, upstream.url, users_file)
    tokens = await sign_in(gw.base, gw.base, offline=True)
    assert tokens.refresh is not None
    async with aiohttp.ClientSession() as http:
        stream = await http.get(
            gw.url(ROUTE), headers={**SSE, "Authorization": f"Bearer {tokens.access}"}
        )
        assert stream.status == 200
        assert await stream.content.readuntil(b"\n\n") == b"id: 1\ndata: {}\n\n"
        form = {"grant_type": "refresh_token", "client_id": tokens.client_id,
                "refresh_token": tokens.refresh}  # fmt: skip
        await token_request(http, gw.base, form)  # rotated: the stream's token lives on
        assert not stream.content.at_eof()
        await token_request(http, gw.base, form, status=400)  # reuse: the family is revoked
        assert await until_it_ends(stream) == b""
        await until_closed_upstream(server)
        assert ("info", "token_revoked") in closed_streams()


@pytest.fixture(scope="module")
def redis() -> Any:
    with RedisServer(password=remember(new_key())) as server:
        yield server


async def test_a_revocation_through_one_replica_ends_streams_on_the_other(
    streaming: tuple[StreamingServer, RecordingUpstream],
    users_file: Path,
    redis: RedisServer,
    start_gateway_for: StartGateway,
) -> None:
    server, upstream = streaming
    ports = free_port(), free_port()
    public = f"http://127.0.0.1:{ports[0]}"
    key = ec.generate_private_key(ec.SECP256R1())
    pem = remember(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode())
    files = {"name": "files", "route": ROUTE, "url": upstream.url, "scopes": ["mcp:tools"]}
    shared: dict[str, Any] = {  # one config for both replicas but their ports
        "public_url": public,
        "server": {"allowed_hosts": [f"127.0.0.1:{port}" for port in ports]},
        "store": {"backend": "redis", "url": redis.url, "key_prefix": f"streams-{ports[0]}:"},
        "auth": {"authorization_server": {
            "login": {"local": {"users_file": str(users_file)}},
            "grants": [{"scopes": ["mcp:tools"]}],
            "signing_key": pem,
        }},
    }  # fmt: skip
    a = await start_gateway_for(files, port=ports[0], **shared)
    b = await start_gateway_for(files, port=ports[1], **shared)
    tokens = await sign_in(public, a.base)
    async with aiohttp.ClientSession() as http:
        stream = await http.get(
            b.url(ROUTE), headers={**SSE, "Authorization": f"Bearer {tokens.access}"}
        )  # open through B...
        assert stream.status == 200
        assert await stream.content.readuntil(b"\n\n") == b"id: 1\ndata: {}\n\n"
        await revoke(a.base, tokens)  # ...revoked through A
        assert await until_it_ends(stream) == b""
        await until_closed_upstream(server)
    assert ("info", "token_revoked") in closed_streams()


# -- limits -------------------------------------------------------------------------------------


async def protected(start: StartGateway, issuer: LocalIssuer, url: str, **sessions: Any) -> Gateway:
    return await start(
        {"name": "files", "route": ROUTE, "url": url},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server("local")]}},
        sessions=sessions,
    )


async def test_streams_answering_posts_count_toward_the_per_principal_limit(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    streaming: tuple[StreamingServer, RecordingUpstream],
) -> None:
    server, upstream = streaming
    gw = await protected(start_gateway_for, issuer, upstream.url, max_streams_per_principal=2)
    alice = {**MCP, "Authorization": f"Bearer {issuer.mint(issuer.claims(gw.url(ROUTE)))}"}
    bob_token = issuer.mint(issuer.claims(gw.url(ROUTE), sub="bob"))
    bob = {**MCP, "Authorization": f"Bearer {bob_token}"}
    async with aiohttp.ClientSession() as http:
        streams = [await http.post(gw.url(ROUTE), json=call(n), headers=alice) for n in (1, 2)]
        for stream in streams:
            assert stream.status == 200
            assert stream.headers["Content-Type"] == "text/event-stream"
            assert await stream.content.readuntil(b"\n\n") == b"id: 1\ndata: {}\n\n"

        forwarded = len(upstream.requests)
        async with http.post(gw.url(ROUTE), json=call(3), headers=alice) as third:
            assert third.status == 429
        assert len(upstream.requests) == forwarded  # refused before it reached the upstream
        async with http.get(gw.url(ROUTE), headers=alice) as get:
            assert get.status == 429  # GET and POST streams share the limit
        async with http.post(gw.url(ROUTE), json=CANCELLED, headers=alice) as notification:
            assert notification.status == 202  # opens nothing: never refused
        async with http.post(gw.url(ROUTE), json=call(4), headers=bob) as bobs:
            assert bobs.status == 200  # the limit is per principal

        streams[0].close()
        await until_closed_upstream_count(server, 1)
        async with asyncio.timeout(WAIT):
            while True:  # the gateway frees the place once its handler has unwound
                async with http.post(gw.url(ROUTE), json=call(5), headers=alice) as again:
                    if again.status == 200:
                        break
                    assert again.status == 429
                await asyncio.sleep(0.05)
        streams[1].close()


async def test_a_client_that_stops_reading_loses_its_stream_and_the_upstream_its_connection(
    start_gateway_for: StartGateway,
    streaming: tuple[StreamingServer, RecordingUpstream],
) -> None:
    server, upstream = streaming
    server.flood = b"data: " + b"x" * 65_536 + b"\n\n"
    gw = await start_gateway_for(
        {"name": "files", "route": ROUTE, "url": upstream.url},
        sessions={"stalled_stream_timeout": 0.5},
    )
    port = gw.running.port
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, ("127.0.0.1", port))
        head = (f"GET {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Accept: text/event-stream\r\n\r\n").encode()  # fmt: skip
        await loop.sock_sendall(client, head)
        # ... and never read a byte.
        await until_closed_upstream(server)
        assert ("info", "client_stalled") in closed_streams()
        assert len(upstream.requests) == 1
        async with aiohttp.ClientSession() as http, http.get(gw.url("/metrics")) as metrics:
            text = await metrics.text()
        assert (
            'mcp_gateway_streams_closed_total{reason="client_stalled",upstream="files"} 1.0' in text
        )
    finally:
        client.close()


# -- stdio upstreams ----------------------------------------------------------------------------

STDIO_ROUTE = "/tiny/mcp"
TINY_SERVER = """
import json, sys, time

def send(message):
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()

for line in sys.stdin:
    message = json.loads(line)
    if message.get("method") == "initialize":
        send({"jsonrpc": "2.0", "id": message["id"], "result": {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}}, "serverInfo": {"name": "tiny", "version": "1"}}})
    elif message.get("method") == "tools/call" and message["params"]["name"] == "flood":
        while True:  # progress for the call, much faster than a stalled client reads
            for _ in range(16):
                send({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "info", "data": "x" * 65536}})
            time.sleep(0.01)
    # any other call ("slow") is never answered: its stream stays open
"""


async def stdio_gateway(
    start: StartGateway, tmp_path: Path, **sessions: Any
) -> tuple[Gateway, str]:
    """A gateway in front of a tiny stdio server, and a session opened on it."""
    script = tmp_path / "tiny_server.py"
    script.write_text(TINY_SERVER)
    gw = await start(
        {"name": "tiny", "route": STDIO_ROUTE, "command": [sys.executable, str(script)]},
        sessions=sessions,
    )
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "streams", "version": "1"}}}  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url(STDIO_ROUTE), json=initialize, headers=MCP) as answer,
    ):
        assert answer.status == 200, await answer.text()
        return gw, remember(answer.headers["Mcp-Session-Id"])


async def test_stdio_request_streams_count_toward_the_per_principal_limit(
    start_gateway_for: StartGateway, tmp_path: Path
) -> None:
    gw, session = await stdio_gateway(start_gateway_for, tmp_path, max_streams_per_principal=1)
    headers = {**MCP, "Mcp-Session-Id": session}
    async with aiohttp.ClientSession() as http:
        first = await http.post(gw.url(STDIO_ROUTE), json=call(1), headers=headers)
        assert first.status == 200
        assert first.headers["Content-Type"] == "text/event-stream"
        async with http.post(gw.url(STDIO_ROUTE), json=call(2), headers=headers) as second:
            assert second.status == 429
        async with http.get(gw.url(STDIO_ROUTE), headers={**SSE, **headers}) as get:
            assert get.status == 429
        async with http.post(gw.url(STDIO_ROUTE), json=CANCELLED, headers=headers) as note:
            assert note.status == 202
        first.close()


async def test_a_stalled_client_of_a_stdio_stream_is_dropped(
    start_gateway_for: StartGateway, tmp_path: Path
) -> None:
    gw, session = await stdio_gateway(start_gateway_for, tmp_path, stalled_stream_timeout=0.5)
    port = gw.running.port
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "flood"}}).encode()  # fmt: skip
    head = (f"POST {STDIO_ROUTE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
            f"Mcp-Session-Id: {session}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(client, head + body)
        # ... and never read a byte.
        async with asyncio.timeout(WAIT):
            while ("info", "client_stalled") not in closed_streams():
                await asyncio.sleep(0.05)
    finally:
        client.close()


async def test_revoking_a_token_ends_its_stdio_stream(
    start_gateway_for: StartGateway, tmp_path: Path, users_file: Path
) -> None:
    script = tmp_path / "tiny_server.py"
    script.write_text(TINY_SERVER)
    gw = await start_gateway_for(
        {"name": "tiny", "route": ROUTE, "command": [sys.executable, str(script)],
         "scopes": ["mcp:tools"]},
        auth={"authorization_server": {"login": {"local": {"users_file": str(users_file)}},
                                       "grants": [{"scopes": ["mcp:tools"]}]}},
    )  # fmt: skip
    tokens = await sign_in(gw.base, gw.base)
    headers = {**MCP, "Authorization": f"Bearer {tokens.access}"}
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "streams", "version": "1"}}}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url(ROUTE), json=initialize, headers=headers) as answer:
            assert answer.status == 200, await answer.text()
            headers["Mcp-Session-Id"] = remember(answer.headers["Mcp-Session-Id"])
        stream = await http.post(gw.url(ROUTE), json=call(1), headers=headers)
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        await revoke(gw.base, tokens)
        assert await until_it_ends(stream) == b""
    assert ("info", "token_revoked") in closed_streams()
