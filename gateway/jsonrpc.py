"""JSON-RPC 2.0 message inspection: pure functions over bytes and plain data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JsonRpcId = str | int | None

_decode = json.JSONDecoder().decode


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


def parse_message(body: bytes) -> JsonRpcMessage:
    """Decode a POST body into a `JsonRpcMessage`.

    Raises `MessageError("parse", ...)` for bytes that are not UTF-8 JSON, and
    `MessageError("invalid", ...)` for JSON that is neither an object nor an array of objects.
    """
    try:
        payload = _decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageError("parse", type(exc).__name__) from None
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
