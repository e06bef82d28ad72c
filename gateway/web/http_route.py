"""An HTTP upstream mounted at a route: its connection pool, headers and pre-bound metrics."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter, Gauge

from gateway.auth.authenticator import RouteAuthenticator
from gateway.config.tracing import TRACE_CONTEXT_HEADERS
from gateway.config.upstreams import HttpUpstream
from gateway.observability.loop_metrics import HistogramChild
from gateway.observability.metrics import GatewayMetrics
from gateway.proxy.headers import RequestHeadBuilder
from gateway.proxy.pool import UpstreamPool
from gateway.session.registry import SessionRegistry
from gateway.upstream_auth.base import UpstreamCredential
from gateway.web.exchange import McpRequest
from gateway.web.forward import UpstreamTracer, end_upstream_session, forward
from gateway.web.route import MountedRoute
from gateway.web.streaming import write_within

UPSTREAM_ERROR_KINDS = ("connect", "timeout", "closed", "protocol", "stream")


class HttpRoute(MountedRoute):
    """Everything the hot path needs about one HTTP upstream, resolved once at start-up."""

    def __init__(
        self,
        config: HttpUpstream,
        metrics: GatewayMetrics,
        *,
        public_base: str,
        sessions: SessionRegistry,
        authenticator: RouteAuthenticator | None = None,
        credential: UpstreamCredential | None = None,
        trace_upstream: UpstreamTracer | None = None,
    ) -> None:
        super().__init__(
            config, public_base=public_base, sessions=sessions, authenticator=authenticator
        )
        self.config = config
        self.response_timeout = config.timeouts.response
        self.pool = UpstreamPool(
            str(config.url),
            connect_timeout=config.timeouts.connect,
            idle_timeout=config.timeouts.idle_connection,
            max_idle=config.max_idle_connections,
        )
        self.identity_headers = tuple(config.identity_headers.names().items())
        """(claim, header name) pairs set from each caller's principal."""
        self.credential = credential
        """The upstream's own credential (`upstream_auth`), set on every request."""
        managed = [name for _, name in self.identity_headers]
        if credential is not None:
            managed.append(credential.header)
        self.trace_upstream = trace_upstream
        """With tracing on: the gateway's span is the upstream's parent, in its own
        `traceparent` and `tracestate` (the client's are not passed)."""
        if trace_upstream is not None:
            managed += sorted(TRACE_CONTEXT_HEADERS)
        self.head_builder = RequestHeadBuilder(
            self.pool.host_header,
            {name: value.get_secret_value() for name, value in config.headers.items()},
            managed=managed,
            passed=config.pass_headers,
        )
        self.metrics = metrics
        self.request_duration: HistogramChild = metrics.request_duration.labels(self.name)
        self.upstream_duration: HistogramChild = metrics.upstream_duration.labels(self.name)
        self.open_streams: Gauge = metrics.open_streams.labels(self.name)
        self.upstream_errors: dict[str, Counter] = {
            kind: metrics.upstream_errors.labels(self.name, kind) for kind in UPSTREAM_ERROR_KINDS
        }

    async def handle(self, request: web.Request, mcp: McpRequest) -> web.StreamResponse:
        """Forward the request and stream the answer back (`gateway.web.forward`)."""
        responder = AiohttpResponder(request)
        await forward(mcp, self, responder)
        assert responder.response is not None  # forward answers, starts a stream, or raises
        return responder.response

    def end_session(self, upstream_id: str) -> None:
        """A session reaped as idle: DELETE it at the upstream, in the background."""
        end_upstream_session(self, upstream_id)

    async def probe(self, within: float) -> bool:
        """Readiness: the upstream accepts connections."""
        return await self.pool.probe(within)

    async def close(self) -> None:
        self.pool.close()
        if self.credential is not None:
            await self.credential.close()


class AiohttpResponder:
    """The `Responder` of a request aiohttp parsed: a `web.Response`, or a prepared stream."""

    __slots__ = ("_request", "_stream", "response")

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._stream: web.StreamResponse | None = None
        self.response: web.StreamResponse | None = None
        """What the handler returns (the middlewares add their headers to one not prepared)."""

    def answer(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.response = web.Response(status=status, body=body, headers=headers)

    async def start(self, status: int, headers: CIMultiDict[str]) -> None:
        self.response = self._stream = web.StreamResponse(status=status, headers=headers)
        await self._stream.prepare(self._request)

    async def relay(self, data: bytes, within: float, *, last: bool = False) -> None:
        assert self._stream is not None
        await write_within(self._stream, data, within, last=last)
