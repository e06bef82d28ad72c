"""A stdio upstream mounted at a route (see `gateway.stdio.bridge`)."""

from __future__ import annotations

from gateway.auth.authenticator import RouteAuthenticator
from gateway.config.model import Upstream
from gateway.session.registry import SessionRegistry
from gateway.stdio.bridge import StdioBridge
from gateway.web.route import MountedRoute


class StdioRoute(MountedRoute):
    """A stdio upstream: its processes, one per session."""

    def __init__(
        self,
        config: Upstream,
        *,
        public_base: str,
        sessions: SessionRegistry,
        authenticator: RouteAuthenticator | None = None,
    ) -> None:
        super().__init__(
            config, public_base=public_base, sessions=sessions, authenticator=authenticator
        )
        self.bridge = StdioBridge(
            config,
            sessions,
            start_timeout=config.timeouts.response,
            revocations=authenticator.revocations if authenticator is not None else None,
        )

    async def probe(self, within: float) -> bool:
        """Readiness: the program can be found (each session starts its own process)."""
        return self.bridge.program() is not None

    async def close(self) -> None:
        await self.bridge.close()
