"""What the lean plane serves: its lanes (routes), and whether bytes may begin a request for
one; and what becomes of a connection after an answer."""

from __future__ import annotations

import enum
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gateway.web.plane.body import BodyReader
from gateway.web.plane.head import LEAN_METHODS, MAX_LINE, Head

if TYPE_CHECKING:  # a lane is given the connection it answers on
    from gateway.web.plane.connection import ClientConnection

_LEAN_METHODS = tuple(method.encode("ascii") for method in LEAN_METHODS)
MAX_REQUEST_LINE = MAX_LINE + len("DELETE  HTTP/1.1\r")
"""The longest request line the lean plane serves (aiohttp's limit on the target, plus the rest)."""


class After(enum.Enum):
    """What becomes of a connection once a request on it is answered."""

    KEEP = "keep"
    """It carries the next request (after the rest of an unread body, read and dropped)."""
    CLOSE = "close"
    """It closes (after the rest of an unread body, so the answer is not lost to a reset)."""
    CLOSE_NOW = "close_now"
    """It closes at once (a client that stopped sending its body, or is gone)."""


class Lane(Protocol):
    """A route the lean plane serves (`gateway.web.plane.lane.McpLane`)."""

    def serve(
        self, conn: ClientConnection, head: Head[Lane], body: BodyReader
    ) -> Coroutine[Any, Any, None]:
        """Answer the request, then call `conn.answered` (also when cancelled)."""
        ...


class Plane:
    """What the lean plane serves: its lanes by exact raw path, and the header size limit."""

    __slots__ = ("head_limit", "lanes", "max_field")

    def __init__(self, lanes: Mapping[bytes, Lane], max_field: int) -> None:
        self.lanes = lanes
        self.max_field = max_field
        self.head_limit = 16 * max_field
        """Bytes without a complete head after which the request is left to aiohttp."""

    def may_start(self, data: bytes) -> bool:
        """Whether `data` (no complete head yet) can still begin a request served here: its
        request line so far is one of a lean method and a lane's path, with no bare CR or LF
        (aiohttp refuses those at once; waiting for a CRLF CRLF that may never come would not)."""
        crlfs = data.count(b"\r\n")
        if data.count(b"\n") != crlfs or data.count(b"\r") - data.endswith(b"\r") != crlfs:
            return False
        line, crlf, _ = data.partition(b"\r\n")
        if not crlf and line.endswith(b"\r"):
            line = line[:-1]  # a CR whose LF is still on its way
        method, space, rest = line.partition(b" ")
        if not space:
            return any(lean.startswith(method) for lean in _LEAN_METHODS)
        if method not in _LEAN_METHODS:
            return False
        target, space, version = rest.partition(b" ")
        if not space:
            path = target.partition(b"?")[0]
            return any(lane.startswith(path) for lane in self.lanes) if not crlf else False
        return target.partition(b"?")[0] in self.lanes and (
            version == b"HTTP/1.1" if crlf else b"HTTP/1.1".startswith(version)
        )
