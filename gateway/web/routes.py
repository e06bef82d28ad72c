"""The route factory: one route per upstream, of the upstream's kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, assert_never

from aiohttp.web_app import CleanupContext

from gateway.auth.authenticator import Revocations, RouteAuthenticator, TrustedServer
from gateway.auth.token_cache import TokenCache
from gateway.config.auth import ResourceServer
from gateway.config.tracing import TracingSettings
from gateway.config.upstreams import HttpUpstream, StdioUpstream, Upstream
from gateway.observability.metrics import GatewayMetrics
from gateway.session.registry import SessionRegistry
from gateway.upstream_auth.base import UpstreamCredential
from gateway.web.forward import UpstreamTracer
from gateway.web.http_route import HttpRoute
from gateway.web.pipeline import Step
from gateway.web.resource_metadata import metadata_path
from gateway.web.route import Route
from gateway.web.stdio_route import StdioRoute, StdioTracer


class RouteTracers(NamedTuple):
    """With tracing on (`gateway.web.tracing`): the first step of each route's pipeline, the
    wrapper of the steps that get spans, and what puts each kind of upstream exchange in one."""

    start: Callable[[str, str], Step]
    """(route path, route name) -> the step that starts a request's server span."""
    traced: Callable[[str, Step], Step]
    http: UpstreamTracer
    stdio: StdioTracer


def route_tracers(settings: TracingSettings, cleanup: CleanupContext) -> RouteTracers | None:
    """The tracers when `tracing` is on; only then is OpenTelemetry (the optional `otel`
    extra) imported. The last spans are exported at shutdown."""
    if not settings.enabled:
        return None
    from gateway.web.tracing import RouteTracing

    tracing = RouteTracing(settings)
    cleanup.append(tracing.close_at_cleanup)
    return tracing.tracers


TOKEN_OUTCOMES = ("valid", "cached", "invalid", "missing", "malformed", "unavailable")


def build_route(
    upstream: Upstream,
    metrics: GatewayMetrics,
    *,
    public_base: str,
    sessions: SessionRegistry,
    authenticator: RouteAuthenticator | None,
    credential: UpstreamCredential | None = None,
    tracers: RouteTracers | None = None,
) -> Route:
    """The route for `upstream`, of its kind: a reverse proxy for an HTTP server, a process per
    session for a stdio one. The one place that tells the kinds apart (a new kind that is not
    handled here fails type checking, through `assert_never`)."""
    match upstream:
        case HttpUpstream():
            return HttpRoute(
                upstream,
                metrics,
                public_base=public_base,
                sessions=sessions,
                authenticator=authenticator,
                credential=credential,
                trace_upstream=tracers.http if tracers else None,
            )
        case StdioUpstream():
            return StdioRoute(
                upstream,
                public_base=public_base,
                sessions=sessions,
                authenticator=authenticator,
                trace_stdio=tracers.stdio if tracers else None,
            )
        case _:
            assert_never(upstream)


def route_authenticator(
    upstream: Upstream,
    trusted: list[TrustedServer],
    *,
    settings: ResourceServer,
    public_base: str,
    cache: TokenCache,
    metrics: GatewayMetrics,
    revocations: Revocations | None,
) -> RouteAuthenticator:
    """The authenticator of a protected route, trusting the tokens of `trusted` servers."""
    return RouteAuthenticator(
        resource=public_base + upstream.route,
        metadata_url=public_base + metadata_path(upstream.route),
        scopes=upstream.scopes,
        servers=trusted,
        settings=settings,
        cache=cache,
        on_outcome=_outcome_counter(metrics, upstream.name),
        revocations=revocations,
    )


def _outcome_counter(metrics: GatewayMetrics, upstream: str) -> Callable[[str], None]:
    children = {
        outcome: metrics.token_validations.labels(upstream, outcome) for outcome in TOKEN_OUTCOMES
    }
    return lambda outcome: children[outcome].inc()
