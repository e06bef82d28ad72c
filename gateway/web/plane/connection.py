"""One client connection on the main listener: the lean plane's until a request is not for it.

Each request's head is split off the bytes received (up to the first CRLF CRLF) and given to
`parse_head`. A head the lean plane serves is answered by its lane (`gateway.web.plane.lane`),
its `Content-Length` body fed to it as it arrives; the next request is not looked at before the
answer is written (pipelined bytes wait, and reading pauses if they pile up). Any other request,
and everything after it on that connection, goes to aiohttp: its `RequestHandler` is attached
to the transport and given the bytes from the start of that request, exactly as received.

Timeouts, as aiohttp's listener had them: an idle connection closes after `keepalive_timeout`;
a request's head must arrive within `header_timeout` of its first byte, however it trickles
(slow loris). On a connection handed to aiohttp, its handler calls `request_started` and
`request_ended` (the edge middleware) and aiohttp keeps its own keep-alive timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.observability.logging import get_logger
from gateway.web.memory import OpenConnections
from gateway.web.plane.body import BodyReader
from gateway.web.plane.head import parse_head
from gateway.web.plane.lanes import MAX_REQUEST_LINE, After, Plane

log = get_logger("gateway.listener")

BODY_HIGH_WATER = 1 << 18
"""Bytes of a body received and not yet read by the body step before reading pauses."""
LINGER_TIMEOUT = 10.0
"""Seconds the rest of a body answered early may take to arrive (aiohttp's `lingering_time`)."""
PENDING_LIMIT = 1 << 20
"""Bytes of pipelined requests held while one is answered before reading pauses."""


class ClientConnection(asyncio.Protocol):
    """One client connection (see the module doc)."""

    __slots__ = (
        "_body",
        "_buffer",
        "_connections",
        "_deadline",
        "_drain",
        "_forward",
        "_header_timeout",
        "_inner",
        "_keep_after_body",
        "_keepalive_timeout",
        "_line_ok",
        "_loop",
        "_make_handler",
        "_paused_reading",
        "_paused_writing",
        "_plane",
        "_scanned",
        "_served",
        "_timer",
        "_transport",
        "_watching",
        "closing",
        "peer",
        "task",
    )

    def __init__(
        self,
        plane: Plane | None,
        make_handler: Callable[[], asyncio.Protocol],
        timeouts: tuple[float, float],
        loop: asyncio.AbstractEventLoop,
        connections: OpenConnections[ClientConnection],
    ) -> None:
        self._plane = plane
        self._make_handler = make_handler
        self._header_timeout, self._keepalive_timeout = timeouts
        self._loop = loop
        self._connections = connections
        self._inner: asyncio.Protocol | None = None
        """aiohttp's handler, once the connection is handed to it."""
        self._forward: Callable[[bytes], None] = self._receive
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._scanned = 0
        """Bytes of the head being received already searched and checked (see `_incomplete`)."""
        self._line_ok = False
        """The head being received has a complete request line the lean plane may serve."""
        self._keep_after_body = False
        """Once the rest of a body answered early has been dropped: go on (else close)."""
        self._body: BodyReader | None = None
        self.task: asyncio.Task[None] | None = None
        """The request being answered."""
        self._watching = True
        """Idle: the next byte starts a request and its header deadline."""
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused_reading = False
        self._paused_writing = False
        self._drain: asyncio.Future[None] | None = None
        self.closing = False
        """Close once the request being answered is (the listener is stopping)."""
        self.peer: str | None = None
        self._served = 0

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    @property
    def writing_paused(self) -> bool:
        """The client's buffers are full: a write should wait (`drain`)."""
        return self._paused_writing

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self._connections.add(self)
        self._set_deadline(self._keepalive_timeout)  # closed if it never sends a byte
        if self._plane is None:
            self._hand_off()

    def data_received(self, data: bytes) -> None:
        # The hot path: one attribute check, then aiohttp's handler or `_receive`.
        if self._watching:
            self._watching = False
            self._set_deadline(self._header_timeout)
        self._forward(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None  # the transport closes; a request being answered is cancelled

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._forward = _ignore  # was a bound method of this object: no cycle outlives it
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is not None:
            self._inner.connection_lost(exc)
            return
        if self.task is not None:
            self.task.cancel()
        if self._body is not None:
            self._body.lost()
            self._body = None  # it holds `_body_read`, a bound method of this object
        self._wake_writer()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()
        self._paused_writing = True

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
        self._paused_writing = False
        self._wake_writer()

    # -- the header deadline, for aiohttp's requests (see `gateway.web.listener`) ---------------

    def request_started(self) -> None:
        """The request's head has all arrived and its handler runs: no deadline now."""
        self._watching = False
        self._deadline = None

    def request_ended(self) -> None:
        """The handler is done: the connection is idle until the next byte."""
        self._watching = True

    # -- writing, for the lean plane's responder ------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            raise ConnectionResetError("client connection closed")
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait while the client's buffers are full (ConnectionResetError if it went away)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client connection closed")
        if not self._paused_writing:
            return
        self._drain = self._loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None
        if transport.is_closing():
            raise ConnectionResetError("client connection closed")

    def streaming(self) -> None:
        """The answer streams, maybe for hours: the timer armed for the head's deadline (met
        long ago, `request_started`) goes now rather than when it fires; `_idle` arms the
        next one when the stream ends."""
        if self._deadline is None and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Close now if idle, else once the request being answered is."""
        self.closing = True
        if self.task is None and self._inner is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- the lean plane -------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        body = self._body
        if body is not None:
            data = body.feed(data)
            if body.is_eof():
                self._body = None
                if self.task is None:  # the rest of a body answered early: all dropped now
                    self._after_dropped_body(data)
                    return
            elif body.buffered > BODY_HIGH_WATER and not self._paused_reading:
                self._pause_reading()  # until the body step reads what came (steps may wait)
            if not data:
                return
        self._buffer += data
        if self.task is not None:  # pipelined: looked at once the answer is written
            if len(self._buffer) > PENDING_LIMIT and not self._paused_reading:
                self._pause_reading()
            return
        self._next_request()

    def _next_request(self) -> None:
        plane = self._plane
        assert plane is not None
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            if not self._incomplete(plane, buffer):
                self._hand_off()  # aiohttp answers what is not HTTP at once, as it always has
            return
        end += 4
        head = parse_head(bytes(buffer[:end]), plane.lanes, plane.max_field)
        if head is None:
            self._hand_off()
            return
        self.request_started()
        self._served += 1
        self._scanned, self._line_ok = 0, False
        body = BodyReader(head.content_length)
        self._buffer = bytearray(body.feed(bytes(buffer[end:])))
        if not body.is_eof():
            self._body = body
            body.on_read = self._body_read
        self.task = self._loop.create_task(head.lane.serve(self, head, body))

    def answered(self, after: After) -> None:
        """The lane is done with its request (answered, failed or cancelled)."""
        self.task = None
        transport = self._transport
        assert transport is not None
        if after is After.CLOSE_NOW or self.closing or transport.is_closing():
            transport.close()  # what was written is sent first
            return
        if self._body is not None:
            # Answered before its body came (a refusal): the rest is read and dropped, never
            # parsed as a request, within LINGER_TIMEOUT; then the connection goes on or
            # closes, as aiohttp's lingering does.
            self._body.drop()
            self._keep_after_body = after is After.KEEP
            self._resume_reading()
            self._set_deadline(LINGER_TIMEOUT)
            return
        if after is After.CLOSE:
            transport.close()
            return
        self._idle()

    def _after_dropped_body(self, rest: bytes) -> None:
        """The rest of a body answered early has all been dropped; `rest` came after it."""
        assert self._transport is not None
        if not self._keep_after_body or self.closing:
            self._transport.close()
            return
        self._buffer += rest
        self._idle()

    def _idle(self) -> None:
        """An answer is written: on to the next request, begun or still to come."""
        self._watching = True
        self._resume_reading()
        if self._buffer:
            self.data_received(b"")  # the next request has begun: its deadline runs
        else:
            self._set_deadline(self._keepalive_timeout)

    def _resume_reading(self) -> None:
        if self._paused_reading and self._transport is not None:
            self._paused_reading = False
            self._transport.resume_reading()

    def _incomplete(self, plane: Plane, buffer: bytearray) -> bool:
        """Whether a head still incomplete in `buffer` may yet be one the lean plane serves
        (`Plane.may_start`). Only what arrived since the last call is checked, so a head
        trickled in small pieces costs time linear in its size."""
        size = len(buffer)
        if size > plane.head_limit:
            return False
        scanned = self._scanned
        if not self._line_ok:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                return size <= MAX_REQUEST_LINE and plane.may_start(bytes(buffer))
            if not plane.may_start(bytes(buffer[: line_end + 2])):
                return False
            self._line_ok, scanned = True, line_end + 2
        # No bare CR or LF in the new bytes (a CR left last time at the end may meet its LF).
        start = scanned - 1 if scanned and buffer[scanned - 1] == 13 else scanned
        new = bytes(buffer[start:])
        crlfs = new.count(b"\r\n")
        if new.count(b"\n") != crlfs or new.count(b"\r") - new.endswith(b"\r") != crlfs:
            return False
        self._scanned = size
        return True

    def _hand_off(self) -> None:
        """From here on, aiohttp serves the connection, from the request that began."""
        transport = self._transport
        assert transport is not None
        inner = self._inner = self._make_handler()
        self._forward = inner.data_received
        inner.connection_made(transport)
        if self._served and hasattr(inner, "_request_count"):
            # aiohttp logs a bad method on a connection's first request at debug (a port scan),
            # on a later one as a client error: the requests served here count as earlier ones.
            inner._request_count = self._served
        if self._paused_writing:
            inner.pause_writing()
        if self._paused_reading:
            self._paused_reading = False
            transport.resume_reading()
        buffered, self._buffer = bytes(self._buffer), bytearray()
        if buffered:
            inner.data_received(buffered)

    def _pause_reading(self) -> None:
        assert self._transport is not None
        self._paused_reading = True
        self._transport.pause_reading()

    def _body_read(self) -> None:
        """The body step took what was buffered: read on, if the body is still coming."""
        if self._paused_reading and self._body is not None and self._transport is not None:
            self._paused_reading = False
            self._transport.resume_reading()

    def _wake_writer(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- deadlines ------------------------------------------------------------------------------

    def _set_deadline(self, seconds: float) -> None:
        deadline = self._deadline = self._loop.time() + seconds
        # One timer per connection at a time: one set for a later deadline is moved when it
        # fires (as aiohttp does for keep-alive), not cancelled and re-created.
        timer = self._timer
        if timer is not None and timer.when() > deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._transport is None:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._expire)
            return
        self._deadline = None
        log.debug("header_deadline_missed" if not self._watching else "idle_timeout",
                  peer=self.peer)  # fmt: skip
        self._transport.close()


def _ignore(data: bytes) -> None:
    """Where bytes go once a connection is lost (none arrive)."""
