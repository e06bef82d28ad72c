"""A stdio upstream mounted at a route (see `gateway.stdio.bridge`)."""

from __future__ import annotations

from prometheus_client import Histogram

from gateway.auth.authenticator import RouteAuthenticator
from gateway.config.model import Upstream
from gateway.observability.metrics import GatewayMetrics
from gateway.session.registry import SessionRegistry
from gateway.stdio.bridge import StdioBridge


class StdioRoute:
    """A stdio upstream mounted at a route: its processes, one per session."""

    def __init__(
        self,
        config: Upstream,
        metrics: GatewayMetrics,
        *,
        public_base: str,
        sessions: SessionRegistry,
        authenticator: RouteAuthenticator | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.resource = public_base + config.route
        self.authenticator = authenticator
        self.sessions = sessions
        self.bridge = StdioBridge(config, sessions, start_timeout=config.timeouts.response)
        self.request_duration: Histogram = metrics.request_duration.labels(self.name)

    async def probe(self, within: float) -> bool:
        """Readiness: the program can be found (each session starts its own process)."""
        return self.bridge.program() is not None

    async def close(self) -> None:
        await self.bridge.close()
