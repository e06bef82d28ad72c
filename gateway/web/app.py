"""The application factory: every route and every step of a request, wired in one place."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.auth.authenticator import HttpSessionHolder, Revocations, TrustedServer
from gateway.auth.token_cache import TokenCache
from gateway.compiler import CompiledConfig, compile_config
from gateway.config.fields import GATEWAY_AS_NAME
from gateway.config.model import GatewayConfig
from gateway.config.upstreams import HttpUpstream, Upstream
from gateway.errors import MethodNotAllowedError
from gateway.oauth.server import AuthorizationServer
from gateway.observability.metrics import GatewayMetrics
from gateway.policy.compiled import PolicyStore
from gateway.session.registry import SessionRegistry
from gateway.session.shared import SharedSessions
from gateway.store.kv import KeyValueStore
from gateway.store.observed import open_shared_store
from gateway.store.shared_limits import open_limiter
from gateway.upstream_auth.factory import CredentialServices, build_credential
from gateway.web import health
from gateway.web.audit_record import install_audit
from gateway.web.connect import install_connect_pages
from gateway.web.edge import Edge
from gateway.web.exchange import McpRequest
from gateway.web.facade import FacadeEndpoints, build_authorization_server
from gateway.web.http_route import HttpRoute
from gateway.web.keys import (
    COMPILED_KEY,
    CONFIG_KEY,
    CONTEXT_KEY,
    HTTP_KEY,
    LANES_KEY,
    METRICS_KEY,
    POLICIES_KEY,
    RELOADER_KEY,
    ROUTES_KEY,
    STORE_KEY,
)
from gateway.web.limiting import limit_step
from gateway.web.middleware import error_middleware, request_context_middleware
from gateway.web.pipeline import BodyLimits, Step, build_steps
from gateway.web.plane.lane import McpLane
from gateway.web.plane.lanes import Lane
from gateway.web.reload import PolicyReloader, reload_context
from gateway.web.resource_metadata import metadata_document, metadata_handler, metadata_path
from gateway.web.route import Route
from gateway.web.routes import RouteTracers, build_route, route_authenticator, route_tracers
from gateway.web.sessions import build_registry, count_rejections, reaper, session_step

MCP_METHODS = ("DELETE", "GET", "POST")
REVOCATION_RECHECK = 2.0
"""Seconds a gateway token found not revoked in the shared store is trusted before asking
again (a revocation through another replica takes effect within it)."""


class McpEndpoint:
    """The handler of one upstream route: run the pipeline steps, then the route's own part."""

    def __init__(self, route: Route, steps: tuple[Step, ...]) -> None:
        self.route = route
        self.steps = steps

    async def handle(self, request: web.Request) -> web.StreamResponse:
        context = request[CONTEXT_KEY]
        context.upstream = self.route.name
        if request.method not in MCP_METHODS:
            raise MethodNotAllowedError(MCP_METHODS)
        mcp = McpRequest(
            context,
            request.method,
            request.raw_path,
            request.headers,
            request.raw_headers,
            request.content_length,
            request.content,
            request.transport,
        )
        for step in self.steps:
            await step(mcp)
        return await self.route.handle(request, mcp)


def _scopes_supported(app: web.Application, route_name: str) -> frozenset[str]:
    """Every scope the route's policy in force can require (RFC 9728 `scopes_supported`)."""
    policy = app[POLICIES_KEY].current.get(route_name)
    return policy.scopes_supported if policy is not None else frozenset()


def create_app(
    config: GatewayConfig | CompiledConfig,
    *,
    registry: CollectorRegistry | None = None,
    config_path: Path | None = None,
) -> web.Application:
    """Build the gateway application for a loaded config (`gateway.compiler.load`), or for a
    config built in code, which is compiled here (`ConfigError` on a problem).

    Middlewares, outermost first: request context (id, access line, metrics), the edge (Host,
    Origin, CORS; it also ends the connection's header deadline, so it runs before anything
    reads a body; and it adds response headers to errors too), then error mapping. MCP routes
    then run `build_steps(...)` (authentication first) and their route's `handle`.
    """
    compiled = config if isinstance(config, CompiledConfig) else compile_config(config)
    config = compiled.config
    edge = Edge(config)
    app = web.Application(
        middlewares=[request_context_middleware, edge.edge_middleware, error_middleware]
    )
    metrics = GatewayMetrics(registry if registry is not None else CollectorRegistry())
    app[CONFIG_KEY] = config
    app[COMPILED_KEY] = compiled
    app[METRICS_KEY] = metrics
    app[HTTP_KEY] = HttpSessionHolder()
    shared = open_shared_store(config.store, metrics)
    facade = _install_facade(app, shared)
    revocations = _revocations(facade, shared)
    sessions = _install_sessions(app, shared)
    services = CredentialServices(metrics, app[HTTP_KEY], facade, shared, config.public_base())
    tracing = route_tracers(app[CONFIG_KEY].tracing, app.cleanup_ctx)
    routes = _install_routes(app, sessions, facade, revocations, services, tracing)
    install_connect_pages(app, routes, config.public_base())  # after the facade: its sign-in
    policies = _install_policies(app, facade, config_path)
    install_audit(app, compiled, policies, facade)
    _mount_routes(app, routes, sessions, policies, edge, tracing)
    _install_health(app)
    return app


def _install_facade(
    app: web.Application, shared: KeyValueStore | None
) -> AuthorizationServer | None:
    """The OAuth authorization server facade and its endpoints, when configured."""
    config = app[CONFIG_KEY]
    if config.auth.authorization_server is None:
        return None
    facade = build_authorization_server(app[COMPILED_KEY], shared)
    FacadeEndpoints(facade, config, app[HTTP_KEY], shared).install(app)
    return facade


def _revocations(
    facade: AuthorizationServer | None, shared: KeyValueStore | None
) -> Revocations | None:
    """Revocations of the facade's own tokens, which end open streams at once here."""
    if facade is None:
        return None
    revocations = Revocations(
        facade.settings.issuer,
        facade.store.is_revoked_jti,
        recheck_after=REVOCATION_RECHECK if shared is not None else 0.0,
    )
    facade.on_revoked = revocations.revoked_here  # at once here, open streams included
    return revocations


def _install_sessions(app: web.Application, shared: KeyValueStore | None) -> SessionRegistry:
    """The session registry, shared through the store when there is one, and its gauges."""
    config = app[CONFIG_KEY]
    metrics = app[METRICS_KEY]
    sessions = build_registry(config.sessions)
    if shared is not None:
        app[STORE_KEY] = shared
        sessions.shared = SharedSessions(shared, config.sessions)
        app.cleanup_ctx.append(_closing(shared, sessions.shared))
    metrics.active_sessions.set_function(lambda: len(sessions))
    metrics.open_get_streams.set_function(lambda: sessions.streams_open)
    return sessions


def _install_routes(
    app: web.Application,
    sessions: SessionRegistry,
    facade: AuthorizationServer | None,
    revocations: Revocations | None,
    services: CredentialServices,
    tracing: RouteTracers | None,
) -> tuple[Route, ...]:
    """One route per upstream, with its authenticator and protected resource metadata; and
    what they need at start-up and shutdown (outbound HTTP, closing, the session reaper)."""
    config = app[CONFIG_KEY]
    metrics = app[METRICS_KEY]
    servers = _trusted_servers(config, app[HTTP_KEY], metrics, facade)
    resource_server = config.token_validation()
    cache = TokenCache(resource_server.token_cache_size if resource_server else 0)
    public_base = config.public_base()
    routes = []
    for upstream in config.upstreams:
        names = upstream.authorization_servers or list(servers)
        trusted = [] if upstream.allow_anonymous else [servers[name] for name in names]
        authenticator = None
        if trusted:
            assert resource_server is not None
            authenticator = route_authenticator(
                upstream,
                trusted,
                settings=resource_server,
                public_base=public_base,
                cache=cache,
                metrics=metrics,
                revocations=revocations,
            )
            _add_resource_metadata(app, upstream, public_base, trusted)
        credential = None
        if isinstance(upstream, HttpUpstream):
            scopes = functools.partial(_scopes_supported, app, upstream.name)
            credential = build_credential(upstream, services, scopes)
        routes.append(
            build_route(
                upstream,
                metrics,
                public_base=public_base,
                sessions=sessions,
                authenticator=authenticator,
                credential=credential,
                tracers=tracing,
            )
        )
    app[ROUTES_KEY] = tuple(routes)
    app.cleanup_ctx.append(_outbound_http)
    app.cleanup_ctx.append(_close_pools)
    by_route = {route.path: route for route in routes}

    def end_session(path: str, upstream_id: str) -> None:
        by_route[path].end_session(upstream_id)  # a session reaped as idle

    app.cleanup_ctx.append(reaper(sessions, config.sessions, end_session))
    return app[ROUTES_KEY]


def _add_resource_metadata(
    app: web.Application, upstream: Upstream, public_base: str, trusted: list[TrustedServer]
) -> None:
    """The route's protected resource metadata document (RFC 9728)."""
    document = functools.partial(
        metadata_document,
        resource=public_base + upstream.route,
        issuers=[server.issuer for server in trusted],
        name=upstream.resource_name or upstream.name,
    )
    app.router.add_get(
        metadata_path(upstream.route),
        metadata_handler(document, functools.partial(_scopes_supported, app, upstream.name)),
        allow_head=False,
    )


def _install_policies(
    app: web.Application, facade: AuthorizationServer | None, config_path: Path | None
) -> PolicyStore:
    """The compiled policies in force, and their reloader when the config comes from a file."""
    config = app[CONFIG_KEY]
    policies = PolicyStore(app[COMPILED_KEY].policies)
    app[POLICIES_KEY] = policies
    if facade is not None:
        public_base = config.public_base()
        resources = {public_base + u.route: u.name for u in config.upstreams}
        facade.resource_scopes = lambda resource: (
            _scopes_supported(app, resources[resource]) if resource in resources else None
        )
    if config_path is not None:
        reloader = PolicyReloader(
            config_path, config, policies, app[METRICS_KEY], config.server.reload_interval
        )
        app[RELOADER_KEY] = reloader
        if config.server.reload_interval > 0:
            app.cleanup_ctx.append(reload_context(reloader))
    return policies


def _mount_routes(
    app: web.Application,
    routes: tuple[Route, ...],
    sessions: SessionRegistry,
    policies: PolicyStore,
    edge: Edge,
    tracing: RouteTracers | None,
) -> None:
    """Each route at its path, behind the pipeline steps built for it (with tracing on, the
    first starts the request's span); an HTTP route is also a lane of the lean data plane
    (`gateway.web.plane`) unless `server.data_plane` is aiohttp."""
    config = app[CONFIG_KEY]
    metrics = app[METRICS_KEY]
    limits = BodyLimits(config.server.max_request_bytes, config.server.body_timeout)
    lanes: dict[bytes, Lane] = {}
    limiter = open_limiter(app.get(STORE_KEY))
    for route in routes:
        policy = policies.current.get(route.name)
        limit = None
        if policy is not None and policy.limits is not None:
            limit = limit_step(limiter, policies, route.name, metrics)
        steps = build_steps(
            limits,
            route.authenticator,
            session_step(sessions, route.path, count_rejections(metrics, route.name)),
            policies,
            route.name,
            _decision_counter(metrics, route.name),
            limit,
            traced=tracing.traced if tracing else None,
        )
        if tracing is not None:
            steps = (tracing.start(route.path, route.name), *steps)
        app.router.add_route("*", route.path, McpEndpoint(route, steps).handle)
        if isinstance(route, HttpRoute) and config.server.data_plane == "lean":
            proxies = config.server.trusted_proxies
            lane = McpLane(route, steps, edge, metrics, proxies)
            lanes[route.path.encode("ascii")] = lane
    app[LANES_KEY] = lanes


def _install_health(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz, allow_head=False)
    app.router.add_get("/readyz", health.readyz, allow_head=False)
    if app[CONFIG_KEY].server.metrics_port is None:
        app.router.add_get("/metrics", health.metrics, allow_head=False)


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
