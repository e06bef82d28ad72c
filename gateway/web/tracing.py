"""The spans of one MCP request (tracing on): a server span from the request's first pipeline
step to its access line, with child spans for authentication, the policy decision and the
upstream exchange.

Only built when `tracing` is on (`gateway.web.routes.route_tracers`): with it off no step, route
or request holds anything of this module. Parents are passed explicitly (no context variable is
attached), so a span never outlives or leaks into another request.

The trace continued is a trusted client's (`tracing.trusted_clients`): its `traceparent` header,
else the `params._meta.traceparent` of its request (MCP 2026-07-28, OpenTelemetry trace context);
anyone else's request starts a new trace. Upstreams get the gateway's span as their parent, in
the header for HTTP upstreams (and in `_meta` where the client had put its own there), in
`_meta` for stdio ones.

Attributes are what the access line already carries, cut the same way (`loggable`): route, HTTP
method, status, JSON-RPC method, tool/prompt name or resource URI, decision. Never a token, a
header value, an argument, a query string or a session id; an error is its stable code, never a
message that could carry request data.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, set_span_in_context

from gateway.config.tracing import TracingSettings
from gateway.errors import GatewayError
from gateway.mcp_methods import MCP_METHODS
from gateway.observability.logging import loggable
from gateway.observability.tracing import Tracing
from gateway.web.exchange import McpRequest, RequestContext
from gateway.web.forward import Send, Sent
from gateway.web.pipeline import Step
from gateway.web.routes import RouteTracers

if TYPE_CHECKING:
    from gateway.web.http_route import HttpRoute

NAME_ATTRIBUTES = {
    "tools/call": "gen_ai.tool.name",
    "prompts/get": "gen_ai.prompt.name",
    "resources/read": "mcp.resource.uri",
    "resources/subscribe": "mcp.resource.uri",
    "resources/unsubscribe": "mcp.resource.uri",
}
"""Where the called name goes (OpenTelemetry semantic conventions for MCP)."""


class StepRecord(NamedTuple):
    """A pipeline step that ran before the server span was opened, to become its child."""

    name: str
    start: int
    end: int
    error: str | None
    decision: str | None


class ServerTrace:
    """One request's server span (`RequestContext.trace`), ended with its access line.

    The span is opened when first needed (the upstream exchange, or the end of the request):
    by then the body has been read, so a trusted client's trace context in `params._meta`
    (where MCP clients put it) can be its parent when no `traceparent` header is. It starts
    when the request did, and the steps that ran before it become its children, with their
    own times."""

    __slots__ = ("_attributes", "_header_parent", "_name", "_parent", "_pending", "_start",
                 "_trusted", "span", "tracing")  # fmt: skip

    def __init__(
        self,
        tracing: Tracing,
        name: str,
        attributes: dict[str, str],
        header_parent: Context | None,
        trusted: bool,
    ) -> None:
        self.tracing = tracing
        self._name = name
        self._attributes = attributes
        self._header_parent = header_parent
        self._trusted = trusted
        self._start = time.time_ns()
        self._pending: list[StepRecord] = []
        self._parent: Context | None = None
        self.span: Span | None = None

    def record(self, step: StepRecord) -> None:
        """A step that ran: a child span now, or once the server span is opened."""
        if self._parent is None:
            self._pending.append(step)
        else:
            self._emit(step, self._parent)

    def child(self, context: RequestContext, name: str, kind: SpanKind = SpanKind.INTERNAL) -> Span:
        return self.tracing.tracer.start_span(name, context=self._opened(context), kind=kind)

    def finish(self, context: RequestContext, status: int, line: dict[str, Any]) -> None:
        """End the server span with what the request showed; its ids go in the access line."""
        self._opened(context)
        span = self.span
        assert span is not None
        ids = span.get_span_context()
        line["trace_id"] = format(ids.trace_id, "032x")
        line["span_id"] = format(ids.span_id, "016x")
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            describe(span, context)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)
        span.end()

    def _opened(self, context: RequestContext) -> Context:
        """The server span as a parent, opened now if it is not yet."""
        if self._parent is not None:
            return self._parent
        parent = self._header_parent
        if parent is None and self._trusted:
            parent = self.tracing.meta_parent(context.message.payload if context.message else None)
        self.span = self.tracing.tracer.start_span(
            self._name,
            context=parent,
            kind=SpanKind.SERVER,
            start_time=self._start,
            attributes=self._attributes,
        )
        self._parent = set_span_in_context(self.span)
        for step in self._pending:
            self._emit(step, self._parent)
        self._pending.clear()
        return self._parent

    def _emit(self, step: StepRecord, parent: Context) -> None:
        span = self.tracing.tracer.start_span(step.name, context=parent, start_time=step.start)
        if step.error is not None:
            span.set_attribute("error.type", step.error)
            span.set_status(StatusCode.ERROR)
        if step.decision is not None:
            span.set_attribute("gateway.decision", step.decision)
        span.end(end_time=step.end)


def describe(span: Span, context: RequestContext) -> None:
    """The request's JSON-RPC method, called name and decision, as the access line has them."""
    method = context.rpc_method
    if method is not None:
        span.set_attribute("mcp.method.name", loggable(method))
    if context.call_name is not None:
        key = NAME_ATTRIBUTES.get(method or "", "gateway.call.name")
        span.set_attribute(key, loggable(context.call_name))
    if context.decision is not None:
        span.set_attribute("gateway.decision", context.decision)


def failed(span: Span, error: BaseException) -> None:
    """An error as span status: the gateway's stable code, or the exception's class name."""
    code = error.code if isinstance(error, GatewayError) else type(error).__name__
    span.set_attribute("error.type", code)
    span.set_status(StatusCode.ERROR)


def trace_of(context: RequestContext) -> ServerTrace | None:
    return cast(ServerTrace | None, context.trace)


def start_step(tracing: Tracing, route_path: str, route_name: str) -> Step:
    """The first step of every request to a route: its trace, continuing a trusted client's
    (`traceparent`, else `params._meta.traceparent`) or a new one."""

    async def start_trace(request: McpRequest) -> None:
        context = request.context
        method = request.method
        trusted = tracing.trusts(context.client)
        header_parent = tracing.parent_of(request.headers) if trusted else None
        attributes = {"http.request.method": method, "http.route": route_path,
                      "gateway.route": route_name}  # fmt: skip
        name = f"{method} {route_path}"
        context.trace = ServerTrace(tracing, name, attributes, header_parent, trusted)

    return start_trace


def traced_step(name: str, step: Step) -> Step:
    """`step`, recorded as a child span of the request's server span."""

    async def traced(request: McpRequest) -> None:
        trace = trace_of(request.context)
        if trace is None:  # the start step always runs first; nothing to be a child of
            await step(request)
            return
        start, error = time.time_ns(), None
        try:
            await step(request)
        except BaseException as exc:
            error = exc.code if isinstance(exc, GatewayError) else type(exc).__name__
            raise
        finally:
            end = time.time_ns()
            trace.record(StepRecord(name, start, end, error, request.context.decision))

    return traced


async def upstream_exchange(request: McpRequest, route: HttpRoute, send: Send) -> Sent:
    """`send` to an HTTP upstream inside a client span (until the response head has arrived),
    which the upstream's `traceparent` names as the parent (the client's own is not passed)."""
    trace = trace_of(request.context)
    if trace is None:
        return await send(request, route, ())
    span = trace.child(request.context, request.method, SpanKind.CLIENT)
    if span.is_recording():
        span.set_attribute("http.request.method", request.method)
        span.set_attribute("gateway.route", route.name)
        span.set_attribute("server.address", route.pool.host)
        span.set_attribute("server.port", route.pool.port)
    carrier = trace.tracing.carrier(span)
    replace_body_trace_context(request.context, carrier)
    context = [(k.encode("ascii"), v.encode("ascii")) for k, v in carrier.items()]
    try:
        sent = await send(request, route, context)
    except BaseException as error:
        failed(span, error)
        span.end()
        raise
    status = sent[1].status
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)
    span.end()
    return sent


def replace_body_trace_context(context: RequestContext, carrier: dict[str, str]) -> None:
    """Messages of a POST body that carry trace context in `params._meta` (reserved for it
    whatever the transport, MCP 2026-07-28) get the gateway's instead, as in the headers: a
    client's own never reaches the upstream. Other bodies are forwarded byte for byte."""
    if context.message is None:
        return
    payload = context.message.payload
    messages = payload if isinstance(payload, list) else [payload]
    if not any(_carries_trace_context(message) for message in messages):
        return
    replaced = [
        with_trace_context(m, carrier) if _carries_trace_context(m) else m for m in messages
    ]
    document = replaced if isinstance(payload, list) else replaced[0]
    context.body = json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode()


def _carries_trace_context(message: dict[str, Any]) -> bool:
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and ("traceparent" in meta or "tracestate" in meta)


def stdio_exchange(
    context: RequestContext, message: dict[str, Any]
) -> tuple[dict[str, Any], Callable[[BaseException | None], None]]:
    """A client span for a request to a stdio server (named after its MCP method, `other` for
    any other), and the request with it as the parent in `params._meta.traceparent` (MCP
    2026-07-28 "General fields: `_meta`", OpenTelemetry trace context; the client's own trace
    context there is replaced); and what ends the span."""
    trace = trace_of(context)
    if trace is None:
        return message, _no_span
    method = message.get("method")
    name = method if isinstance(method, str) and method in MCP_METHODS else "other"
    span = trace.child(context, name, SpanKind.CLIENT)
    if span.is_recording():
        span.set_attribute("gateway.route", context.upstream)
        describe(span, context)

    def end(error: BaseException | None) -> None:
        if error is not None:
            failed(span, error)
        span.end()

    return with_trace_context(message, trace.tracing.carrier(span)), end


def _no_span(error: BaseException | None) -> None:
    pass


def with_trace_context(message: dict[str, Any], carrier: dict[str, str]) -> dict[str, Any]:
    """`message` with `carrier` as its `params._meta` trace context (a copy; a message whose
    `params` or `_meta` is not an object is left as it is)."""
    params = message.get("params", {})
    meta = params.get("_meta", {}) if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return message
    meta = {k: v for k, v in meta.items() if k not in ("traceparent", "tracestate")}
    return {**message, "params": {**params, "_meta": {**meta, **carrier}}}


class RouteTracing:
    """Tracing as the app wires it in (`gateway.web.routes.route_tracers`)."""

    def __init__(self, settings: TracingSettings) -> None:
        self.tracing = tracing = Tracing(settings)
        self.close_at_cleanup = tracing.close_at_cleanup
        self.tracers = RouteTracers(
            start=functools.partial(start_step, tracing),
            traced=traced_step,
            http=upstream_exchange,
            stdio=stdio_exchange,
        )
