"""The last step: forward the request upstream and stream the response back as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from gateway.audit.trail import AUDIT
from gateway.auth.bearer import bearer_token
from gateway.errors import (
    ElicitationRequiredError,
    GatewayError,
    UnfilterableResponseError,
    UpstreamError,
    UpstreamStreamError,
)
from gateway.observability.logging import get_logger
from gateway.policy.listing import (
    MAX_BYTES as LIST_MAX_BYTES,
)
from gateway.policy.listing import (
    ListFilter,
    ListFilterError,
    SseListFilter,
    filter_json_body,
)
from gateway.proxy.connection import UpstreamConnection, UpstreamResponse
from gateway.proxy.headers import header_pairs, upstream_response_head
from gateway.session.registry import StreamSlot
from gateway.upstream_auth.base import Caller
from gateway.web.edge import response_headers
from gateway.web.elicitation import elicitation_body, may_elicit
from gateway.web.exchange import McpRequest, Responder
from gateway.web.middleware import new_request_id
from gateway.web.sessions import SESSION_HEADER, after_upstream_response
from gateway.web.streaming import EndsEarly, count_ended

if TYPE_CHECKING:  # the route calls these functions: a type-only import, no cycle
    from gateway.web.http_route import HttpRoute

log = get_logger("gateway.proxy")

Sent = tuple[UpstreamConnection, UpstreamResponse]
AddedHeaders = Sequence[tuple[bytes, bytes]]
Send = Callable[[McpRequest, "HttpRoute", AddedHeaders], Awaitable[Sent]]
UpstreamTracer = Callable[[McpRequest, "HttpRoute", Send], Awaitable[Sent]]
"""Sends a request upstream inside a span (`gateway.web.tracing.upstream_exchange`)."""


async def forward(request: McpRequest, route: HttpRoute, responder: Responder) -> None:
    """Send the request to the route's upstream; relay status, headers and body unchanged
    to `responder`, except that session ids are mapped (the client sees the gateway's, the
    upstream its own).

    A body that has fully arrived with the headers is answered in one response; anything else
    (SSE above all) is relayed chunk by chunk. If the client goes away, the upstream connection
    is closed, which cancels the upstream request.

    Every response stream counts against the caller's stream limits while it is open. Whether
    a POST's answer streams is known only once the upstream answers, so a GET, or a POST that
    carries a request, takes its place in the limits before it is forwarded (at the limit: 429
    or 503, and nothing reaches the upstream) and gives it back as soon as the answer turns
    out not to be an event stream. A POST of notifications or responses only is never refused
    (it could not cancel or answer anything at the limit otherwise); should its answer stream,
    that stream counts.
    """
    context = request.context
    slot = route.sessions.stream_slot(context.limit_key)
    if request.method == "GET" or any(call.kind == "request" for call in context.calls):
        slot.take()
    try:
        await _exchange(request, route, slot, responder)
    finally:
        slot.release()


async def _exchange(
    request: McpRequest, route: HttpRoute, slot: StreamSlot, responder: Responder
) -> None:
    context = request.context
    loop = asyncio.get_running_loop()
    sent = loop.time()
    if route.trace_upstream is None:
        conn, upstream = await _send(request, route)
    else:  # tracing on: inside a client span, which `traceparent` names as the parent
        conn, upstream = await route.trace_upstream(request, route, _send)
    try:
        received = loop.time()
        route.upstream_duration.observe(received - sent)
        context.upstream_status = upstream.status
        headers, event_stream, upstream_session = upstream_response_head(upstream.raw_headers)
        if event_stream:
            slot.take(enforce=False)  # a no-op if it was taken before forwarding
        else:
            slot.release()
        headers["X-Request-Id"] = context.request_id
        if upstream_session is not None or context.session is not None:
            session_id = after_upstream_response(
                request, route.sessions, route.path, upstream.status, upstream_session
            )
            if session_id is not None:
                headers[SESSION_HEADER] = session_id
        whole, sse_filter = await _filtered(upstream, context.list_filter, event_stream)
        if whole is not None:
            context.response_started = received
            route.request_duration.observe(received - context.started)
            responder.answer(upstream.status, headers, whole)
            return
        # A stream may be open for hours: what it reads no more goes now.
        request.forget(keep_payload=AUDIT.trail is not None)
        upstream.forget_headers()
        await _relay(request, route, responder, conn, upstream, headers, event_stream, sse_filter)
    finally:
        route.pool.release(conn)


async def _send(request: McpRequest, route: HttpRoute, trace_context: AddedHeaders = ()) -> Sent:
    """Send the request upstream (query string as the client encoded it); wait for the head.
    `trace_context`: the gateway's own `traceparent` and `tracestate` (tracing on)."""
    context = request.context
    target = route.pool.path
    query = request.raw_path.partition("?")[2]  # as the client encoded it, never decoded
    if query:
        target += ("&" if "?" in target else "?") + query
    body = context.body
    added = _added_headers(request, route, trace_context)
    if route.credential is not None:
        credential = await _credential(request, route)
        if credential is not None:
            added += header_pairs([(route.credential.header, credential)])
    head = route.head_builder.build(
        request.method,
        target,
        request.raw_headers,
        len(body) if request.method == "POST" else None,
        context.request_id,
        added,
    )
    try:
        return await route.pool.request(
            head, body, route.response_timeout, idempotent=request.method != "POST"
        )
    except UpstreamError as error:
        route.upstream_errors[error.kind].inc()
        log.warning(
            "upstream_failed",
            request_id=context.request_id,
            upstream=route.name,
            error=error.code,
            detail=error.detail,
        )
        raise


async def _credential(request: McpRequest, route: HttpRoute) -> str | None:
    """The route's credential for the caller (`upstream_auth`; the route requires a token).
    An elicitation it asks for is rendered here, where the request's era is known."""
    assert route.credential is not None
    context = request.context
    principal = context.principal
    if principal is None:  # config refuses upstream_auth on anonymous routes
        raise GatewayError("upstream_auth on a route without a caller")
    authorization = request.headers.getall("Authorization", [])
    token = bearer_token(authorization, 65_536) or ""  # validated already, within its limit
    try:
        return await route.credential.value(Caller(principal, token, may_elicit(context)))
    except ElicitationRequiredError as error:
        version = request.headers.get("MCP-Protocol-Version")
        error.body = elicitation_body(error, context, version)
        raise


async def _filtered(
    upstream: UpstreamResponse, lists: ListFilter | None, event_stream: bool
) -> tuple[bytes | None, SseListFilter | None]:
    """The body if it has all arrived (None if not), with what the caller may not use removed
    from a list response; and the filter the rest of an event stream goes through."""
    whole = upstream.take_body()
    if lists is None:
        return whole, None
    if not event_stream:
        return await _filtered_body(upstream, whole, lists), None
    sse_filter = SseListFilter(lists)
    if whole is not None:  # the whole stream has already arrived
        try:
            whole = sse_filter.feed(whole) + sse_filter.finish()
        except ListFilterError as exc:
            raise UnfilterableResponseError(str(exc)) from None
    return whole, sse_filter


def _added_headers(
    request: McpRequest, route: HttpRoute, trace_context: AddedHeaders = ()
) -> list[tuple[bytes, bytes]]:
    """Headers the gateway sets upstream: its trace context (tracing on), the upstream's own
    session id and, within a session only, `Last-Event-ID` (resumption never crosses sessions
    or principals); the caller's identity where the route asks for it."""
    context = request.context
    added: list[tuple[bytes, bytes]] = [*trace_context]
    if context.session is not None:
        added.append((b"Mcp-Session-Id", context.session.upstream_id.encode("ascii")))
        last_event = [v for n, v in request.raw_headers if n.lower() == b"last-event-id"]
        if len(last_event) == 1:
            added.append((b"Last-Event-ID", last_event[0]))
    principal = context.principal
    if route.identity_headers and principal is not None:
        claims = {
            "subject": principal.subject,
            "client_id": principal.client_id,
            "issuer": principal.issuer,
            "scopes": " ".join(sorted(principal.scopes)),
        }
        added += header_pairs(
            (name, value) for claim, name in route.identity_headers
            if (value := claims[claim]) is not None
        )  # fmt: skip
    return added


async def _filtered_body(
    upstream: UpstreamResponse, body: bytes | None, lists: ListFilter
) -> bytes:
    """A JSON list response with what the caller may not use removed (read whole, bounded)."""
    try:
        if body is None:
            chunks, size = [], 0
            while chunk := await upstream.read():
                size += len(chunk)
                if size > LIST_MAX_BYTES:
                    raise ListFilterError("list response too large to filter")
                chunks.append(chunk)
            body = b"".join(chunks)
        return filter_json_body(lists, body)
    except (ListFilterError, UpstreamStreamError) as exc:
        raise UnfilterableResponseError(str(exc)) from None


async def _relay(
    request: McpRequest,
    route: HttpRoute,
    stream: Responder,
    conn: UpstreamConnection,
    upstream: UpstreamResponse,
    headers: CIMultiDict[str],
    event_stream: bool,
    sse_filter: SseListFilter | None = None,
) -> None:
    """Relay a body chunk by chunk; each SSE event is written as soon as it arrives (a list
    response's events pass through `sse_filter`, which holds back only incomplete events).

    An event stream ends (cleanly, so the client may resume with a fresh token) when the
    token that opened it expires or is revoked, or its session ends. A client that reads
    nothing for `stalled_stream_timeout` seconds while a write waits on it loses its
    connection, and the upstream connection is closed, not pooled.
    """
    context = request.context
    response_headers(headers, context)  # sent now: the edge cannot add them afterwards
    await stream.start(upstream.status, headers)
    headers.clear()  # written (and copied by aiohttp's responder): not held for the stream
    loop = asyncio.get_running_loop()
    context.response_started = loop.time()
    route.request_duration.observe(context.response_started - context.started)
    stalled_after = route.sessions.stalled_stream_timeout
    ended_by: list[str] = []

    def end_stream(reason: str) -> None:
        ended_by.append(reason)
        conn.close()  # the pending read fails; the loop below then ends the client's stream

    guard = EndsEarly(context, route.authenticator, end_stream) if event_stream else nullcontext()
    if event_stream:
        route.open_streams.inc()
    try:
        with guard:
            while chunk := await upstream.read():
                if sse_filter is not None:
                    chunk = sse_filter.feed(chunk)
                if chunk:
                    await stream.relay(chunk, stalled_after)
            tail = sse_filter.finish() if sse_filter is not None else b""
            await stream.relay(tail, stalled_after, last=True)
    except (UpstreamStreamError, ListFilterError):
        await _relay_broken(request, route, stream, ended_by)
    except TimeoutError:
        _relay_stalled(request, route, conn)
    except ConnectionResetError:
        pass  # the client went away mid-stream; releasing the pool closes upstream
    finally:
        if event_stream:
            route.open_streams.dec()
            if context.session is not None:
                route.sessions.touch(context.session)  # idle from the end of its last stream


async def _relay_broken(
    request: McpRequest, route: HttpRoute, stream: Responder, ended_by: list[str]
) -> None:
    """The upstream read failed: because the gateway ended the stream (end it cleanly), or
    because the upstream failed (cut the client's connection)."""
    if ended_by:
        _stream_closed(request, route, ended_by[0])
        try:
            await stream.relay(b"", route.sessions.stalled_stream_timeout, last=True)
        except TimeoutError:
            request.drop()
        except ConnectionResetError:
            pass
        return
    # Headers are gone already: all that is left is to cut the client's connection so it
    # sees a truncated response rather than a clean end.
    route.upstream_errors["stream"].inc()
    log.warning(
        "upstream_stream_failed", request_id=request.context.request_id, upstream=route.name
    )
    if request.transport is not None:
        request.transport.close()


def _relay_stalled(request: McpRequest, route: HttpRoute, conn: UpstreamConnection) -> None:
    """The client has read nothing for `stalled_stream_timeout`: drop it (what it has not read
    is lost anyway), and the upstream connection with it rather than pool a busy connection."""
    _stream_closed(request, route, "client_stalled")
    conn.close()
    request.drop()


def _stream_closed(request: McpRequest, route: HttpRoute, reason: str) -> None:
    count_ended(route.metrics, route.name, reason)
    log.info(
        "stream_closed",
        request_id=request.context.request_id,
        upstream=route.name,
        reason=reason,
    )


END_TIMEOUT = 5.0
"""Seconds a best-effort upstream DELETE for a reaped session may take."""
_background: set[asyncio.Task[None]] = set()


def end_upstream_session(route: HttpRoute, upstream_id: str) -> None:
    """Tell the upstream that a session the gateway ended is over (a DELETE in the background,
    best effort: the gateway refuses the session id from now on either way)."""
    task = asyncio.get_running_loop().create_task(_delete_upstream_session(route, upstream_id))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _delete_upstream_session(route: HttpRoute, upstream_id: str) -> None:
    added = [(b"Mcp-Session-Id", upstream_id.encode("ascii"))]
    head = route.head_builder.build("DELETE", route.pool.path, (), None, new_request_id(), added)
    try:
        conn, upstream = await route.pool.request(head, b"", END_TIMEOUT, idempotent=True)
    except UpstreamError as error:
        log.info("upstream_session_end_failed", upstream=route.name, error=error.code)
        return
    try:
        async with asyncio.timeout(END_TIMEOUT):
            while await upstream.read():
                pass
    except (TimeoutError, UpstreamStreamError):
        pass
    finally:
        route.pool.release(conn)
