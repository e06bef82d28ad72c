"""An upstream mounted at a route: what every kind of route offers the app, and what they share."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from gateway.auth.authenticator import RouteAuthenticator
from gateway.config.upstreams import Upstream
from gateway.session.registry import SessionRegistry
from gateway.web.exchange import McpRequest


class Route(Protocol):
    """What the app needs of any mounted upstream, whatever its kind (HTTP or stdio).

    `handle` (given the aiohttp request and the pipeline's view of it, `mcp`) runs after the
    common pipeline steps (authentication, session binding, body and policy); `end_session` is
    called when the gateway ends a session on its own (idle reaping).
    """

    name: str
    path: str
    resource: str
    authenticator: RouteAuthenticator | None
    sessions: SessionRegistry

    async def handle(self, request: web.Request, mcp: McpRequest) -> web.StreamResponse: ...

    def end_session(self, upstream_id: str) -> None: ...

    async def probe(self, within: float) -> bool: ...

    async def close(self) -> None: ...


class MountedRoute:
    """What every upstream mounted at a route has, HTTP or stdio."""

    def __init__(
        self,
        config: Upstream,
        *,
        public_base: str,
        sessions: SessionRegistry,
        authenticator: RouteAuthenticator | None = None,
    ) -> None:
        self.name = config.name
        self.path = config.route
        """Where the gateway serves the route."""
        self.resource = public_base + config.route
        """The route's canonical URL: its RFC 8707 resource indicator and RFC 9728 `resource`."""
        self.authenticator = authenticator
        self.sessions = sessions
