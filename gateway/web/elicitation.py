"""A URL-mode elicitation as each protocol era spells it, for `ElicitationRequiredError`.

- 2025-11-25 and earlier (sessions): the JSON-RPC error -32042 (URL elicitation required) with
  `data.elicitations`, one URL-mode elicitation (`mode`, `elicitationId`, `url`, `message`).
  Its message names the URL too, so a client that does not know the error still shows where
  to go.
- 2026-07-28 (stateless): on `tools/call`, `resources/read` and `prompts/get` (the requests
  that may carry one, MRTR "Supported Requests"), to a client whose request declares URL
  elicitation in its `_meta` client capabilities, an `input_required` result whose
  `inputRequests` holds one URL-mode `elicitation/create` (no `elicitationId`: removed in
  2026-07-28; no `requestState`: the retry needs none, the grant is in the gateway's store).
  Any other request or client gets a JSON-RPC error naming the URL (MRTR: a server must not
  send input requests a client has not declared support for).

All answers are HTTP 200 (a JSON-RPC answer, not a transport failure) with `Cache-Control:
no-store`, and carry the request's id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from gateway.errors import ElicitationRequiredError
from gateway.jsonrpc import JsonRpcId
from gateway.mcp_request import is_stateless_era
from gateway.web.exchange import RequestContext

URL_ELICITATION_REQUIRED: Final = -32042
"""MCP 2025-11-25's error code (2026-07-28 "Error Codes": 2025-11-25 only)."""
NOT_ELICITABLE: Final = -31060
"""The gateway's code for "open this URL, then retry" when no elicitation can be sent."""
INPUT_REQUIRED_METHODS: Final = frozenset({"tools/call", "resources/read", "prompts/get"})
_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"


def may_elicit(context: RequestContext) -> bool:
    """Whether this request can be answered with an elicitation the client acts on: one
    request of a method that may carry an `input_required` result (at 2025-11-25 the -32042
    error is for these too: it is what a tool call fails with)."""
    calls = context.calls
    return (
        len(calls) == 1
        and calls[0].kind == "request"
        and calls[0].method in (INPUT_REQUIRED_METHODS)
    )


def elicitation_body(
    error: ElicitationRequiredError, context: RequestContext, version: str | None
) -> bytes:
    """The answer's JSON body for the request's era (`version`: its `MCP-Protocol-Version`)."""
    rpc_id = context.rpc_id
    text = f"{error.message}: open {error.url} in a browser, then retry"
    if not is_stateless_era(version):
        elicitation = {
            "mode": "url",
            "elicitationId": error.elicitation_id,
            "url": error.url,
            "message": error.message,
        }
        data = {"reason": error.code, "elicitations": [elicitation]}
        return _error(rpc_id, URL_ELICITATION_REQUIRED, text, data)
    if may_elicit(context) and _declares_url_elicitation(context):
        request = {
            "method": "elicitation/create",
            "params": {"mode": "url", "message": error.message, "url": error.url},
        }
        result = {"resultType": "input_required", "inputRequests": {error.elicitation_id: request}}
        return _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result})
    data = {"reason": "url_elicitation_unsupported", "url": error.url}
    return _error(rpc_id, NOT_ELICITABLE, text, data)


def _declares_url_elicitation(context: RequestContext) -> bool:
    """`params._meta["io.modelcontextprotocol/clientCapabilities"].elicitation.url` is an
    object (2026-07-28: capabilities travel with every request)."""
    message = context.message
    payload = message.payload if message is not None else None
    capabilities = _member(_member(_member(payload, "params"), "_meta"), _CAPABILITIES_KEY)
    return isinstance(_member(_member(capabilities, "elicitation"), "url"), Mapping)


def _member(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, Mapping) else None


def _error(rpc_id: JsonRpcId, code: int, message: str, data: dict[str, Any]) -> bytes:
    return _dumps(
        {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message, "data": data}}
    )


def _dumps(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
