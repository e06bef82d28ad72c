"""A minimal uvloop + httptools relay with a JWT cache: the floor for plumbing in Python.

Run: `python bench/lean_relay.py --port 9011 --issuer http://127.0.0.1:J
--route /echo/mcp=http://127.0.0.1:P/mcp [--route ...]` (the naive proxy's arguments).

No coroutines and no tasks: protocol callbacks only. A client request is parsed with llhttp,
its token checked against the naive proxy's cache (`naive_proxy.token_audience`), and its body
written to an idle keep-alive upstream connection in one write; the upstream's response is
parsed with llhttp and written back in one write. No policy, no MCP inspection, no access line,
no streaming, no limits, no timeouts: what the gateway's plumbing would cost if it cost nothing
but parsing and relaying. The benchmark's "relay" row (bench/README.md).
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse

import httptools
import uvloop
from naive_proxy import Settings, settings_from_arguments, token_audience

UNAUTHORIZED = b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error="invalid_token"\r\nContent-Length: 0\r\n\r\n'  # noqa: E501
FORWARDED = {b"content-type", b"accept", b"mcp-protocol-version", b"mcp-method", b"mcp-name"}


class Upstream(asyncio.Protocol):
    """One keep-alive connection to an upstream; answers one client request at a time."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.content_type = b"application/json"
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        body = b"".join(self.body)
        self.body.clear()
        status = self.parser.get_status_code()
        self.pool.append(self)
        if client is not None:
            client.answer(status, self.content_type, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None:
            self.client.answer(502, b"text/plain", b"")


class Client(asyncio.Protocol):
    """One client connection: parse a request, check its token, relay it."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.authorization = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"authorization":
            self.authorization = value
        elif lowered in FORWARDED:
            self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, self.url = self.url.decode("ascii"), b""
        headers, self.headers = self.headers, []
        body = b"".join(self.body)
        self.body.clear()
        authorization, self.authorization = self.authorization, b""
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        settings = self.relay.settings
        verified = token_audience(settings, token) if scheme.lower() == "bearer" else None
        target = self.relay.routes.get(url)
        if (
            target is None
            or verified is None
            or verified[0] != settings.public_url + url
            or verified[1] <= time.time()
        ):
            assert self.transport is not None
            self.transport.write(UNAUTHORIZED)
            return
        self.relay.send(self, target, headers, body)

    def answer(self, status: int, content_type: bytes, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
            status,
            content_type,
            len(body),
        )
        self.transport.write(head + body)


class Relay:
    """The routes, the token cache, and one pool of upstream connections per upstream."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.routes: dict[str, tuple[str, int, bytes]] = {}
        for path, url in settings.routes.items():
            parts = urllib.parse.urlsplit(url)
            assert parts.hostname is not None
            assert parts.port is not None
            self.routes[path] = (parts.hostname, parts.port, parts.path.encode("ascii"))
        self.pools: dict[tuple[str, int], list[Upstream]] = {}

    def send(
        self, client: Client, target: tuple[str, int, bytes], headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:  # fmt: skip
        host, port, path = target
        head = b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n" % (
            path,
            host.encode("ascii"),
            port,
            len(body),
        )
        request = head + b"".join(b"%s: %s\r\n" % pair for pair in headers) + b"\r\n" + body
        pool = self.pools.setdefault((host, port), [])
        if pool:
            upstream = pool.pop()
            upstream.client = client
            assert upstream.transport is not None
            upstream.transport.write(request)
            return
        self.loop.create_task(self._connect(pool, host, port, client, request))

    async def _connect(
        self, pool: list[Upstream], host: str, port: int, client: Client, request: bytes
    ) -> None:
        _, upstream = await self.loop.create_connection(lambda: Upstream(pool), host, port)
        upstream.client = client
        assert upstream.transport is not None
        upstream.transport.write(request)


def main() -> None:
    settings, port = settings_from_arguments(__doc__)
    loop = uvloop.new_event_loop()
    relay = Relay(settings, loop)
    server = loop.run_until_complete(loop.create_server(lambda: Client(relay), "127.0.0.1", port))
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
