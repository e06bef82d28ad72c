"""Per-request state, created by the outermost middleware and filled in by the pipeline steps."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth.principal import Principal
from gateway.jsonrpc import JsonRpcId, JsonRpcMessage


@dataclass(slots=True)
class RequestContext:
    """What one request has shown so far; read by the access log and by error rendering."""

    request_id: str
    started: float
    upstream: str = "none"
    body: bytes = b""
    message: JsonRpcMessage | None = None
    principal: Principal | None = None
    call_name: str | None = None
    """The tool name, prompt name or resource URI the request acts on, if any."""
    decision: str | None = None
    upstream_status: int | None = None
    response_started: float | None = None

    @property
    def rpc_id(self) -> JsonRpcId:
        return self.message.rpc_id if self.message is not None else None

    @property
    def rpc_method(self) -> str | None:
        return self.message.method if self.message is not None else None
