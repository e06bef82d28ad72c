"""The application factory: every route and every step of a request, wired in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.config.model import GatewayConfig
from gateway.errors import MethodNotAllowedError
from gateway.observability.metrics import GatewayMetrics
from gateway.web import health
from gateway.web.forward import forward
from gateway.web.keys import CONFIG_KEY, CONTEXT_KEY, METRICS_KEY, ROUTES_KEY
from gateway.web.middleware import error_middleware, request_context_middleware
from gateway.web.pipeline import Step, build_steps
from gateway.web.route import UpstreamRoute

MCP_METHODS = ("DELETE", "GET", "POST")


class McpEndpoint:
    """The handler of one upstream route: run the pipeline steps, then forward."""

    def __init__(self, route: UpstreamRoute, steps: tuple[Step, ...]) -> None:
        self.route = route
        self.steps = steps

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request[CONTEXT_KEY].upstream = self.route.name
        if request.method not in MCP_METHODS:
            raise MethodNotAllowedError(MCP_METHODS)
        for step in self.steps:
            await step(request)
        return await forward(request, self.route)


def create_app(
    config: GatewayConfig, *, registry: CollectorRegistry | None = None
) -> web.Application:
    """Build the gateway application for a validated config.

    Middlewares, outermost first: request context (id, access line, metrics), then error
    mapping. MCP routes then run `build_steps(...)` and `forward`.
    """
    app = web.Application(middlewares=[request_context_middleware, error_middleware])
    metrics = GatewayMetrics(registry if registry is not None else CollectorRegistry())
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = metrics
    routes = tuple(UpstreamRoute(upstream, metrics) for upstream in config.upstreams)
    app[ROUTES_KEY] = routes
    app.cleanup_ctx.append(_close_pools)

    steps = build_steps(config.server.max_request_bytes)
    for route in routes:
        app.router.add_route("*", route.config.route, McpEndpoint(route, steps).handle)
    app.router.add_get("/healthz", health.healthz, allow_head=False)
    app.router.add_get("/readyz", health.readyz, allow_head=False)
    if config.server.metrics_port is None:
        app.router.add_get("/metrics", health.metrics, allow_head=False)
    return app


def create_metrics_app(metrics: GatewayMetrics) -> web.Application:
    """A separate application serving only /metrics, for `server.metrics_port`."""
    app = web.Application()
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", health.metrics, allow_head=False)
    return app


async def _close_pools(app: web.Application) -> AsyncIterator[None]:
    yield
    for route in app[ROUTES_KEY]:
        route.pool.close()
