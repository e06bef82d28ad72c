"""The application factory: every route and every step of a request, wired in one place."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.auth.authenticator import (
    HttpSessionHolder,
    Revocations,
    RouteAuthenticator,
    TrustedServer,
)
from gateway.auth.token_cache import TokenCache
from gateway.config.model import GATEWAY_AS_NAME, GatewayConfig
from gateway.errors import MethodNotAllowedError
from gateway.oauth.facade import AuthorizationServer
from gateway.observability.metrics import GatewayMetrics
from gateway.policy.compiled import PolicyStore, compile_policies
from gateway.session.shared import SharedSessions
from gateway.store.kv import KeyValueStore
from gateway.store.observed import open_shared_store
from gateway.web import health
from gateway.web.edge import edge_middleware
from gateway.web.facade import FacadeEndpoints, build_authorization_server
from gateway.web.forward import end_upstream_session, forward
from gateway.web.keys import (
    CONFIG_KEY,
    CONTEXT_KEY,
    HTTP_KEY,
    METRICS_KEY,
    POLICIES_KEY,
    RELOADER_KEY,
    ROUTES_KEY,
    STORE_KEY,
)
from gateway.web.middleware import error_middleware, request_context_middleware
from gateway.web.pipeline import BodyLimits, Step, build_steps
from gateway.web.reload import PolicyReloader, reload_context
from gateway.web.resource_metadata import metadata_document, metadata_handler, metadata_path
from gateway.web.route import UpstreamRoute
from gateway.web.sessions import build_registry, count_rejections, reaper, session_step
from gateway.web.stdio_route import StdioRoute

MCP_METHODS = ("DELETE", "GET", "POST")
REVOCATION_RECHECK = 2.0
"""Seconds a gateway token found not revoked in the shared store is trusted before asking
again (a revocation through another replica takes effect within it)."""
TOKEN_OUTCOMES = ("valid", "cached", "invalid", "missing", "malformed", "unavailable")


class McpEndpoint:
    """The handler of one upstream route: run the pipeline steps, then forward."""

    def __init__(self, route: UpstreamRoute | StdioRoute, steps: tuple[Step, ...]) -> None:
        self.route = route
        self.steps = steps

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request[CONTEXT_KEY].upstream = self.route.name
        if request.method not in MCP_METHODS:
            raise MethodNotAllowedError(MCP_METHODS)
        for step in self.steps:
            await step(request)
        route = self.route
        if isinstance(route, StdioRoute):
            return await route.bridge.handle(request)
        return await forward(request, route)


def _scopes_supported(app: web.Application, route_name: str) -> frozenset[str]:
    """Every scope the route's policy in force can require (RFC 9728 `scopes_supported`)."""
    policy = app[POLICIES_KEY].current.get(route_name)
    return policy.scopes_supported if policy is not None else frozenset()


def create_app(
    config: GatewayConfig,
    *,
    registry: CollectorRegistry | None = None,
    config_path: Path | None = None,
) -> web.Application:
    """Build the gateway application for a validated config.

    Middlewares, outermost first: request context (id, access line, metrics), the edge (Host,
    Origin, CORS; it also ends the connection's header deadline, so it runs before anything
    reads a body; and it adds response headers to errors too), then error mapping. MCP routes
    then run `build_steps(...)` (authentication first) and `forward`.
    """
    app = web.Application(
        middlewares=[request_context_middleware, edge_middleware(config), error_middleware]
    )
    metrics = GatewayMetrics(registry if registry is not None else CollectorRegistry())
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = metrics
    http = HttpSessionHolder()
    app[HTTP_KEY] = http
    shared = open_shared_store(config.store, metrics)
    facade = None
    if config.auth.authorization_server is not None:
        facade = build_authorization_server(config, shared)
        FacadeEndpoints(facade, config, http, shared).install(app)
    servers = _trusted_servers(config, http, metrics, facade)
    resource_server = config.token_validation()
    cache = TokenCache(resource_server.token_cache_size if resource_server else 0)
    public_base = config.public_base()
    revocations = (
        Revocations(
            facade.settings.issuer,
            facade.store.is_revoked_jti,
            recheck_after=REVOCATION_RECHECK if shared is not None else 0.0,
        )
        if facade is not None
        else None
    )
    if facade is not None and revocations is not None:
        facade.on_revoked = revocations.revoked_here  # at once here, open streams included
    sessions = build_registry(config.sessions)
    if shared is not None:
        app[STORE_KEY] = shared
        sessions.shared = SharedSessions(shared, config.sessions)
        app.cleanup_ctx.append(_closing(shared, sessions.shared))
    metrics.active_sessions.set_function(lambda: len(sessions))
    metrics.open_get_streams.set_function(lambda: sessions.streams_open)

    routes = []
    for upstream in config.upstreams:
        trusted = [
            servers[name]
            for name in (upstream.authorization_servers or list(servers))
            if not upstream.allow_anonymous
        ]
        authenticator = None
        if trusted:
            assert resource_server is not None
            authenticator = RouteAuthenticator(
                resource=public_base + upstream.route,
                metadata_url=public_base + metadata_path(upstream.route),
                scopes=upstream.scopes,
                servers=trusted,
                settings=resource_server,
                cache=cache,
                on_outcome=_outcome_counter(metrics, upstream.name),
                revocations=revocations,
            )
            document = functools.partial(
                metadata_document,
                resource=public_base + upstream.route,
                issuers=[server.issuer for server in trusted],
                name=upstream.resource_name or upstream.name,
            )
            app.router.add_get(
                metadata_path(upstream.route),
                metadata_handler(
                    document, functools.partial(_scopes_supported, app, upstream.name)
                ),
                allow_head=False,
            )
        if upstream.command is not None:
            route: UpstreamRoute | StdioRoute = StdioRoute(
                upstream, public_base=public_base, sessions=sessions, authenticator=authenticator
            )
        else:
            route = UpstreamRoute(
                upstream,
                metrics,
                public_base=public_base,
                sessions=sessions,
                authenticator=authenticator,
            )
        routes.append(route)
    app[ROUTES_KEY] = tuple(routes)
    app.cleanup_ctx.append(_outbound_http)
    app.cleanup_ctx.append(_close_pools)
    by_route = {route.config.route: route for route in routes}
    app.cleanup_ctx.append(
        reaper(
            sessions,
            config.sessions,
            lambda path, upstream_id: _end_session(by_route[path], upstream_id),
        )
    )

    policies = PolicyStore(compile_policies(config))
    app[POLICIES_KEY] = policies
    if facade is not None:
        resources = {public_base + u.route: u.name for u in config.upstreams}
        facade.resource_scopes = lambda resource: (
            _scopes_supported(app, resources[resource]) if resource in resources else None
        )
    if config_path is not None:
        reloader = PolicyReloader(
            config_path, config, policies, metrics, config.server.reload_interval
        )
        app[RELOADER_KEY] = reloader
        if config.server.reload_interval > 0:
            app.cleanup_ctx.append(reload_context(reloader))
    for route in routes:
        steps = build_steps(
            BodyLimits(config.server.max_request_bytes, config.server.body_timeout),
            route.authenticator,
            session_step(sessions, route.config.route, count_rejections(metrics, route.name)),
            policies,
            route.name,
            _decision_counter(metrics, route.name),
        )
        app.router.add_route("*", route.config.route, McpEndpoint(route, steps).handle)
    app.router.add_get("/healthz", health.healthz, allow_head=False)
    app.router.add_get("/readyz", health.readyz, allow_head=False)
    if config.server.metrics_port is None:
        app.router.add_get("/metrics", health.metrics, allow_head=False)
    return app


def _trusted_servers(
    config: GatewayConfig,
    http: HttpSessionHolder,
    metrics: GatewayMetrics,
    facade: AuthorizationServer | None,
) -> dict[str, TrustedServer]:
    settings = config.token_validation()
    if settings is None:
        return {}
    own_keys = None
    if facade is not None:

        def own_keys() -> dict[str, object]:
            return {"keys": facade.keys.jwks()["keys"]}

    def count_fetch(server: str, outcome: str) -> None:
        metrics.jwks_fetches.labels(server, outcome).inc()

    return {
        server.name: TrustedServer(
            server,
            settings,
            http,
            count_fetch,
            local_jwks=own_keys if server.name == GATEWAY_AS_NAME else None,
        )
        for server in settings.authorization_servers
    }


def _decision_counter(metrics: GatewayMetrics, upstream: str) -> Callable[[str], None]:
    children = {
        outcome: metrics.decisions.labels(upstream, outcome)
        for outcome in ("allow", "insufficient_scope", "deny")
    }
    return lambda outcome: children[outcome].inc()


def _outcome_counter(metrics: GatewayMetrics, upstream: str) -> Callable[[str], None]:
    children = {
        outcome: metrics.token_validations.labels(upstream, outcome) for outcome in TOKEN_OUTCOMES
    }
    return lambda outcome: children[outcome].inc()


def _closing(
    store: KeyValueStore, sessions: SharedSessions
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def close_at_cleanup(app: web.Application) -> AsyncIterator[None]:
        yield
        await sessions.close()  # pending writes first, then the connections
        await store.close()

    return close_at_cleanup


async def _outbound_http(app: web.Application) -> AsyncIterator[None]:
    """One long-lived client session for key sources and introspection (not for upstreams)."""
    async with aiohttp.ClientSession() as session:
        app[HTTP_KEY].session = session
        yield
        app[HTTP_KEY].session = None


def create_metrics_app(metrics: GatewayMetrics) -> web.Application:
    """A separate application serving only /metrics, for `server.metrics_port`."""
    app = web.Application()
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", health.metrics, allow_head=False)
    return app


async def _close_pools(app: web.Application) -> AsyncIterator[None]:
    """Upstream connections closed and stdio processes stopped, at shutdown."""
    yield
    await asyncio.gather(*(route.close() for route in app[ROUTES_KEY]))


def _end_session(route: UpstreamRoute | StdioRoute, upstream_id: str) -> None:
    """A session reaped as idle: stop its stdio process, or DELETE it at the HTTP upstream."""
    if isinstance(route, StdioRoute):
        route.bridge.end(upstream_id)
    else:
        end_upstream_session(route, upstream_id)
