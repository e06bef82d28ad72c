"""A pool of keep-alive connections to one upstream, and the request call the proxy uses."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from gateway.errors import UpstreamError, UpstreamTimeoutError
from gateway.proxy.connection import (
    UpstreamConnection,
    UpstreamDisconnectedError,
    UpstreamResponse,
)


class UpstreamConnectError(UpstreamError):
    """No connection could be opened to the upstream."""


class UpstreamPool:
    """Reuses HTTP/1.1 connections to one upstream origin (LIFO, bounded idle set).

    Idle connections expire before the upstream's own keep-alive timeout would close them, which
    avoids the race where the upstream closes an idle connection just as a request is written.
    If that race happens anyway (no response byte on a reused connection), only an idempotent
    request (GET, DELETE) is retried on a fresh connection: a POST may be a tool call with side
    effects that the upstream already ran, so it gets a 502 instead of a second execution.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        idle_timeout: float,
        max_idle: int,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host_header = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host_header if default_port else f"{host_header}:{self.port}"
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_idle = max_idle
        self._idle: list[UpstreamConnection] = []
        self._active: set[UpstreamConnection] = set()
        self._closing = False

    async def request(
        self, head: bytes, body: bytes, response_timeout: float, *, idempotent: bool
    ) -> tuple[UpstreamConnection, UpstreamResponse]:
        """Send one request (`head` ends with the blank line) and wait for the response headers.

        The caller must pass the returned connection to `release()` when done with the response.
        Raises UpstreamError (502) or UpstreamTimeoutError (504).
        """
        data = head + body
        for attempt in range(2):
            conn, reused = await self._acquire()
            response = conn.send(data)
            try:
                await response.wait_headers(response_timeout)
            except UpstreamDisconnectedError:
                self.release(conn)
                if idempotent and reused and not response.received_any and attempt == 0:
                    continue
                raise
            except BaseException:  # timeouts, and cancellation when the client goes away
                self.release(conn)
                raise
            return conn, response
        raise AssertionError("unreachable")

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after its exchange; it is kept only if fully read and healthy."""
        self._active.discard(conn)
        if conn.finish() and not self._closing and len(self._idle) < self._max_idle:
            conn.last_used = conn.loop.time()
            self._idle.append(conn)
        elif not conn.closed:
            conn.close()

    async def _acquire(self) -> tuple[UpstreamConnection, bool]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.last_used > self._idle_timeout:
                conn.close()
                continue
            self._active.add(conn)
            return conn, True
        if self._closing:
            raise UpstreamConnectError("gateway is shutting down")
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(loop),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except TimeoutError:
            raise UpstreamTimeoutError("connect timed out") from None
        except OSError as exc:
            raise UpstreamConnectError(f"connect failed: {exc.__class__.__name__}") from None
        self._active.add(conn)
        return conn, False

    async def probe(self, within: float) -> bool:
        """True if a TCP (and TLS) connection to the upstream opens within `within` seconds."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                transport, _ = await loop.create_connection(
                    asyncio.Protocol,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except (OSError, TimeoutError):
            return False
        transport.close()
        return True

    def close(self) -> None:
        """Close every connection, idle and active (active exchanges fail)."""
        self._closing = True
        for conn in (*self._idle, *self._active):
            conn.close()
        self._idle.clear()
        self._active.clear()
