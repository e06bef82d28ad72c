"""The last step: forward the request upstream and stream the response back as it arrives."""

from __future__ import annotations

import asyncio

from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import UnfilterableResponseError, UpstreamError, UpstreamStreamError
from gateway.observability.logging import get_logger
from gateway.policy.listing import (
    MAX_BYTES as LIST_MAX_BYTES,
)
from gateway.policy.listing import (
    Allowed,
    ListFilterError,
    SseListFilter,
    filter_json_body,
)
from gateway.proxy.connection import UpstreamResponse
from gateway.proxy.headers import response_headers
from gateway.web.keys import CONTEXT_KEY
from gateway.web.route import UpstreamRoute

log = get_logger("gateway.proxy")


async def forward(request: web.Request, route: UpstreamRoute) -> web.StreamResponse:
    """Send the request to the route's upstream; relay status, headers and body unchanged.

    A body that has fully arrived with the headers is answered in one response; anything else
    (SSE above all) is relayed chunk by chunk. If the client goes away, the upstream connection
    is closed, which cancels the upstream request.
    """
    context = request[CONTEXT_KEY]
    loop = asyncio.get_running_loop()
    target = route.pool.path
    if request.query_string:
        target += ("&" if "?" in target else "?") + request.query_string
    body = context.body
    head = route.head_builder.build(
        request.method,
        target,
        request.raw_headers,
        len(body) if request.method == "POST" else None,
        context.request_id,
    )
    sent = loop.time()
    try:
        conn, upstream = await route.pool.request(
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
    try:
        received = loop.time()
        route.upstream_duration.observe(received - sent)
        context.upstream_status = upstream.status
        headers, event_stream = response_headers(upstream.raw_headers)
        headers["X-Request-Id"] = context.request_id
        whole = upstream.take_body()
        sse_filter = None
        if context.list_filter is not None and context.message is not None:
            method, rpc_id = context.calls[0].method, context.message.rpc_id
            assert rpc_id is not None
            if not event_stream:
                whole = await _filtered_body(upstream, whole, method, rpc_id, context.list_filter)
            else:
                sse_filter = SseListFilter(method, rpc_id, context.list_filter)
                if whole is not None:  # the whole stream has already arrived
                    try:
                        whole = sse_filter.feed(whole) + sse_filter.finish()
                    except ListFilterError as exc:
                        raise UnfilterableResponseError(str(exc)) from None
        if whole is not None:
            context.response_started = received
            route.request_duration.observe(received - context.started)
            return web.Response(status=upstream.status, body=whole, headers=headers)
        return await _relay(request, route, upstream, headers, event_stream, sse_filter)
    finally:
        route.pool.release(conn)


async def _filtered_body(
    upstream: UpstreamResponse, body: bytes | None, method: str, rpc_id: str | int, allowed: Allowed
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
        return filter_json_body(method, rpc_id, body, allowed)
    except (ListFilterError, UpstreamStreamError) as exc:
        raise UnfilterableResponseError(str(exc)) from None


async def _relay(
    request: web.Request,
    route: UpstreamRoute,
    upstream: UpstreamResponse,
    headers: CIMultiDict[str],
    event_stream: bool,
    sse_filter: SseListFilter | None = None,
) -> web.StreamResponse:
    """Relay a body chunk by chunk; each SSE event is written as soon as it arrives (a list
    response's events pass through `sse_filter`, which holds back only incomplete events)."""
    context = request[CONTEXT_KEY]
    stream = web.StreamResponse(status=upstream.status, headers=headers)
    await stream.prepare(request)
    context.response_started = asyncio.get_running_loop().time()
    route.request_duration.observe(context.response_started - context.started)
    if event_stream:
        route.open_streams.inc()
    try:
        while chunk := await upstream.read():
            if sse_filter is not None:
                chunk = sse_filter.feed(chunk)
            if chunk:
                await stream.write(chunk)
        if sse_filter is not None and (tail := sse_filter.finish()):
            await stream.write(tail)
    except (UpstreamStreamError, ListFilterError):
        # Headers are gone already: all that is left is to cut the client's connection so it
        # sees a truncated response rather than a clean end.
        route.upstream_errors["stream"].inc()
        log.warning("upstream_stream_failed", request_id=context.request_id, upstream=route.name)
        if request.transport is not None:
            request.transport.close()
        return stream
    except ConnectionResetError:
        return stream  # the client went away mid-stream; releasing the pool closes upstream
    finally:
        if event_stream:
            route.open_streams.dec()
    await stream.write_eof()
    return stream
