"""The main listener: a TCP site whose connections start on the lean data plane.

Each connection is a `ClientConnection` (`gateway.web.plane.connection`): plain requests to HTTP
upstream routes are answered there, and the first request that is not (OAuth, metadata, probes,
anything unusual) hands the connection to aiohttp's own protocol, from that request's first
byte. Either way a request must send its complete header section within `header_timeout` of its
first byte: aiohttp's `keepalive_timeout` is not reset by partial data, so it cannot bound a
client that trickles a head byte by byte (slow loris). On a connection aiohttp serves, the edge
middleware ends that deadline when the handler starts (`connection_deadline(request)`).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from yarl import URL

from gateway.observability.logging import get_logger
from gateway.web.memory import MemoryRelease, OpenConnections
from gateway.web.plane.connection import ClientConnection
from gateway.web.plane.lanes import Plane

log = get_logger("gateway.listener")

BACKLOG = 128  # as web.TCPSite


def connection_deadline(request: web.BaseRequest) -> ClientConnection | None:
    """The deadline keeper of the request's connection, when it came through a `DeadlineSite`."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, ClientConnection) else None


class DeadlineSite(web.BaseSite):
    """A TCP listener like `web.TCPSite`, giving each request `header_timeout` seconds from
    its first byte to deliver its complete header section, and serving `plane` (None: aiohttp
    serves everything). Connections that end are counted by `release`, if any
    (`gateway.web.memory`)."""

    __slots__ = (
        "_connections",
        "_handler_factory",
        "_host",
        "_plane",
        "_port",
        "_shutdown_timeout",
        "_timeouts",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout: float,
        keepalive_timeout: float,
        shutdown_timeout: float,
        plane: Plane | None = None,
        release: MemoryRelease | None = None,
    ) -> None:
        super().__init__(runner)
        assert runner.server is not None  # checked by BaseSite
        self._handler_factory = runner.server
        self._host = host
        self._port = port
        self._timeouts = (header_timeout, keepalive_timeout)
        self._shutdown_timeout = shutdown_timeout
        self._plane = plane
        self._connections: OpenConnections[ClientConnection] = OpenConnections(release)

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        handler_factory, plane, timeouts = self._handler_factory, self._plane, self._timeouts
        connections = self._connections

        def protocol() -> asyncio.Protocol:
            return ClientConnection(plane, handler_factory, timeouts, loop, connections)

        self._server = await loop.create_server(protocol, self._host, self._port, backlog=BACKLOG)

    async def stop(self) -> None:
        """Stop listening; let the lean plane's requests in progress finish within the
        runner's `shutdown_timeout`, then cut them (aiohttp's connections are its runner's)."""
        await super().stop()
        self._connections.close()
        for conn in self._connections:
            conn.close()
        tasks = [conn.task for conn in self._connections if conn.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._shutdown_timeout)
            for conn in self._connections:
                if conn.task in pending:
                    conn.abort()
