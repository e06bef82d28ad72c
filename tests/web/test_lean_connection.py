"""The lean data plane's connection handling, over raw client sockets to a real gateway.

What a `ClientConnection` itself decides: keep-alive across requests (after whole and after
streamed answers), the hand-off of a connection to aiohttp at the first request the lean plane
does not serve, pipelined requests answered in order (reading paused when too many wait),
bodies fed as they arrive, a body left unread skipped or the connection closed, no body taken
into memory faster than something reads it, the idle deadline, a graceful stop, and a client
going away. Every wait is bounded; timing is only ever waited on, never asserted.

Already covered elsewhere, on `/mcp` routes that now run on the lean plane: the header deadline
for a trickled or stalled head, with other clients served (tests/web/test_http_edge.py), three
pipelined POSTs (same file), a body slower than `body_timeout` getting 408 and a closed
connection (tests/web/test_forward.py), a client leaving mid-stream cancelling the upstream
request (same file), and the lean-vs-aiohttp differential (tests/security).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from gateway.proxy.connection import UpstreamConnection
from gateway.web.plane.connection import PENDING_LIMIT, ClientConnection
from gateway.web.plane.head import parse_head
from tests.conftest import Gateway, StartGateway
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import free_port
from tests.support.secrets import remember

BOUND = 10  # seconds: an outcome that takes longer is a failure, not a hang
SHORT = 0.5  # the timeouts under test
MAX_FIELD = 8190


@dataclass
class Upstream:
    recorded: RecordingUpstream
    release: asyncio.Event
    """Lets requests for the tool "wait" be answered."""
    waiting: asyncio.Event
    """Set once a "wait" request has reached the upstream."""


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """Echoes the JSON-RPC id; holds requests for the tool "wait" until `release`, and
    answers a GET with an event stream that stays open until then."""
    release, waiting = asyncio.Event(), asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":  # a stream, open until `release`
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await stream.prepare(request)
            await stream.write(b"data: open\n\n")
            await release.wait()
            return stream
        body = await request.json()
        if body.get("params", {}).get("name") == "wait":
            waiting.set()
            await release.wait()
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {}})

    async with recording_upstream(answer) as recorded:
        yield Upstream(recorded, release, waiting)
        release.set()


def route(upstream: Upstream, **extra: Any) -> dict[str, Any]:
    return {"name": "up", "route": "/up/mcp", "url": upstream.recorded.url, **extra}


def rpc(rpc_id: int, tool: str = "echo") -> bytes:
    message = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": tool}}
    return json.dumps(message).encode()


def post(gw: Gateway, body: bytes, path: str = "/up/mcp", *extra: str, length: int = -1) -> bytes:
    """A POST whose head is one the lean plane serves (`length`: the Content-Length to declare,
    by default the body's)."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{gw.running.port}",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
        f"Content-Length: {len(body) if length < 0 else length}",
        *extra,
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    assert parse_head(head, {path.encode(): path}, MAX_FIELD) is not None  # lean, not aiohttp
    return head + body


def healthz(gw: Gateway) -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{gw.running.port}\r\n\r\n".encode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def rpc_id(self) -> object:
        return json.loads(self.body)["id"]


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One response (Content-Length or chunked framing), within BOUND."""
    async with asyncio.timeout(BOUND):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            assert headers.get("transfer-encoding") == "chunked", headers
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")
        return Answer(int(status_line.split(" ")[1]), headers, body)


async def closed(reader: asyncio.StreamReader) -> bytes:
    """What is read until the gateway closes the connection (b"" when it answered nothing)."""
    async with asyncio.timeout(BOUND):
        return await reader.read()


# -- keep-alive and the hand-off to aiohttp ------------------------------------------------------


async def test_a_connection_serves_lean_requests_then_aiohttp_after_a_hand_off(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    gw = await start_gateway_for(route(upstream))
    async with gw.raw_connection() as (reader, writer):
        for rpc_id in (1, 2):
            writer.write(post(gw, rpc(rpc_id)))
            answer = await read_answer(reader)
            assert (answer.status, answer.rpc_id()) == (200, rpc_id)
        assert [json.loads(r.body)["id"] for r in upstream.recorded.requests] == [1, 2]

        writer.write(healthz(gw))  # not an MCP route: aiohttp serves the connection from here
        answer = await read_answer(reader)
        assert answer.status == 200
        assert json.loads(answer.body)["status"] == "ok"

        writer.write(post(gw, rpc(3)))
        answer = await read_answer(reader)
        assert (answer.status, answer.rpc_id()) == (200, 3)
        assert answer.headers["content-type"].startswith("application/json")
    assert [json.loads(r.body)["id"] for r in upstream.recorded.requests] == [1, 2, 3]
    assert len(upstream.recorded.connection_ports) == 1  # one pooled upstream connection


async def test_a_streamed_answer_ends_in_step_with_the_next_request(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    """A GET stream relayed chunk by chunk until the upstream ends it; the connection then
    carries the next request."""
    gw = await start_gateway_for(route(upstream))
    get = (
        f"GET /up/mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.running.port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    async with gw.raw_connection() as (reader, writer):
        writer.write(get)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"\r\nTransfer-Encoding: chunked\r\n" in head
        first = await asyncio.wait_for(reader.readuntil(b"data: open\n\n\r\n"), BOUND)
        assert first == b"c\r\ndata: open\n\n\r\n"  # one chunk, while the stream is open
        upstream.release.set()
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), BOUND) == b"0\r\n\r\n"
        writer.write(post(gw, rpc(2)))
        answer = await read_answer(reader)
        assert (answer.status, answer.rpc_id()) == (200, 2)


# -- pipelining -----------------------------------------------------------------------------------


async def test_a_pipelined_request_waits_for_the_answer_before_it(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    """Two POSTs in one write, the first held by the upstream: the second is not forwarded
    until the first is answered, and the answers come in order, each with its own id."""
    gw = await start_gateway_for(route(upstream))
    async with gw.raw_connection() as (reader, writer):
        writer.write(post(gw, rpc(1, "wait")) + post(gw, rpc(2)))
        await writer.drain()
        await asyncio.wait_for(upstream.waiting.wait(), BOUND)
        assert len(upstream.recorded.requests) == 1
        upstream.release.set()
        first, second = await read_answer(reader), await read_answer(reader)
    assert [(first.status, first.rpc_id()), (second.status, second.rpc_id())] == [
        (200, 1),
        (200, 2),
    ]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert [json.loads(r.body)["id"] for r in upstream.recorded.requests] == [1, 2]


async def test_a_pipelined_request_for_aiohttp_is_handed_off_at_its_first_byte(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    """An MCP POST, then a probe and another POST in the same write: the lean plane answers the
    first, aiohttp the other two, in order, and nothing more."""
    gw = await start_gateway_for(route(upstream))
    body = rpc(1, "wait")
    async with gw.raw_connection() as (reader, writer):
        writer.write(post(gw, body) + healthz(gw) + post(gw, rpc(2)))
        await writer.drain()
        await asyncio.wait_for(upstream.waiting.wait(), BOUND)
        upstream.release.set()
        answers = [await read_answer(reader) for _ in range(3)]
        writer.write_eof()
        assert await closed(reader) == b""  # and nothing more was answered
    assert [answer.status for answer in answers] == [200, 200, 200]
    assert answers[0].rpc_id() == 1
    assert json.loads(answers[1].body)["status"] == "ok"
    assert answers[2].rpc_id() == 2
    assert [r.body for r in upstream.recorded.requests] == [body, rpc(2)]


async def test_pipelined_bytes_beyond_the_limit_pause_reading_until_their_turn(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    """More than `PENDING_LIMIT` bytes of requests behind a held one: the connection stops
    reading, then resumes once the held answer is written, and every request is answered."""
    gw = await start_gateway_for(route(upstream))
    size = PENDING_LIMIT // 3 + 1000
    bodies = [padded(n, size) for n in (2, 3, 4, 5)]
    async with gw.raw_connection() as (reader, writer):
        writer.write(post(gw, rpc(1, "wait")) + b"".join(post(gw, body) for body in bodies))
        await asyncio.wait_for(upstream.waiting.wait(), BOUND)
        upstream.release.set()
        answers = [await read_answer(reader) for _ in range(5)]
        await asyncio.wait_for(writer.drain(), BOUND)
    assert [(a.status, a.rpc_id()) for a in answers] == [(200, n) for n in range(1, 6)]
    assert [r.body for r in upstream.recorded.requests] == [rpc(1, "wait"), *bodies]


# -- bodies ---------------------------------------------------------------------------------------


def padded(rpc_id: int, size: int) -> bytes:
    return rpc(rpc_id)[:-1] + b', "pad": "' + b"x" * size + b'"}'


async def test_a_request_arriving_in_pieces_is_forwarded_whole(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    """The head a byte a write, the body in several: the client waits for nothing."""
    gw = await start_gateway_for(route(upstream))
    body = padded(5, 3000)
    raw = post(gw, body)
    head_end = raw.index(b"\r\n\r\n") + 4
    async with gw.raw_connection() as (reader, writer):
        for at in range(head_end):
            writer.write(raw[at : at + 1])
            await writer.drain()
        for start in range(head_end, len(raw), 700):
            writer.write(raw[start : start + 700])
            await writer.drain()
        answer = await read_answer(reader)
        assert (answer.status, answer.rpc_id()) == (200, 5)
        writer.write(post(gw, rpc(6)))  # the connection is still in step
        answer = await read_answer(reader)
        assert (answer.status, answer.rpc_id()) == (200, 6)
    assert [r.body for r in upstream.recorded.requests] == [body, rpc(6)]


@pytest.fixture
async def authenticated(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: Upstream
) -> Gateway:
    return await start_gateway_for(
        route(upstream, scopes=["mcp:tools"]),
        {
            "name": "open",
            "route": "/open/mcp",
            "url": upstream.recorded.url,
            "allow_anonymous": True,
        },
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )


async def test_a_refused_request_with_its_body_still_coming_has_the_rest_dropped(
    authenticated: Gateway, upstream: Upstream
) -> None:
    """401 before the body has all arrived: the rest of the body, when it comes, is read and
    dropped (never parsed as a request, though it looks like one), and the next request on
    the connection is answered, as aiohttp does (its lingering)."""
    gw = authenticated
    smuggled = post(gw, rpc(66), "/open/mcp")
    async with gw.raw_connection() as (reader, writer):
        writer.write(post(gw, smuggled[:10], length=len(smuggled)))
        await writer.drain()
        answer = await read_answer(reader)
        assert answer.status == 401
        assert "www-authenticate" in answer.headers
        writer.write(smuggled[10:] + post(gw, rpc(2), "/open/mcp"))
        served = await read_answer(reader)
        writer.write_eof()
        assert await closed(reader) == b""
    assert (served.status, served.rpc_id()) == (200, 2)
    assert [r.body for r in upstream.recorded.requests] == [rpc(2)]


async def test_a_refused_request_with_its_whole_body_keeps_the_connection_in_step(
    authenticated: Gateway, upstream: Upstream
) -> None:
    """401 with the body all sent: the body is skipped (it is not read as a request, though it
    looks like one) and the next request on the connection is answered."""
    gw = authenticated
    smuggled = post(gw, rpc(66), "/open/mcp")
    async with gw.raw_connection() as (reader, writer):
        writer.write(post(gw, smuggled) + post(gw, rpc(2), "/open/mcp"))
        await writer.drain()
        refused, served = await read_answer(reader), await read_answer(reader)
        writer.write_eof()
        assert await closed(reader) == b""
    assert refused.status == 401
    assert (served.status, served.rpc_id()) == (200, 2)
    assert [r.body for r in upstream.recorded.requests] == [rpc(2)]


async def test_a_body_nothing_reads_is_not_taken_into_memory(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    """A GET stream whose client declares a huge body and keeps sending it: nothing reads a
    GET's body, so the gateway must stop reading the socket (as aiohttp does after a few MiB)
    rather than hold every byte while the stream lasts."""
    gw = await start_gateway_for(route(upstream))
    get = (
        f"GET /up/mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.running.port}\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {10**15}\r\n\r\n"
    ).encode()
    mib = b"x" * (1 << 20)
    taken = 0
    async with gw.raw_connection() as (reader, writer):
        writer.write(get)
        await asyncio.wait_for(reader.readuntil(b"data: open\n\n"), BOUND)
        with contextlib.suppress(TimeoutError):
            while taken < 64:
                writer.write(mib)
                await asyncio.wait_for(writer.drain(), 2)  # blocked: the gateway stopped reading
                taken += 1
        upstream.release.set()
    assert taken < 64


@contextlib.asynccontextmanager
async def held_introspection(
    issuer: LocalIssuer, resource: str, release: asyncio.Event
) -> AsyncIterator[str]:
    """An RFC 7662 endpoint that answers "active" for any token once `release` is set; its URL."""

    async def introspect(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"active": True, **issuer.claims(resource)})

    app = web.Application()
    app.router.add_post("/introspect", introspect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/introspect"
    finally:
        release.set()
        await runner.cleanup()


@pytest.mark.parametrize("plane", ["lean", "aiohttp"])
async def test_a_body_is_not_taken_into_memory_while_authentication_waits(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: Upstream, plane: str
) -> None:
    """A POST whose token is being introspected (slowly) and whose client keeps sending the
    declared body: the gateway must stop reading once a bounded amount is buffered, as aiohttp
    does, not hold every byte until the step that reads the body."""
    release = asyncio.Event()
    port = free_port()
    resource = f"http://127.0.0.1:{port}/up/mcp"
    async with held_introspection(issuer, resource, release) as endpoint:
        secret = remember("introspection-client-secret")
        introspection = {"endpoint": endpoint, "client_id": "gw", "client_secret": secret}
        gw = await start_gateway_for(
            route(upstream, scopes=["mcp:tools"]),
            port=port,
            server={"data_plane": plane},
            auth={
                "resource_server": {
                    "authorization_servers": [issuer.auth_server(introspection=introspection)]
                }
            },
        )
        token = remember("opaque-token-being-introspected")
        head = post(gw, b"", "/up/mcp", f"Authorization: Bearer {token}", length=10**12)
        mib = b"x" * (1 << 20)
        taken = 0
        async with gw.raw_connection() as (_, writer):
            writer.write(head)
            with contextlib.suppress(TimeoutError):
                while taken < 64:
                    writer.write(mib)
                    await asyncio.wait_for(writer.drain(), 2)  # blocked: reading has paused
                    taken += 1
            release.set()
    assert taken < 64


# -- deadlines ------------------------------------------------------------------------------------


async def test_idle_connections_close_after_the_keepalive_timeout(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    """Whether no request ever came or one was answered, an idle connection is closed without
    a word; a connection in use meanwhile is not."""
    gw = await start_gateway_for(route(upstream), server={"keepalive_timeout": SHORT})
    async with gw.raw_connection() as (silent, _), gw.raw_connection() as (reader, writer):
        writer.write(post(gw, rpc(1)))
        assert (await read_answer(reader)).status == 200
        async with gw.raw_connection() as (busy, busy_writer):
            busy_writer.write(post(gw, rpc(2, "wait")))
            await busy_writer.drain()
            assert await closed(silent) == b""
            assert await closed(reader) == b""
            upstream.release.set()  # the busy one has outlived the idle deadline
            answer = await read_answer(busy)
            assert (answer.status, answer.rpc_id()) == (200, 2)


# -- stopping -------------------------------------------------------------------------------------


@pytest.mark.parametrize("plane", ["lean", "aiohttp"])
async def test_stop_lets_a_request_in_flight_finish_and_closes_idle_connections(
    start_gateway_for: StartGateway, upstream: Upstream, plane: str
) -> None:
    """While `stop()` runs: no new connection, idle ones closed, the request in flight answered
    whole (as aiohttp does, without `Connection: close`), then its connection closed."""
    server = {"shutdown_timeout": BOUND, "data_plane": plane}
    gw = await start_gateway_for(route(upstream), server=server)
    async with gw.raw_connection() as (reader, writer), gw.raw_connection() as (idle, idle_writer):
        idle_writer.write(post(gw, rpc(1)))
        assert (await read_answer(idle)).status == 200
        writer.write(post(gw, rpc(2, "wait")))
        await writer.drain()
        await asyncio.wait_for(upstream.waiting.wait(), BOUND)

        stopping = asyncio.create_task(gw.running.stop())
        assert await closed(idle) == b""  # stop has begun
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", gw.running.port)
        assert not stopping.done()
        upstream.release.set()
        answer = await read_answer(reader)
        assert (answer.status, answer.rpc_id()) == (200, 2)
        assert await closed(reader) == b""
        await asyncio.wait_for(stopping, BOUND)


@pytest.mark.parametrize("plane", ["lean", "aiohttp"])
async def test_stop_cuts_a_request_still_running_at_the_shutdown_timeout(
    start_gateway_for: StartGateway, upstream: Upstream, plane: str
) -> None:
    server = {"shutdown_timeout": SHORT, "data_plane": plane}
    gw = await start_gateway_for(route(upstream), server=server)
    async with gw.raw_connection() as (reader, writer):
        writer.write(post(gw, rpc(2, "wait")))
        await writer.drain()
        await asyncio.wait_for(upstream.waiting.wait(), BOUND)
        await asyncio.wait_for(gw.running.stop(), BOUND)
        with contextlib.suppress(ConnectionResetError):
            assert await closed(reader) == b""  # no answer
    await asyncio.wait_for(upstream.recorded.cancelled.wait(), BOUND)


# -- a client going away --------------------------------------------------------------------------


async def test_a_client_leaving_before_the_answer_cancels_the_upstream_request(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    gw = await start_gateway_for(route(upstream))
    async with gw.raw_connection() as (_, writer):
        writer.write(post(gw, rpc(4, "wait")))
        await writer.drain()
        await asyncio.wait_for(upstream.waiting.wait(), BOUND)
    await asyncio.wait_for(upstream.recorded.cancelled.wait(), BOUND)
    assert not upstream.release.is_set()


# -- memory ---------------------------------------------------------------------------------------


def live_connections() -> int:
    """Client and upstream connection objects still in memory (the cycle collector off: only
    reference counting frees anything)."""
    kinds = (ClientConnection, UpstreamConnection)
    return sum(1 for thing in gc.get_objects() if type(thing) in kinds)


async def test_closed_connections_are_freed_without_the_cycle_collector(
    start_gateway_for: StartGateway, upstream: Upstream
) -> None:
    """A connection held only by a reference cycle (a bound method of its own, its parser's
    callbacks) would stay in memory, its buffers and a token among them, until the cycle
    collector runs, which an idle gateway may not do for a long time. Closed connections, the
    client's and (with no idle ones kept) the upstream's, are freed as they close, streams
    included."""
    gw = await start_gateway_for(route(upstream, max_idle_connections=0))
    upstream.release.set()  # the GET stream below ends at once
    gc.collect()
    gc.disable()
    try:
        before = live_connections()
        for rpc_id in range(3):
            async with gw.raw_connection() as (reader, writer):
                writer.write(post(gw, rpc(rpc_id)))
                assert (await read_answer(reader)).status == 200
                get = (
                    post(gw, b"")
                    .replace(b"POST ", b"GET ", 1)
                    .replace(b"Content-Length: 0\r\n", b"")
                )
                writer.write(get)
                assert (await read_answer(reader)).status == 200
        async with asyncio.timeout(BOUND):
            while live_connections() > before:
                await asyncio.sleep(0.05)
    finally:
        gc.enable()


# -- the aiohttp data plane -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(lambda gw: post(gw, rpc(9)), id="mcp-post"),
        pytest.param(
            lambda gw: post(gw, rpc(9)).replace(b"Host: 127.0.0.1:%d\r\n" % gw.running.port, b""),
            id="no-host",
        ),
    ],
)
async def test_both_data_planes_answer_alike(
    start_gateway_for: StartGateway, upstream: Upstream, raw: Any
) -> None:
    """A light check (tests/security has the differential): status, body and content type."""
    answers = []
    for plane in ("lean", "aiohttp"):
        gw = await start_gateway_for(route(upstream), server={"data_plane": plane})
        async with gw.raw_connection() as (reader, writer):
            writer.write(raw(gw))
            answers.append(await read_answer(reader))
    lean, aiohttp = answers
    assert (lean.status, lean.body) == (aiohttp.status, aiohttp.body)
    assert lean.headers.get("content-type") == aiohttp.headers.get("content-type")
