"""MCP request inspection: what a POSTed JSON-RPC body asks for, checked against its headers.

Pure functions over the decoded body and the request headers; no I/O. Authorization decisions
downstream read the returned `McpCall`s, which come from the body only; the headers are checked
against the body (MCP 2026-07-28, Streamable HTTP, "Server Validation") so that no component that
routes on a header can see a different request than the one the upstream executes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from gateway.jsonrpc import JsonRpcId, coerce_id

INVALID_REQUEST: Final = -32600
INVALID_PARAMS: Final = -32602
HEADER_MISMATCH: Final = -32020
"""MCP 2026-07-28 `HeaderMismatch`, Streamable HTTP "Server Validation"."""

DEFAULT_PROTOCOL_VERSION: Final = "2025-03-26"
"""Assumed without an `MCP-Protocol-Version` header (2025-11-25 transports)."""
BATCH_PROTOCOL_VERSION: Final = "2025-03-26"
"""The only revision with JSON-RPC batching."""
FIRST_MODERN_VERSION: Final = "2026-07-28"
"""From here on every request mirrors its metadata into headers (versioning, "Terminology")."""

NAME_FIELDS: Final[Mapping[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}
"""The params field that names what a method acts on."""
REMOVED_IN_MODERN: Final = frozenset({"resources/subscribe", "resources/unsubscribe"})
"""Replaced by `subscriptions/listen` in 2026-07-28 ("changelog" item 4): unknown methods there,
which the upstream answers itself (404, -32601), so their name is read but not required."""
NAME_HEADER_REQUIRED: Final = frozenset({"tools/call", "resources/read", "prompts/get"})
"""Methods whose requests MUST carry `Mcp-Name` ("Standard Request Headers" table)."""

_META_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
_DATE_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# RFC 9110 field-value characters: visible ASCII, space, horizontal tab.
_HEADER_SAFE = re.compile(r"[\x20-\x7e\t]*")
_JSON_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_SENTINEL_PREFIX: Final = "=?base64?"
_SENTINEL_SUFFIX: Final = "?="

ToolHeaders = Mapping[str, Mapping[str, tuple[str, ...]]]
"""Tool name -> `x-mcp-header` name -> property path of that parameter inside `arguments`."""


@dataclass(frozen=True, slots=True)
class McpCall:
    """One JSON-RPC message as the policy sees it."""

    method: str
    """The JSON-RPC method; "" for a response."""
    name: str | None
    """`params.name` or `params.uri` for the methods in `NAME_FIELDS`, else None (also for a
    method of `REMOVED_IN_MODERN` sent at a modern version without one)."""
    rpc_id: JsonRpcId
    kind: Literal["request", "notification", "response"]


class McpRequestError(ValueError):
    """The body is not an acceptable MCP message, or its headers disagree with it."""

    def __init__(self, jsonrpc_code: int, reason: str, detail: str, rpc_id: JsonRpcId) -> None:
        super().__init__(detail)
        self.jsonrpc_code = jsonrpc_code
        self.reason = reason
        self.rpc_id = rpc_id


def inspect_request(
    payload: object,
    headers: Mapping[str, str],
    *,
    tool_headers: ToolHeaders | None = None,
) -> tuple[McpCall, ...]:
    """Validate a decoded POST body and its headers; return one `McpCall` per message.

    `headers` has lower-case names. Batches are accepted only at protocol version 2025-03-26.
    A version this module does not know (any header-safe value, date-shaped or not) is not
    refused here: the upstream answers it with its own `UnsupportedProtocolVersionError`
    (-32022, listing the versions it supports), which dual-era clients need in order to retry.
    Header values are checked against the body whenever present; at modern versions
    (>= 2026-07-28) `Mcp-Method` is required on requests and `Mcp-Name` on the requests in
    `NAME_HEADER_REQUIRED`. `Mcp-Param-*` headers are checked only for tools whose
    `x-mcp-header` annotations are given in `tool_headers`: without the tool's schema the header
    cannot be tied to a parameter, and unrecognized `Mcp-Param-*` headers are to be forwarded and
    otherwise ignored (Streamable HTTP, "Server Behavior for Custom Headers").
    """
    version = headers.get("mcp-protocol-version", DEFAULT_PROTOCOL_VERSION)
    if _HEADER_SAFE.fullmatch(version) is None:
        raise McpRequestError(
            INVALID_REQUEST, "invalid_protocol_version", "malformed MCP-Protocol-Version", None
        )
    modern = is_stateless_era(version)
    if isinstance(payload, list):
        if version != BATCH_PROTOCOL_VERSION:
            raise McpRequestError(
                INVALID_REQUEST, "batch_not_allowed", f"no batching at version {version}", None
            )
        if not payload:
            raise McpRequestError(INVALID_REQUEST, "empty_batch", "empty batch", None)
        messages: list[object] = payload
    else:
        messages = [payload]
    calls: list[McpCall] = []
    for message in messages:
        call = _inspect_message(message, modern=modern)
        _check_headers(call, message, headers, modern=modern, tool_headers=tool_headers)
        calls.append(call)
    return tuple(calls)


def is_stateless_era(version: str | None) -> bool:
    """Whether `version` (an `MCP-Protocol-Version` value) is a modern one (>= 2026-07-28):
    per-request metadata, no `initialize` handshake, no sessions (versioning, "Terminology").
    An absent header, an earlier date or a value that is not a date is not."""
    return (
        version is not None
        and _DATE_VERSION.fullmatch(version) is not None
        and version >= FIRST_MODERN_VERSION
    )


def _inspect_message(message: object, *, modern: bool) -> McpCall:
    """JSON-RPC 2.0 shape (sections 4 and 5) plus the MCP name of named methods."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise McpRequestError(INVALID_REQUEST, "not_jsonrpc", "not a JSON-RPC 2.0 message", None)
    rpc_id = coerce_id(message.get("id"))
    if "id" in message and rpc_id is None and "method" in message:
        raise McpRequestError(INVALID_REQUEST, "invalid_id", "id must be a string or integer", None)
    if "method" not in message:
        return _inspect_response(message, rpc_id, modern=modern)
    method = message["method"]
    if not isinstance(method, str):
        raise McpRequestError(INVALID_REQUEST, "invalid_method", "method must be a string", rpc_id)
    params = message.get("params")
    if "params" in message and not isinstance(params, dict | list):
        raise McpRequestError(
            INVALID_REQUEST, "invalid_params", "params must be an object or array", rpc_id
        )
    kind: Literal["request", "notification"] = "request" if "id" in message else "notification"
    return McpCall(method, _name(method, params, rpc_id, modern=modern), rpc_id, kind)


def _inspect_response(message: dict[str, Any], rpc_id: JsonRpcId, *, modern: bool) -> McpCall:
    if modern:
        # 2026-07-28 Streamable HTTP, "Sending Messages": the client MUST NOT send responses.
        raise McpRequestError(
            INVALID_REQUEST, "response_not_allowed", "clients send no responses", rpc_id
        )
    has_id = "id" in message and (rpc_id is not None or message["id"] is None)
    if not has_id or ("result" in message) == ("error" in message):
        raise McpRequestError(
            INVALID_REQUEST, "invalid_response", "neither a request nor a response", rpc_id
        )
    return McpCall("", None, rpc_id, "response")


def _name(method: str, params: object, rpc_id: JsonRpcId, *, modern: bool) -> str | None:
    field = NAME_FIELDS.get(method)
    if field is None:
        return None
    value = params.get(field) if isinstance(params, dict) else None
    name = value if isinstance(value, str) and value else None
    # A method the revision removed is still named when it names something (a lenient upstream
    # that executes it anyway is decided by the same per-URI rules), but never refused for
    # lacking a name: the upstream answers it as unknown.
    if name is None and not (modern and method in REMOVED_IN_MODERN):
        raise McpRequestError(
            INVALID_PARAMS, "invalid_name", f"{method} needs a non-empty params.{field}", rpc_id
        )
    return name


def _check_headers(
    call: McpCall,
    message: object,
    headers: Mapping[str, str],
    *,
    modern: bool,
    tool_headers: ToolHeaders | None,
) -> None:
    """Streamable HTTP 2026-07-28, "Server Validation": headers must mirror the body."""
    required = modern and call.kind == "request"

    def mismatch(detail: str) -> McpRequestError:
        return McpRequestError(HEADER_MISMATCH, "header_mismatch", detail, call.rpc_id)

    method_header = headers.get("mcp-method")
    if method_header is None:
        if required:
            raise mismatch("Mcp-Method header is missing")
    elif _HEADER_SAFE.fullmatch(method_header) is None or method_header != call.method:
        raise mismatch("Mcp-Method header does not match the body")

    name_header = headers.get("mcp-name")
    if name_header is None:
        if required and call.method in NAME_HEADER_REQUIRED:
            raise mismatch("Mcp-Name header is missing")
    elif call.name is None or decode_header_value(name_header) != call.name:
        raise mismatch("Mcp-Name header does not match the body")

    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    if (
        isinstance(meta, dict)
        and _META_VERSION_KEY in meta
        and meta[_META_VERSION_KEY] != headers.get("mcp-protocol-version")
    ):
        raise mismatch("MCP-Protocol-Version header does not match _meta")

    declared = tool_headers.get(call.name or "", {}) if tool_headers and modern else {}
    if call.method == "tools/call" and declared:
        arguments = params.get("arguments") if isinstance(params, dict) else None
        for header_name, path in declared.items():
            header = headers.get(f"mcp-param-{header_name.lower()}")
            if not _param_matches(header, _value_at(arguments, path)):
                raise mismatch(f"Mcp-Param-{header_name} header does not match the body")


def decode_header_value(value: str) -> str | None:
    """The value an `Mcp-Name` / `Mcp-Param-*` header carries, or None if it is malformed.

    Streamable HTTP 2026-07-28, "Value Encoding": plain header-safe ASCII, or
    `=?base64?{Base64 of the UTF-8 value}?=` (case-sensitive markers).
    """
    if _HEADER_SAFE.fullmatch(value) is None:
        return None
    if not (
        value.startswith(_SENTINEL_PREFIX)
        and value.endswith(_SENTINEL_SUFFIX)
        and len(value) >= len(_SENTINEL_PREFIX) + len(_SENTINEL_SUFFIX)
    ):
        return value
    encoded = value[len(_SENTINEL_PREFIX) : -len(_SENTINEL_SUFFIX)]
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _value_at(arguments: object, path: tuple[str, ...]) -> object:
    value = arguments
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _param_matches(header: str | None, body_value: object) -> bool:
    """A parameter header agrees with the body: absent iff the value is absent or null."""
    if header is None or body_value is None:
        return header is None and body_value is None
    decoded = decode_header_value(header)
    if decoded is None:
        return False
    if isinstance(body_value, bool):
        return decoded == ("true" if body_value else "false")
    if isinstance(body_value, str):
        return decoded == body_value
    if isinstance(body_value, int | float):
        # "Server Validation" note: compare numbers numerically (42.0 equals 42).
        if _JSON_NUMBER.fullmatch(decoded) is None:
            return False
        return Decimal(decoded) == Decimal(repr(body_value))
    return False
