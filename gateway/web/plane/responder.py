"""The lean plane's `Responder`: response heads written by the gateway, one write per answer.

Every head is built here from the status and a `CIMultiDict` the gateway filled (the upstream's
headers after `upstream_response_head`, and the gateway's own), with what aiohttp would add:
`Date`, `Server`, `Content-Length` or chunked framing, and `Connection: close` when the
connection ends after it. No name or value holding CR, LF or NUL is ever written.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from gateway.web.edge import response_headers
from gateway.web.exchange import RequestContext

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_NO_BODY = frozenset({204, 304})


class Connection(Protocol):
    """What a responder needs of its client connection."""

    @property
    def writing_paused(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def streaming(self) -> None: ...


class _Clock:
    """`Date` values (RFC 9110 section 6.6.1), formatted once a second."""

    second = 0
    value = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True)
        return cls.value


def response_head(status: int, headers: CIMultiDict[str], *, close: bool) -> bytes:
    """The status line and header section; ValueError on a name or value that could end a line."""
    headers.setdefault("Date", _Clock.now())
    headers.setdefault("Server", SERVER_SOFTWARE)
    if close:
        headers["Connection"] = "close"
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    count = len(headers)  # one CRLF a line, and no other CR, LF or NUL
    if lines.count("\n") != count or lines.count("\r") != count or "\x00" in lines:
        raise ValueError("a response header holds CR, LF or NUL")
    return f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n{lines}\r\n".encode()


class LeanResponder:
    """Answers one request on a lean connection."""

    __slots__ = ("_conn", "_context", "abandon", "close", "started", "status")

    def __init__(self, conn: Connection, context: RequestContext, *, close: bool) -> None:
        self._conn = conn
        self._context = context
        self.close = close
        """The connection ends after this answer."""
        self.abandon = False
        """...at once, without reading the rest of an unread body first."""
        self.started = False
        self.status = 500

    def answer(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        """A whole response in one write, with the headers the edge adds to every answer."""
        response_headers(headers, self._context)
        headers["X-Request-Id"] = self._context.request_id
        if status in _NO_BODY or status < 200:
            body = b""
        else:
            headers["Content-Length"] = str(len(body))
        self.status, self.started = status, True
        self._conn.write(response_head(status, headers, close=self.close) + body)

    async def start(self, status: int, headers: CIMultiDict[str]) -> None:
        """The head of a chunked response (its headers are complete: see `forward`)."""
        headers["Transfer-Encoding"] = "chunked"
        self.status, self.started = status, True
        self._conn.write(response_head(status, headers, close=self.close))
        self._conn.streaming()
        await self._conn.drain()

    async def relay(self, data: bytes, within: float, *, last: bool = False) -> None:
        """One chunk of a started response (the terminating chunk too with `last`); waits only
        while the client's buffers are full, and raises TimeoutError if that lasts `within`
        seconds (no timer is armed for a write that does not wait)."""
        chunk = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        self._conn.write(chunk + b"0\r\n\r\n" if last else chunk)
        if self._conn.writing_paused:
            async with asyncio.timeout(within):
                await self._conn.drain()
