"""The HTTP edge: Host and Origin checks (DNS rebinding), CORS, and response hygiene.

(Stub: filled in by the edge work; `install_edge` is what `create_app` calls.)
"""

from __future__ import annotations

from aiohttp import web

from gateway.config.model import GatewayConfig


def install_edge(app: web.Application, config: GatewayConfig) -> None:
    """Add the edge middleware and response hooks to `app` (before it is frozen)."""
