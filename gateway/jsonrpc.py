"""JSON-RPC 2.0 message inspection: pure functions over bytes and plain data."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

JsonRpcId = str | int | None

DEFAULT_MAX_DEPTH = 64
"""Deepest container nesting `parse_message` accepts; MCP messages are a handful of levels deep."""


class DuplicateKeyError(ValueError):
    """An object repeats a key, so its meaning depends on which duplicate a parser keeps."""


class NonFiniteNumberError(ValueError):
    """`NaN`, `Infinity` or `-Infinity`: not JSON (RFC 8259 section 6), though Python reads them."""


class LoneSurrogateError(ValueError):
    """A `\\uD800`-`\\uDFFF` escape that is not half of a pair: no Unicode character, and no
    UTF-8 encoding, so an upstream, a log line or a list filter would each read it differently
    (RFC 8259 section 8.2)."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateKeyError("duplicate object key")
    return obj


def _no_constant(name: str) -> Any:
    raise NonFiniteNumberError(name)


_decode = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_no_constant).decode
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _has_lone_surrogate(value: object) -> bool:
    """Whether a decoded value holds a surrogate code point in any key or string.

    Decoding joins an escaped pair into one character, so any surrogate left is a lone one.
    Recursion is bounded by the nesting limit checked before decoding.
    """
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


# A complete JSON string literal (unrolled loop: linear, no backtracking).
_STRING_LITERAL = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _too_deep(text: str, max_depth: int) -> bool:
    """Whether `text` nests containers deeper than `max_depth`, judged before decoding.

    Decoding first would let a depth bomb exhaust the C decoder's recursion; scanning first keeps
    the cost linear. Bodies with no more opening brackets than `max_depth` (every ordinary MCP
    message) cannot be too deep, so they skip the scan.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING_LITERAL.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > max_depth


@dataclass(frozen=True, slots=True)
class JsonRpcMessage:
    """What the gateway needs from one POSTed JSON-RPC body, parsed exactly once."""

    payload: Any
    """The decoded body: a dict for a single message, a list for a batch."""
    rpc_id: JsonRpcId
    """The request id (None for notifications, responses without id, and batches)."""
    method: str | None


class MessageError(ValueError):
    """The body is not a JSON-RPC message; `kind` is "parse" or "invalid"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def decode_json(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode JSON text strictly, for any body a client sends the gateway.

    Raises `MessageError("parse", <reason>)` for bytes that are not UTF-8 JSON, for an object
    that repeats a key anywhere (the gateway must never authorize one reading of a body while
    the upstream executes another), for `NaN`/`Infinity`/`-Infinity` and lone surrogate escapes
    anywhere (not JSON text, RFC 8259 sections 6 and 8.2, and read differently by every parser),
    and for containers nested deeper than `max_depth`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError("parse", "UnicodeDecodeError") from None
    if _too_deep(text, max_depth):
        raise MessageError("parse", "NestingTooDeep")
    try:
        value = _decode(text)
    except (ValueError, RecursionError) as exc:
        # RecursionError only if a caller raises max_depth past the interpreter's stack.
        raise MessageError("parse", type(exc).__name__) from None
    # Only an escape can produce a surrogate (raw ones are not UTF-8): skip the walk without one.
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(value):
        raise MessageError("parse", LoneSurrogateError.__name__)
    return value


def parse_message(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> JsonRpcMessage:
    """Decode a POST body into a `JsonRpcMessage`.

    Raises `MessageError("parse", ...)` for what `decode_json` refuses, and
    `MessageError("invalid", ...)` for JSON that is neither an object nor an array of objects.
    """
    payload = decode_json(body, max_depth=max_depth)
    if isinstance(payload, dict):
        method = payload.get("method")
        return JsonRpcMessage(
            payload=payload,
            rpc_id=coerce_id(payload.get("id")),
            method=method if isinstance(method, str) else None,
        )
    if isinstance(payload, list) and payload and all(isinstance(m, dict) for m in payload):
        return JsonRpcMessage(payload=payload, rpc_id=None, method=None)
    raise MessageError("invalid", "body is not a JSON-RPC object or batch")


def coerce_id(value: object) -> JsonRpcId:
    """A JSON-RPC id usable in an error reply: strings and integers only (never bool/float)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def error_body(rpc_id: JsonRpcId, code: int, message: str, reason: str) -> bytes:
    """Serialise a JSON-RPC error response (section 5.1 of the JSON-RPC 2.0 specification)."""
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": rpc_id,
            "error": {"code": code, "message": message, "data": {"reason": reason}},
        },
        separators=(",", ":"),
    ).encode()
