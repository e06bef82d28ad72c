"""Per-request state, created by the outermost middleware and filled in by the pipeline steps."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth.principal import Principal
from gateway.jsonrpc import JsonRpcId, JsonRpcMessage
from gateway.mcp_request import McpCall
from gateway.policy.listing import ListFilter
from gateway.session.registry import Session
from gateway.session.seal import Owner


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

    @property
    def rpc_id(self) -> JsonRpcId:
        return self.message.rpc_id if self.message is not None else None

    @property
    def rpc_method(self) -> str | None:
        return self.message.method if self.message is not None else None
