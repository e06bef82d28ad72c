"""The HTTP edge: Host and Origin checks (DNS rebinding), CORS, and response hygiene.

Every request but the probes (GET /healthz, /readyz, /metrics) must name a served `Host`
(else 421, RFC 9110 section 15.5.20) and, if it carries an `Origin`, an allowed one (else 403,
MCP Streamable HTTP "Security Warning"). Browsers from allowed origins get CORS (Fetch
Standard, "CORS protocol"): preflights to MCP routes and metadata paths are answered here,
before authentication, and every other response gets its CORS headers, and `no-store` on MCP
routes, from `response_headers`: here for every response not yet sent when the handler
returns (errors included: this middleware runs outside the error mapping), and from the
forwarder for relayed streams, which are sent before it returns. (An `on_response_prepare`
hook would be one place, but costs about 7 us per request on the hot path.)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, MultiMapping

from gateway.config.model import GatewayConfig
from gateway.errors import GatewayError, MisdirectedRequestError, OriginRejectedError
from gateway.web.error_response import render_error
from gateway.web.exchange import RequestContext
from gateway.web.keys import CONTEXT_KEY
from gateway.web.listener import connection_deadline

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Exempt from Host and Origin checks when fetched with GET: probes use whatever Host they like."""
WELL_KNOWN = "/.well-known/"

MCP_METHODS = "GET, POST, DELETE"
METADATA_METHODS = "GET"
FACADE_API_METHODS = {
    "/oauth/jwks": "GET",
    "/oauth/register": "POST",
    "/oauth/token": "POST",
    "/oauth/revoke": "POST",
}
"""The authorization server's endpoints that browser-based clients call with `fetch` (the
pages `/oauth/authorize`, `/oauth/sign-in`, `/oauth/consent` are navigated to, never fetched)."""
ALLOWED_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Mcp-Session-Id",
    "MCP-Protocol-Version",
    "Mcp-Method",
    "Mcp-Name",
    "Last-Event-ID",
)
EXPOSED_RESPONSE_HEADERS = "Mcp-Session-Id, WWW-Authenticate, MCP-Protocol-Version, Retry-After"
PREFLIGHT_MAX_AGE = "600"
_MCP_PARAM_HEADER = re.compile(r"mcp-param-[!#$%&'*+\-.^_`|~0-9a-z]+", re.IGNORECASE)


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a `Host` value is served: exactly as listed (lowercase), or its host part is
    listed without a port."""
    if host is None:
        return False
    host = host.lower()
    if host in allowed:
        return True
    name, colon, port = host.rpartition(":")
    return bool(colon) and port.isascii() and port.isdigit() and name in allowed


def origin_allowed(origins: Sequence[str], allowed: frozenset[str]) -> bool:
    """Whether the `Origin` headers of a request name one allowed origin.

    Origins are serialized as scheme://host[:port] (RFC 6454 section 6.2), so lowercasing the
    value is enough to compare it with the normalised allowed ones. `null` (an opaque origin,
    e.g. a sandboxed frame) and several `Origin` headers are refused.
    """
    return len(origins) == 1 and origins[0] != "null" and origins[0].lower() in allowed


def preflight_headers(origin: str, methods: str, requested: str | None) -> dict[str, str]:
    """The headers of a successful CORS preflight answer for `origin`, an allowed origin.

    The allowed request headers are those MCP clients send, and any requested `Mcp-Param-*`
    header (MCP 2026-07-28 request metadata headers); the browser refuses anything else.
    """
    names = list(ALLOWED_REQUEST_HEADERS)
    for name in (requested or "").split(","):
        name = name.strip()
        if _MCP_PARAM_HEADER.fullmatch(name):
            names.append(name)
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": ", ".join(names),
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        "Vary": "Origin",
    }


def response_headers(headers: CIMultiDict[str], context: RequestContext) -> None:
    """Add what the edge decided every response to this request must carry."""
    if context.no_store:
        headers[hdrs.CACHE_CONTROL] = "no-store"
    if context.cors_origin is not None:
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = context.cors_origin
        headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_RESPONSE_HEADERS
    if context.vary_origin:
        headers.add(hdrs.VARY, "Origin")


class Edge:
    """The edge checks of one config: the app's middleware, and `refusal` for the lean plane."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._origins = config.allowed_origins()
        self._mcp_routes = frozenset(upstream.route for upstream in config.upstreams)
        self._facade_api = (
            FACADE_API_METHODS if config.auth.authorization_server is not None else {}
        )
        self._hosts: frozenset[str] | None = None

    @web.middleware
    async def edge_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Check Host and Origin, answer CORS preflights, and add the response headers.

        It also tells the connection's header deadline (see `gateway.web.listener`) that a
        request is being handled, so it must come before anything that reads the body.
        """
        deadline = connection_deadline(request)
        if deadline is not None:
            deadline.request_started()
        try:
            path = request.rel_url.path_safe  # what the router matches
            method = request.method
            if method == hdrs.METH_GET and path in PROBE_PATHS:
                return await handler(request)
            context = request[CONTEXT_KEY]
            mcp = context.no_store = path in self._mcp_routes
            headers = request.headers
            refusal = self.refusal(headers, self.allowed_hosts(request.transport))
            if refusal is not None:
                return render_error(refusal)
            origin = headers.get(hdrs.ORIGIN)
            metadata = path.startswith(WELL_KNOWN)
            if origin is not None:
                if (
                    method == hdrs.METH_OPTIONS
                    and hdrs.ACCESS_CONTROL_REQUEST_METHOD in headers
                    and (methods := self._preflight_methods(path, mcp, metadata)) is not None
                ):
                    answer = preflight_headers(
                        origin, methods, headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
                    )
                    if mcp:
                        answer[hdrs.CACHE_CONTROL] = "no-store"
                    return web.Response(status=204, headers=answer)
                context.cors_origin = origin
            # Metadata is publicly cacheable, so a cache must key it by Origin even when the
            # request that filled it had none.
            context.vary_origin = origin is not None or metadata
            response = await handler(request)
            if not response.prepared:  # a relayed stream has them already (see `forward`)
                response_headers(response.headers, context)
            return response
        finally:
            if deadline is not None:
                deadline.request_ended()

    def refusal(self, headers: MultiMapping[str], hosts: frozenset[str]) -> GatewayError | None:
        """Why a request with these headers is not served here: a `Host` not served (421), or
        an `Origin` not allowed (403); None: it is."""
        if not host_allowed(headers.get(hdrs.HOST), hosts):
            return MisdirectedRequestError("host not served")
        origins = headers.getall(hdrs.ORIGIN, ())
        if origins and not origin_allowed(origins, self._origins):
            return OriginRejectedError("origin not allowed")
        return None

    def admit_mcp(
        self,
        context: RequestContext,
        headers: MultiMapping[str],
        transport: asyncio.BaseTransport | None,
    ) -> None:
        """The edge's part for an MCP request that is no CORS preflight, as `edge_middleware`
        does it (for the lean data plane): the `refusal` raised, else what every answer to it
        must carry (`response_headers`)."""
        context.no_store = True
        refusal = self.refusal(headers, self.allowed_hosts(transport))
        if refusal is not None:
            raise refusal
        origin = headers.get(hdrs.ORIGIN)
        context.cors_origin = origin
        context.vary_origin = origin is not None

    def _preflight_methods(self, path: str, mcp: bool, metadata: bool) -> str | None:
        """The methods a CORS preflight to `path` may be answered with; None: not answered."""
        if mcp:
            return MCP_METHODS
        if metadata:
            return METADATA_METHODS
        return self._facade_api.get(path)

    def allowed_hosts(self, transport: asyncio.BaseTransport | None) -> frozenset[str]:
        """The served `Host` values; by default they name the port bound, which is only known
        once a connection has arrived (on `transport`), so they are computed at the first
        request."""
        hosts = self._hosts
        if hosts is None:
            sockname = transport.get_extra_info("sockname") if transport is not None else None
            if not isinstance(sockname, tuple):  # the connection is gone: do not cache
                return self._config.allowed_hosts()
            hosts = self._hosts = self._config.allowed_hosts(int(sockname[1]))
        return hosts
