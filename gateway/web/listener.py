"""The main listener: a TCP site whose connections must send each request's headers in time.

aiohttp's own `keepalive_timeout` closes a connection on which no complete request arrives,
but its timer is not reset by partial data, so it cannot bound a client that trickles a
request's header section byte by byte (slow loris). Here every connection's protocol is
wrapped in `DeadlineProtocol`: the first byte that arrives while the connection is idle starts
a `header_timeout` deadline, and the edge middleware ends it when the request's handler starts
(`connection_deadline(request)`). A connection that misses its deadline is closed; no other
connection is affected.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from yarl import URL

from gateway.observability.logging import get_logger

log = get_logger("gateway.listener")

BACKLOG = 128  # as web.TCPSite


class DeadlineProtocol(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol, watching for a request's first byte.

    The deadline is total, from the first byte of a request to the start of its handler, so
    trickling bytes does not extend it. Bytes of the next request that arrive while a handler
    runs (pipelining) are not watched; aiohttp's keep-alive timer still bounds that case. Bytes
    of a body its handler left unread arrive after it ended, so they start a deadline too.
    """

    __slots__ = (
        "_deadline",
        "_forward",
        "_inner",
        "_loop",
        "_timeout",
        "_timer",
        "_transport",
        "_watching",
    )

    def __init__(
        self, inner: asyncio.Protocol, timeout: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._inner = inner
        self._forward = inner.data_received
        self._timeout = timeout
        self._loop = loop
        self._watching = True
        """Idle: the next byte starts a request and its deadline."""
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        # The hot path: one attribute check per chunk.
        if self._watching:
            self._start_deadline()
        self._forward(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def request_started(self) -> None:
        """The request's headers have all arrived and its handler runs: no deadline now."""
        self._watching = False
        self._deadline = None

    def request_ended(self) -> None:
        """The handler is done: the connection is idle until the next byte."""
        self._watching = True

    def _start_deadline(self) -> None:
        self._watching = False
        self._deadline = self._loop.time() + self._timeout
        # One timer per connection at a time: a timer left from an earlier request is moved
        # when it fires (as aiohttp does for keep-alive), not cancelled and re-created.
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._transport is None:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._expire)
            return
        self._deadline = None
        peer = self._transport.get_extra_info("peername")
        log.debug("header_deadline_missed", peer=peer[0] if peer else None)
        self._transport.close()


def connection_deadline(request: web.BaseRequest) -> DeadlineProtocol | None:
    """The deadline keeper of the request's connection, when it came through a `DeadlineSite`."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, DeadlineProtocol) else None


class DeadlineSite(web.BaseSite):
    """A TCP listener like `web.TCPSite`, giving each request `header_timeout` seconds from
    its first byte to deliver its complete header section."""

    __slots__ = ("_handler_factory", "_header_timeout", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, header_timeout: float
    ) -> None:
        super().__init__(runner)
        assert runner.server is not None  # checked by BaseSite
        self._handler_factory = runner.server
        self._host = host
        self._port = port
        self._header_timeout = header_timeout

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        handler_factory, timeout = self._handler_factory, self._header_timeout

        def protocol() -> asyncio.Protocol:
            return DeadlineProtocol(handler_factory(), timeout, loop)

        self._server = await loop.create_server(protocol, self._host, self._port, backlog=BACKLOG)
