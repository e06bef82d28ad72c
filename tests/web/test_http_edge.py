"""The header deadline (slow loris), over raw client sockets to a real gateway.

A slow client is cut off `server.header_timeout` seconds after the first byte of its request;
other clients, and requests whose headers have arrived, are unaffected. Timing is only ever
waited on (a slow-loris connection's end serves as the clock), never asserted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Gateway, StartGateway
from tests.support.http_upstream import RecordingUpstream, recording_upstream

HEADER_TIMEOUT = 0.5
BOUND = 10  # seconds: an outcome that takes longer is a failure, not a hang
RPC = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo"}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Upstream:
    recorded: RecordingUpstream
    release: asyncio.Event


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """Answers at once, except requests with params {"name": "wait"}: those wait for `release`."""
    release = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["params"]["name"] == "wait":
            await release.wait()
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {}})

    async with recording_upstream(answer) as recorded:
        yield Upstream(recorded, release)
        release.set()


@pytest.fixture
async def gw(start_gateway_for: StartGateway, upstream: Upstream) -> Gateway:
    return await start_gateway_for(
        {"name": "up", "route": "/up/mcp", "url": upstream.recorded.url},
        server={"header_timeout": HEADER_TIMEOUT},
    )


def request_head(gw: Gateway, body: bytes) -> bytes:
    return (
        f"POST /up/mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.running.port}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, await reader.readexactly(length)


async def stalled_client_cut_off(gw: Gateway) -> bytes:
    """Open a connection, send part of a request line and stall; return what it read at EOF.

    It ends `HEADER_TIMEOUT` after its first byte (and fails the test if not within BOUND):
    waiting for it is how a test lets that much time pass without sleeping.
    """
    async with gw.raw_connection() as (reader, writer):
        writer.write(b"POST /up/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Stall: ")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), BOUND)


async def test_stalled_headers_are_cut_off_while_others_are_served(
    gw: Gateway, upstream: Upstream
) -> None:
    async with gw.raw_connection() as (reader, writer):
        writer.write(f"GET /up/mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.running.port}\r\nX-".encode())
        await writer.drain()
        eof = asyncio.ensure_future(asyncio.wait_for(reader.read(), BOUND))
        served = []
        async with aiohttp.ClientSession() as http:
            for n in range(3):
                async with http.post(
                    gw.url("/up/mcp"), json={**RPC, "id": n}, headers=ACCEPT
                ) as resp:
                    served.append((resp.status, (await resp.json())["id"]))
        assert await eof == b""  # closed, without a response
    assert served == [(200, 0), (200, 1), (200, 2)]
    assert [r.method for r in upstream.recorded.requests] == ["POST"] * 3


async def test_trickled_headers_are_cut_off_at_the_deadline(
    gw: Gateway, upstream: Upstream
) -> None:
    """A byte at a time, each well within the deadline: the deadline counts from the first."""
    async with gw.raw_connection() as (reader, writer):
        writer.write(f"POST /up/mcp HTTP/1.1\r\nHost: 127.0.0.1:{gw.running.port}\r\n".encode())
        writer.write(b"X-Pad: ")
        eof = asyncio.ensure_future(reader.read())
        try:
            async with asyncio.timeout(BOUND):
                while not eof.done():
                    writer.write(b"a")
                    # Paces the trickle and notices the close as soon as it happens.
                    await asyncio.wait([eof], timeout=HEADER_TIMEOUT / 10)
        finally:
            eof.cancel()
        assert eof.result() == b""
    assert upstream.recorded.requests == []


async def test_a_request_in_progress_outlives_the_header_deadline(
    gw: Gateway, upstream: Upstream
) -> None:
    """Neither a body sent slowly nor a slow upstream answer is cut off, and the connection
    stays usable after idling longer than the deadline."""
    slow = json.dumps({**RPC, "params": {"name": "wait"}}).encode()
    quick = json.dumps({**RPC, "id": 8}).encode()
    async with gw.raw_connection() as (reader, writer):
        writer.write(request_head(gw, slow) + slow[:10])
        await writer.drain()
        assert await stalled_client_cut_off(gw) == b""  # the deadline has passed meanwhile
        writer.write(slow[10:])
        await writer.drain()
        assert await stalled_client_cut_off(gw) == b""  # and again, with the upstream waiting
        upstream.release.set()
        status, body = await asyncio.wait_for(read_response(reader), BOUND)
        assert (status, json.loads(body)["id"]) == (200, 7)

        assert await stalled_client_cut_off(gw) == b""  # idle for longer than the deadline
        writer.write(request_head(gw, quick) + quick)
        await writer.drain()
        status, body = await asyncio.wait_for(read_response(reader), BOUND)
        assert (status, json.loads(body)["id"]) == (200, 8)
    assert len(upstream.recorded.requests) == 2


async def test_each_request_on_a_connection_gets_its_own_deadline(
    gw: Gateway, upstream: Upstream
) -> None:
    """After a complete request, a keep-alive connection that stalls in the next one's headers
    is cut off too (the first request's answer arrives intact)."""
    body = json.dumps(RPC).encode()
    async with gw.raw_connection() as (reader, writer):
        writer.write(request_head(gw, body) + body)
        await writer.drain()
        status, _ = await asyncio.wait_for(read_response(reader), BOUND)
        assert status == 200
        writer.write(b"POST /up/mcp HTTP/1.1\r\nHost: ")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), BOUND) == b""
    assert len(upstream.recorded.requests) == 1


async def test_pipelined_requests_are_all_answered(gw: Gateway, upstream: Upstream) -> None:
    bodies = [json.dumps({**RPC, "id": n}).encode() for n in range(3)]
    async with gw.raw_connection() as (reader, writer):
        writer.write(b"".join(request_head(gw, body) + body for body in bodies))
        await writer.drain()
        answers = [await asyncio.wait_for(read_response(reader), BOUND) for _ in bodies]
    assert [(status, json.loads(body)["id"]) for status, body in answers] == [
        (200, 0),
        (200, 1),
        (200, 2),
    ]


@pytest.mark.parametrize("plane", ["lean", "aiohttp"])
async def test_a_connection_that_never_sends_a_byte_is_closed_after_the_keepalive_timeout(
    start_gateway_for: StartGateway, upstream: Upstream, plane: str
) -> None:
    """A client that connects and says nothing holds a connection only `keepalive_timeout`
    seconds, whichever plane serves the port (aiohttp alone would keep it open for ever)."""
    gw = await start_gateway_for(
        {"name": "up", "route": "/up/mcp", "url": upstream.recorded.url},
        server={"keepalive_timeout": HEADER_TIMEOUT, "data_plane": plane},
    )
    async with gw.raw_connection() as (silent, _):
        assert await asyncio.wait_for(silent.read(), BOUND) == b""
    async with gw.raw_connection() as (reader, writer):
        body = json.dumps(RPC).encode()
        writer.write(request_head(gw, body) + body)  # a connection that speaks is served
        assert (await read_response(reader))[0] == 200
