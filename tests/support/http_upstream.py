"""A programmable HTTP upstream on a real loopback socket, recording what reaches it.

For transport-level behaviour (headers, failures, streaming, disconnects) where an MCP server
cannot be made to misbehave on purpose. MCP behaviour itself is tested against real MCP servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    peer_port: int
    header_list: list[tuple[str, str]] = field(default_factory=list)
    """Every header line in order, repeats included (`headers` keeps one per spelling)."""


@dataclass
class RecordingUpstream:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def connection_ports(self) -> set[int]:
        """Distinct client ports seen: one per upstream TCP connection the gateway opened."""
        return {r.peer_port for r in self.requests}


@asynccontextmanager
async def recording_upstream(handler: Handler) -> AsyncIterator[RecordingUpstream]:
    """Serve `handler` on 127.0.0.1:<free port>/mcp, recording every request first."""
    upstream = RecordingUpstream(url="")

    async def record(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        upstream.requests.append(
            Recorded(
                method=request.method,
                path_qs=request.path_qs,
                headers=dict(request.headers),
                body=await request.read(),
                peer_port=int(peer[1]) if peer else 0,
                header_list=list(request.headers.items()),
            )
        )
        try:
            return await handler(request)
        except asyncio.CancelledError:
            upstream.cancelled.set()
            raise

    app = web.Application()
    app.router.add_route("*", "/mcp", record)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    upstream.url = f"http://127.0.0.1:{port}/mcp"
    try:
        yield upstream
    finally:
        await runner.cleanup()
