"""One keep-alive HTTP/1.1 connection to an upstream, parsed with httptools.

The response body is handed to the reader chunk by chunk as it arrives (never buffered whole), with
backpressure: reading from the upstream socket pauses while too much is waiting for a slow client.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from gateway.errors import UpstreamError, UpstreamStreamError, UpstreamTimeoutError

HIGH_WATER = 256 * 1024
_FRAMING_HEADERS = (b"content-length", b"transfer-encoding")


class UpstreamDisconnectedError(UpstreamError):
    """The upstream closed the connection before sending response headers."""

    kind = "closed"


class UpstreamProtocolError(UpstreamError):
    """The upstream sent something that is not valid HTTP/1.1."""

    kind = "protocol"


class UpstreamResponse:
    """A response being received: status and headers first, then body chunks via `read()`."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_error",
        "_headers_ready",
        "_timer",
        "_until_close",
        "_waiter",
        "complete",
        "keep_alive",
        "raw_headers",
        "received_any",
        "status",
    )

    def __init__(self, conn: UpstreamConnection) -> None:
        self._conn = conn
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self._chunks: list[bytes] = []  # a deque would hold 760 bytes for every open stream
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._headers_ready: asyncio.Future[None] = conn.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._until_close = False

    async def wait_headers(self, within: float) -> None:
        """Wait for the status line and headers, at most `within` seconds (then 504)."""
        if not self._headers_ready.done():
            self._timer = self._conn.loop.call_later(within, self._on_timeout)
        try:
            await self._headers_ready
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def forget_headers(self) -> None:
        """Let the raw header lines go once they have been read (a stream may be long)."""
        self.raw_headers = []

    def take_body(self) -> bytes | None:
        """The whole body if it has already arrived complete, else None (stream it instead)."""
        if not self.complete or self._error is not None:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    async def read(self) -> bytes:
        """All body bytes that arrived since the last read, waiting for some if none did; b""
        at the end. Raises UpstreamStreamError. Everything queued is taken at once, so a relay
        writes what one socket read brought (many SSE events in chunks of their own) in one
        write, not one write per chunk."""
        while not self._chunks:
            if self._error is not None:
                raise UpstreamStreamError("upstream stream failed") from self._error
            if self.complete:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        self._conn.resume_reading()  # the queue is empty: read on if reading was paused
        return chunk

    # -- fed by the connection -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_headers(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self._until_close = not any(
            name.lower() in _FRAMING_HEADERS for name, _ in self.raw_headers
        )
        if not self._headers_ready.done():
            self._headers_ready.set_result(None)

    def _on_body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def _on_complete(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.complete or self._error is not None:
            return
        if not self._headers_ready.done():
            self._headers_ready.set_exception(error)
            self._headers_ready.exception()  # mark retrieved: the caller may be gone
        self._error = error
        self._wake()

    def _on_eof(self) -> None:
        if self._headers_ready.done() and self._until_close:
            self._on_complete()  # a body delimited by the connection closing (RFC 9112 6.3)
        else:
            self._fail(UpstreamDisconnectedError("upstream closed the connection"))

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(UpstreamTimeoutError("no response headers in time"))
        self._conn.close()


class UpstreamConnection(asyncio.Protocol):
    """An asyncio protocol for one upstream connection, serving one exchange at a time."""

    __slots__ = ("_parser", "_paused", "_response", "closed", "last_used", "loop", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_used = 0.0
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        """Holds this protocol for its callbacks: let go when the connection is lost, so a
        closed connection is freed by reference counting (not left for the cycle collector,
        which an idle gateway may not run for a long time)."""
        self._response: UpstreamResponse | None = None
        self._paused = False

    def send(self, data: bytes) -> UpstreamResponse:
        """Write one whole request and return the response it will produce."""
        assert self.transport is not None
        assert self._response is None
        response = UpstreamResponse(self)
        self._response = response
        self.transport.write(data)
        return response

    def finish(self) -> bool:
        """Detach the current exchange; True if the connection can serve another one."""
        response, self._response = self._response, None
        reusable = (
            response is not None
            and response.complete
            and response._error is None
            and response.keep_alive
            and not self.closed
        )
        if not reusable:
            self.close()
        self.resume_reading()
        return reusable

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or response.complete:
            # Bytes nobody asked for (on an idle connection, or after a complete response):
            # the connection's framing can no longer be trusted, so it is not reused.
            self.close()
            return
        parser = self._parser
        if parser is None:  # lost already
            return
        response.received_any = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            response._fail(UpstreamProtocolError("invalid HTTP from upstream"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None
        if self._response is not None and not self._response.complete:
            self._response._on_eof()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            self._response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        if self._response is not None and parser is not None:
            # should_keep_alive() is only meaningful before the message completes.
            self._response._on_headers(parser.get_status_code(), parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._on_body(body)

    def on_message_complete(self) -> None:
        if self._response is not None:
            self._response._on_complete()
