"""Which headers cross the gateway, in each direction, and the one writer of upstream request heads.

Toward the upstream the client's headers pass only through an allowlist: what MCP over Streamable
HTTP needs (`Content-Type`, `Accept`, the MCP headers, trace context) plus the names a route opts
into. Everything else (credentials, cookies, `Origin`, forwarding and identity claims, hop-by-hop
headers, compression preferences, the client's session id and `Last-Event-ID`) is dropped; the
gateway sets its own `Host`, static and identity headers, session id and length.

The writer refuses (`UnsafeRequestPartError`, a 400) any target, header name or value holding a
byte HTTP/1.1 does not allow there (RFC 9112 section 3.2, RFC 9110 sections 5.1 and 5.5), whoever
passes it: one request in, exactly one request out. Toward the client it drops upstream cookies,
CORS headers and the upstream's session id: the gateway owns its origin and its sessions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import quote

from multidict import CIMultiDict

from gateway.errors import UnsafeRequestPartError

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

PASSED_REQUEST_HEADERS = frozenset(
    {
        b"content-type",
        b"accept",
        b"mcp-protocol-version",
        b"mcp-method",
        b"mcp-name",
        b"traceparent",
        b"tracestate",
    }
)
"""Client headers every route passes upstream (compared case-insensitively, `_` never read as
`-`), besides `Mcp-Param-*` (Streamable HTTP 2026-07-28, "Custom Headers")."""
PASSED_PREFIX = b"mcp-param-"

RESPONSE_DROPPED = HOP_BY_HOP | {
    b"content-length",
    b"set-cookie",
    b"access-control-allow-origin",
    b"access-control-allow-credentials",
    b"access-control-allow-headers",
    b"access-control-allow-methods",
    b"access-control-expose-headers",
    b"access-control-max-age",
    b"mcp-session-id",
}

# RFC 9110 section 5.6.2 (token) for names and methods; section 5.5 for values: visible ASCII,
# obs-text, and space or tab inside (leading and trailing whitespace is not part of a value).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
_FIELD_VALUE = re.compile(rb"(?:%s(?:[\x20\x09\x21-\x7e\x80-\xff]*%s)?)?" % (_VCHAR, _VCHAR))
_HEADER_BLOCK = re.compile(
    rb"(?:%s: (?:%s(?:[\x20\x09\x21-\x7e\x80-\xff]*%s)?)?\r\n)*" % (_TOKEN.pattern, _VCHAR, _VCHAR)
)
# RFC 9112 section 3.2.1 origin-form: an absolute path and an optional query, both made of
# RFC 3986 pchar (unreserved, sub-delims, ":" "@", and complete percent-escapes), "/" and "?".
_ORIGIN_FORM = re.compile(
    r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*"
    r"(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in `Connection` are hop-by-hop too (RFC 9110 section 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def check_target(target: str) -> bytes:
    """`target` as request-line bytes, if it is a valid origin-form (path and query as the
    client encoded them); raises `UnsafeRequestPartError` otherwise."""
    if _ORIGIN_FORM.fullmatch(target) is None:
        raise UnsafeRequestPartError("request target has bytes HTTP does not allow")
    return target.encode("ascii")


def _header_line(name: bytes, value: bytes) -> bytes:
    if _TOKEN.fullmatch(name) is None:
        raise UnsafeRequestPartError("header name is not an HTTP token")
    if _FIELD_VALUE.fullmatch(value) is None:
        raise UnsafeRequestPartError("header value has bytes HTTP does not allow")
    return b"%s: %s\r\n" % (name, value)


class RequestHeadBuilder:
    """Writes the request heads sent upstream; the fixed part is checked and encoded once."""

    def __init__(
        self,
        host_header: str,
        static_headers: Mapping[str, str],
        managed: Iterable[str] = (),
        passed: Iterable[str] = (),
    ) -> None:
        """`managed`: more header names the gateway sets per request (identity headers);
        `passed`: client headers this route passes besides `PASSED_REQUEST_HEADERS`."""
        own = {n.lower().encode() for n in (*static_headers, *managed)}
        self._passed = (PASSED_REQUEST_HEADERS | {n.lower().encode() for n in passed}) - own
        self._fixed = _header_line(b"Host", host_header.encode("ascii")) + b"".join(
            _header_line(name.encode("ascii"), value.encode("latin-1"))
            for name, value in static_headers.items()
        )

    def build(
        self,
        method: str,
        target: str,
        client_headers: Iterable[tuple[bytes, bytes]],
        body_length: int | None,
        request_id: str,
        added: Iterable[tuple[bytes, bytes]] = (),
    ) -> bytes:
        """The request head. `client_headers` are filtered through the allowlist; `added` are
        headers the gateway sets for this request (session id, identity). Every part is
        checked: a CR, LF, NUL or other byte HTTP does not allow raises
        `UnsafeRequestPartError` and nothing is written."""
        if _TOKEN.fullmatch(method.encode("ascii", "replace")) is None:
            raise UnsafeRequestPartError("method is not an HTTP token")
        passed = self._passed
        lines = [
            b"%s: %s\r\n" % (name, value)
            for name, value in client_headers
            if (lower := name.lower()) in passed
            or (lower.startswith(PASSED_PREFIX) and len(lower) > len(PASSED_PREFIX))
        ]
        lines.append(b"X-Request-Id: %s\r\n" % request_id.encode("ascii", "replace"))
        lines.extend(b"%s: %s\r\n" % (name, value) for name, value in added)
        block = b"".join(lines)
        # One scan of every per-request line: the block must be `name: value CRLF` lines made
        # of allowed bytes only (no NUL, no bare CR or LF), and hold exactly one CRLF per pair,
        # so no name or value can carry a line of its own.
        if block.count(b"\r\n") != len(lines) or _HEADER_BLOCK.fullmatch(block) is None:
            raise UnsafeRequestPartError("a header name or value has bytes HTTP does not allow")
        request_line = b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), check_target(target))
        length = b"" if body_length is None else b"Content-Length: %d\r\n" % body_length
        return b"".join((request_line, self._fixed, block, length, b"\r\n"))


class ResponseHead(NamedTuple):
    headers: CIMultiDict[str]
    """Headers to send to the client."""
    event_stream: bool
    """Whether the body is an SSE stream."""
    session_id: str | None
    """The upstream's `Mcp-Session-Id` (never sent to the client)."""


def upstream_response_head(raw: list[tuple[bytes, bytes]]) -> ResponseHead:
    """Headers to send to the client, and what the gateway needs to know of the others."""
    out: CIMultiDict[str] = CIMultiDict()
    event_stream = False
    session_id = None
    extra: frozenset[bytes] = frozenset()
    for name, value in raw:
        lower = name.lower()
        if lower == b"connection":
            extra = _connection_tokens(raw)
        if lower in RESPONSE_DROPPED or lower in extra:
            if lower == b"mcp-session-id":
                session_id = value.decode("latin-1")
            continue
        if lower == b"content-type" and value.lower().startswith(b"text/event-stream"):
            event_stream = True
        out.add(name.decode("latin-1"), value.decode("latin-1"))
    if extra:
        for token in extra:
            out.popall(token.decode("latin-1"), None)
    if event_stream:
        out["X-Accel-Buffering"] = "no"
    return ResponseHead(out, event_stream, session_id)


_PLAIN_VALUE = re.compile(r"^[\x20-\x24\x26-\x7e]*$")  # visible ASCII and space, no "%"


def header_value(text: str) -> str:
    """A claim as a header value: as it is if plain (visible ASCII or space, no `%`), else
    percent-encoded UTF-8, so no claim can inject a header line and decoding is unambiguous."""
    if _PLAIN_VALUE.fullmatch(text) and text == text.strip():
        return text
    return quote(text, safe="")


def header_pairs(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """(name, value) pairs for `RequestHeadBuilder.build(added=...)`; values via `header_value`."""
    return [(name.encode("ascii"), header_value(value).encode("ascii")) for name, value in headers]
