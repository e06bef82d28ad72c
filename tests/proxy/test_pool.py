"""The upstream connection pool against a real socket server that drops reused connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.proxy.connection import UpstreamDisconnectedError
from gateway.proxy.pool import UpstreamPool

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class DropsSecondRequest(asyncio.Protocol):
    """Answers the first request on a connection, then closes it on the next one unanswered:
    what an upstream does when its keep-alive timer fires just as a request arrives."""

    seen: list[bytes]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.served = 0

    def data_received(self, data: bytes) -> None:
        self.seen.append(data.split(b" ", 1)[0])
        if self.served == 0:
            self.served += 1
            self.transport.write(OK)
        else:
            self.transport.close()


@pytest.fixture
async def flaky_upstream() -> AsyncIterator[tuple[UpstreamPool, list[bytes]]]:
    seen: list[bytes] = []
    loop = asyncio.get_running_loop()

    def factory() -> DropsSecondRequest:
        protocol = DropsSecondRequest()
        protocol.seen = seen
        return protocol

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(
        f"http://127.0.0.1:{port}/mcp", connect_timeout=5, idle_timeout=60, max_idle=4
    )
    yield pool, seen
    pool.close()
    server.close()
    await server.wait_closed()


async def exchange(pool: UpstreamPool, method: str) -> int:
    head = f"{method} /mcp HTTP/1.1\r\nHost: up\r\nContent-Length: 2\r\n\r\n".encode()
    conn, response = await pool.request(head, b"{}", 5, idempotent=method != "POST")
    assert response.take_body() == b"{}"
    pool.release(conn)
    return response.status


async def test_idempotent_request_is_retried_once_on_a_dropped_reused_connection(
    flaky_upstream: tuple[UpstreamPool, list[bytes]],
) -> None:
    pool, seen = flaky_upstream
    assert await exchange(pool, "GET") == 200
    assert await exchange(pool, "GET") == 200  # dropped on the reused connection, then retried
    assert seen == [b"GET", b"GET", b"GET"]


async def test_post_is_never_sent_twice(flaky_upstream: tuple[UpstreamPool, list[bytes]]) -> None:
    pool, seen = flaky_upstream
    assert await exchange(pool, "POST") == 200
    with pytest.raises(UpstreamDisconnectedError):
        await exchange(pool, "POST")
    assert seen == [b"POST", b"POST"]


EVENTS = [b'data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"n":%d}}\n\n' % i
          for i in range(100)]  # fmt: skip


class StreamsEvents(asyncio.Protocol):
    """Answers with an SSE body of 100 events, each in an HTTP chunk of its own, all in one
    write: what an MCP server streaming progress sends when the relay is slower than it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in EVENTS)
        self.transport.write(head + chunks + b"0\r\n\r\n")


async def test_a_read_takes_every_chunk_that_arrived_so_a_relay_writes_them_at_once() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StreamsEvents, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(
        f"http://127.0.0.1:{port}/mcp", connect_timeout=5, idle_timeout=60, max_idle=4
    )
    try:
        head = b"POST /mcp HTTP/1.1\r\nHost: up\r\nContent-Length: 2\r\n\r\n"
        conn, response = await pool.request(head, b"{}", 5, idempotent=False)
        reads = []
        while chunk := await response.read():
            reads.append(chunk)
        assert b"".join(reads) == b"".join(EVENTS)
        assert len(reads) < len(EVENTS) / 2  # one read per chunk would be 100
        pool.release(conn)
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
