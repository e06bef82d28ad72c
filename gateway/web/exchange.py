"""Per-request state (filled in by the pipeline steps), and the request and response as the MCP
pipeline sees them, whichever server parsed the request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from gateway.auth.principal import Principal
from gateway.jsonrpc import JsonRpcId, JsonRpcMessage
from gateway.mcp_request import McpCall
from gateway.policy.listing import ListFilter
from gateway.session.registry import Session
from gateway.session.seal import Owner


class RequestTrace(Protocol):
    """A request's trace (`gateway.web.tracing.ServerTrace`), seen from here."""

    def finish(self, context: RequestContext, status: int, line: dict[str, Any]) -> None:
        """End it with the request's outcome, and add its ids to the access line."""


@dataclass(slots=True)
class RequestContext:
    """What one request has shown so far; read by the access log and by error rendering."""

    request_id: str
    started: float
    client: str | None = None
    """The client's address: the peer's, or the one trusted proxies forwarded
    (`gateway.web.client_address`); for rate and session limits and the access line."""
    upstream: str = "none"
    body: bytes = b""
    message: JsonRpcMessage | None = None
    calls: tuple[McpCall, ...] = ()
    """The inspected JSON-RPC messages of a POST, in body order."""
    principal: Principal | None = None
    list_filter: ListFilter | None = None
    """The list responses to filter, on a route that hides what the caller may not use."""
    call_name: str | None = None
    """The tool name, prompt name or resource URI the request acts on, if any."""
    decision: str | None = None
    required_scopes: frozenset[str] = frozenset()
    """The scopes the decided call needs (for the audit record)."""
    owner: Owner | None = None
    """Who sessions opened by this request belong to."""
    limit_key: object = None
    """What this caller's session and stream limits count against."""
    session: Session | None = None
    """The session named by `Mcp-Session-Id`, once the caller is known to own it."""
    no_store: bool = False
    """An MCP route: no response may be stored by a cache."""
    cors_origin: str | None = None
    """The allowed browser origin the request came from: answer it with CORS headers."""
    vary_origin: bool = False
    upstream_status: int | None = None
    response_started: float | None = None
    release: Callable[[], Awaitable[None]] | None = None
    """Gives back the concurrency slots the request holds (`policy.limits`) when it ends."""
    error_code: str | None = None
    """The code of the error the gateway answered with itself, if any (for the audit)."""
    trace: RequestTrace | None = None
    """The request's server span, with tracing on (`gateway.web.tracing`); else None."""

    @property
    def rpc_id(self) -> JsonRpcId:
        return self.message.rpc_id if self.message is not None else None

    @property
    def rpc_method(self) -> str | None:
        return self.message.method if self.message is not None else None


class BodySource(Protocol):
    """A request body as it arrives: aiohttp's `StreamReader`, or the lean plane's reader."""

    def is_eof(self) -> bool: ...

    def read_nowait(self, n: int = -1) -> bytes: ...

    async def readany(self) -> bytes: ...


RawHeaders = Sequence[tuple[bytes, bytes]]
_NO_HEADERS = CIMultiDictProxy(CIMultiDict[str]())


class McpRequest:
    """An MCP request as the pipeline and the forwarder see it, whichever server parsed it
    (aiohttp, or the lean data plane of `gateway.web.plane`): the parts they read, no more."""

    __slots__ = (
        "content",
        "content_length",
        "context",
        "headers",
        "method",
        "raw_headers",
        "raw_path",
        "transport",
    )

    def __init__(
        self,
        context: RequestContext,
        method: str,
        raw_path: str,
        headers: MultiMapping[str],
        raw_headers: RawHeaders,
        content_length: int | None,
        content: BodySource,
        transport: asyncio.Transport | None,
    ) -> None:
        self.context = context
        self.method = method
        self.raw_path = raw_path
        """Path and query as the client sent them."""
        self.headers = headers
        self.raw_headers = raw_headers
        self.content_length = content_length
        self.content = content
        self.transport = transport

    def forget(self, *, keep_payload: bool) -> None:
        """Let go of what a relayed stream reads no more once the upstream has answered (it may
        stay open for hours): the headers (a bearer token among them), the body, and the parsed
        message's payload unless `keep_payload` (the audit record, written when the request
        ends, reads its arguments). Its id and method stay, for the access line."""
        self.headers = _NO_HEADERS
        self.raw_headers = ()
        context = self.context
        context.body = b""
        message = context.message
        if message is not None and not keep_payload:
            context.message = JsonRpcMessage(None, message.rpc_id, message.method)

    def drop(self) -> None:
        """Close the client's connection now, discarding what it has not read."""
        if self.transport is not None:
            self.transport.abort()


class Responder(Protocol):
    """Where the answer to an `McpRequest` goes: a whole response, or a stream of chunks.

    `start` sends the status and headers of a stream; `relay` writes a chunk (and with `last`
    ends the stream), waiting while the client's buffers are full, and raises TimeoutError if
    the client reads nothing for `within` seconds."""

    def answer(self, status: int, headers: CIMultiDict[str], body: bytes) -> None: ...

    async def start(self, status: int, headers: CIMultiDict[str]) -> None: ...

    async def relay(self, data: bytes, within: float, *, last: bool = False) -> None: ...
