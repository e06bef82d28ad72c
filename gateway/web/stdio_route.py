"""A stdio upstream mounted at a route: its MCP server served as Streamable HTTP (the stateful
2025-11-25 era), one process per session (the processes themselves: `gateway.stdio`).

`initialize` starts a process for the caller and answers with a gateway session id bound to
the caller (the same sealed ids as HTTP upstreams, so ownership, limits, idle reaping and
`DELETE` work the same). Each later request in the session goes to that process only:

- a request is answered on an SSE stream carrying what the server sends while handling it,
  then its response (list responses filtered as for HTTP upstreams);
- a notification, or the client's answer to a server request, gets 202;
- GET opens the session's stream for server messages that belong to no request in flight;
- DELETE stops the process. A process that exits ends its session: the client's next request
  gets 404 and it initializes again.

A client of the stateless 2026-07-28 era probes with `server/discover` (or any request without a
session): it gets 400, and falls back to `initialize` (MCP "Backwards compatibility"). Policy,
step-up challenges and session checks run before the route, in the common pipeline.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway.auth.authenticator import RouteAuthenticator
from gateway.config.upstreams import StdioUpstream
from gateway.errors import (
    RequestError,
    SessionNotFoundError,
    UpstreamError,
    UpstreamTimeoutError,
)
from gateway.observability.logging import get_logger
from gateway.policy.listing import ListFilter, filter_message
from gateway.session.registry import Session, SessionRegistry
from gateway.stdio.pool import StdioProcesses
from gateway.stdio.session import InFlight, Message, StdioSession, StreamBusyError
from gateway.web.edge import response_headers
from gateway.web.exchange import McpRequest, RequestContext
from gateway.web.keys import CONTEXT_KEY, METRICS_KEY
from gateway.web.route import MountedRoute
from gateway.web.sessions import SESSION_HEADER, opens_session
from gateway.web.streaming import EndsEarly, count_ended, drop_client, write_within

log = get_logger("gateway.stdio")
audit = get_logger("gateway.audit")

StdioTracer = Callable[
    [RequestContext, Message], tuple[Message, Callable[[BaseException | None], None]]
]
"""Starts a request's span (`gateway.web.tracing.stdio_exchange`): the request to send, and
what ends the span (with the error, if it failed)."""
SSE_HEADERS = {"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}


class SessionRequiredError(RequestError):
    """A request without a session on a stdio route: only `initialize` may open one. Clients
    of the 2026-07-28 era read the 400 as "fall back to the stateful era"."""

    code = "session_required"
    public_message = "This server needs a session: send initialize (protocol 2025-11-25) first"


class StreamConflictError(RequestError):
    status = 409
    code = "stream_open"
    public_message = "The session already has a GET stream open"


class StdioRoute(MountedRoute):
    """A stdio upstream: its processes, one per gateway session."""

    def __init__(
        self,
        config: StdioUpstream,
        *,
        public_base: str,
        sessions: SessionRegistry,
        authenticator: RouteAuthenticator | None = None,
        trace_stdio: StdioTracer | None = None,
    ) -> None:
        super().__init__(
            config, public_base=public_base, sessions=sessions, authenticator=authenticator
        )
        self._start_timeout = config.timeouts.response
        self._authenticator = authenticator
        """Of the gateway's own tokens, whose open streams end when revoked."""
        self._processes = StdioProcesses(config, self._exited)
        self._owned: dict[str, Session] = {}  # upstream session id (ours) -> its gateway session
        self.trace_stdio = trace_stdio
        """With tracing on: a request's span, and the request naming it as the parent."""

    # -- Route ----------------------------------------------------------------------------------

    def end_session(self, upstream_id: str) -> None:
        """A session reaped as idle: stop its process in the background."""
        self._owned.pop(upstream_id, None)
        self._processes.stop_soon(upstream_id)

    async def probe(self, within: float) -> bool:
        """Readiness: the program can be found (each session starts its own process)."""
        return self._processes.program() is not None

    async def close(self) -> None:
        """Stop every process (gateway shutdown): none is left behind."""
        await self._processes.close()

    # -- HTTP -----------------------------------------------------------------------------------

    async def handle(self, request: web.Request, mcp: McpRequest) -> web.StreamResponse:
        context = mcp.context
        session = context.session
        if session is None:
            if request.method == "POST" and opens_session(mcp):
                assert context.message is not None
                return await self._traced(request, context.message.payload, self._initialize)
            raise SessionRequiredError("no session")
        stdio = self._processes.get(session.upstream_id)
        if stdio is None or not stdio.alive:
            self.sessions.end(session)
            audit.warning("session_rejected", request_id=context.request_id,
                          upstream=context.upstream, reason="process_ended")  # fmt: skip
            raise SessionNotFoundError("session rejected")
        if request.method == "DELETE":
            self.sessions.end(session)
            await self._stop(session.upstream_id)
            audit.info("session_ended", request_id=context.request_id,
                       upstream=context.upstream, by="client")  # fmt: skip
            return web.Response(status=204)
        self.sessions.touch(session)
        if request.method == "GET":
            return await self._stream(request, stdio)
        assert context.message is not None
        if isinstance(context.message.payload, list):  # a process takes one message at a time
            raise RequestError("a batch on a stdio route")
        message: Message = context.message.payload
        if "method" in message and "id" in message:
            return await self._traced(request, message, functools.partial(self._request, stdio))
        if "method" in message:
            await stdio.notify(message)
        elif not await stdio.answer(message):
            raise RequestError("a response to no request of this session")
        return web.Response(status=202)

    async def _traced(
        self,
        request: web.Request,
        message: Message,
        exchange: Callable[[web.Request, Message], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """`exchange` a request with the process; with tracing on, inside a client span that
        the request names as its parent in `params._meta.traceparent`."""
        if self.trace_stdio is None:
            return await exchange(request, message)
        message, end = self.trace_stdio(request[CONTEXT_KEY], message)
        try:
            response = await exchange(request, message)
        except BaseException as error:
            end(error)
            raise
        end(None)
        return response

    async def _initialize(self, request: web.Request, message: Message) -> web.StreamResponse:
        context = request[CONTEXT_KEY]
        upstream_id = secrets.token_urlsafe(24)
        stdio = await self._processes.start(upstream_id, context.limit_key)
        try:
            async with asyncio.timeout(self._start_timeout):
                _, pending = await stdio.request(message)
                answer = await _final(pending)
        except (TimeoutError, ConnectionError) as exc:
            await self._stop(upstream_id)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeoutError("stdio server did not answer initialize") from None
            raise UpstreamError("stdio server closed before answering initialize") from None
        headers = CIMultiDict[str]()
        context.upstream_status = 200
        if answer is not None and "result" in answer and stdio.alive:
            assert context.owner is not None
            session = self.sessions.mint(self.path, upstream_id, context.owner, context.limit_key)
            self._owned[upstream_id] = session
            headers[SESSION_HEADER] = session.session_id
            audit.info("session_started", request_id=context.request_id, upstream=context.upstream)
        else:
            await self._stop(upstream_id)
        response_headers(headers, context)
        body = json.dumps(answer if answer is not None else _ended(context.rpc_id))
        return web.Response(
            status=200, body=body.encode(), content_type="application/json", headers=headers
        )

    async def _request(
        self, stdio: StdioSession, request: web.Request, message: Message
    ) -> web.StreamResponse:
        context = request[CONTEXT_KEY]
        slot = self.sessions.stream_slot(context.limit_key)
        slot.take()  # its answer is a stream: at the limit, refused before the process sees it
        try:
            try:
                child_id, pending = await stdio.request(message)
            except ConnectionError:
                raise UpstreamError("stdio server is not accepting input") from None
            try:
                return await self._relay(request, pending.queue, context.list_filter)
            finally:
                stdio.abandon(child_id)  # if it is still running, its answer has nowhere to go
        finally:
            slot.release()

    async def _stream(self, request: web.Request, stdio: StdioSession) -> web.StreamResponse:
        context = request[CONTEXT_KEY]
        slot = self.sessions.stream_slot(context.limit_key)
        slot.take()
        try:
            try:
                queue = stdio.open_stream()
            except StreamBusyError:
                raise StreamConflictError("GET stream already open") from None
            try:
                return await self._relay(request, queue)
            finally:
                stdio.close_stream(queue)
        finally:
            slot.release()

    async def _relay(
        self,
        request: web.Request,
        queue: asyncio.Queue[Message | None],
        list_filter: ListFilter | None = None,
    ) -> web.StreamResponse:
        """Write each message on `queue` as an event until it ends (None), or the stream ends
        early (`gateway.web.streaming`: token expired or revoked, session ended, a client
        that does not read)."""
        context = request[CONTEXT_KEY]
        headers = CIMultiDict[str](SSE_HEADERS)
        response_headers(headers, context)
        stream = web.StreamResponse(status=200, headers=headers)
        context.upstream_status = 200
        stalled_after = self.sessions.stalled_stream_timeout
        ended_by: list[str] = []

        def end(reason: str) -> None:
            ended_by.append(reason)
            queue.put_nowait(None)

        await stream.prepare(request)
        try:
            with EndsEarly(context, self._authenticator, end):
                while (item := await queue.get()) is not None:
                    if list_filter is not None and "method" not in item:
                        item = _as_message(filter_message(list_filter, item), item)
                    await write_within(stream, _event(item), stalled_after)
            if ended_by:
                self._stream_closed(request, ended_by[0])
            await write_within(stream, b"", stalled_after, last=True)
        except TimeoutError:
            self._stream_closed(request, "client_stalled")
            drop_client(request)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            if context.session is not None:
                self.sessions.touch(context.session)  # idle from the end of its last stream
        return stream

    def _stream_closed(self, request: web.Request, reason: str) -> None:
        count_ended(request.app[METRICS_KEY], self.name, reason)
        log.info("stream_closed", request_id=request[CONTEXT_KEY].request_id,
                 upstream=self.name, reason=reason)  # fmt: skip

    # -- processes ------------------------------------------------------------------------------

    def _exited(self, upstream_id: str) -> None:
        """A process ended on its own: its session ends with it."""
        session = self._owned.pop(upstream_id, None)
        if session is not None and not session.ended:
            self.sessions.end(session)
            log.warning("stdio_session_ended", upstream=self.name, why="process exited")

    async def _stop(self, upstream_id: str) -> None:
        self._owned.pop(upstream_id, None)
        await self._processes.stop(upstream_id)


async def _final(pending: InFlight) -> Message | None:
    """The response of a request whose other messages nobody reads (during `initialize`)."""
    answer = None
    while (item := await pending.queue.get()) is not None:
        if "method" not in item:
            answer = item
    return answer


def _as_message(filtered: object | None, original: Message) -> Message:
    if isinstance(filtered, dict):
        return filtered
    return original


def _event(message: Message) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    return f"event: message\ndata: {data}\n\n".encode()


def _ended(rpc_id: Any) -> Message:
    return {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "error": {"code": -32603, "message": "The MCP server process ended"},
    }
