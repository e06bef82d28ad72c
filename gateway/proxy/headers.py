"""Which headers cross the gateway, in each direction (RFC 9110 section 7.6.1, hop-by-hop).

Toward the upstream the gateway never forwards the client's credentials (`Authorization`,
`Cookie`), its `Origin` (the gateway validates it; the upstream sees the gateway as its client),
forwarding claims it cannot vouch for, compression preferences (bodies must stay inspectable), or
its session id and `Last-Event-ID` (the gateway maps sessions and adds the upstream's own). A
header the gateway sets itself is dropped in every spelling a server framework may merge with it
(any case, `_` for `-`). Toward the client it drops upstream cookies, CORS headers and the
upstream's session id: the gateway owns its origin and its sessions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import quote

from multidict import CIMultiDict

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

REQUEST_DROPPED = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"authorization",
    b"cookie",
    b"origin",
    b"expect",
    b"accept-encoding",
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-real-ip",
    b"x-request-id",
    b"mcp-session-id",
    b"last-event-id",
}

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


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in `Connection` are hop-by-hop too (RFC 9110 section 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


class RequestHeadBuilder:
    """Builds the request head sent upstream; the static part is encoded once at start-up."""

    def __init__(
        self,
        host_header: str,
        static_headers: Mapping[str, str],
        managed: Iterable[str] = (),
    ) -> None:
        """`managed`: more header names the gateway sets per request (identity headers)."""
        self._dropped = REQUEST_DROPPED | {
            n.lower().replace("_", "-").encode() for n in (*static_headers, *managed)
        }
        fixed = [f"Host: {host_header}\r\n"]
        fixed += [f"{name}: {value}\r\n" for name, value in static_headers.items()]
        self._fixed = "".join(fixed).encode("latin-1")

    def build(
        self,
        method: str,
        target: str,
        client_headers: tuple[tuple[bytes, bytes], ...],
        body_length: int | None,
        request_id: str,
        added: bytes = b"",
    ) -> bytes:
        """The request head; `added` holds complete header lines the gateway sets for this
        request (session id, identity), each ending in CRLF."""
        dropped = self._dropped
        kept: list[tuple[bytes, bytes]] = []
        extra: frozenset[bytes] = frozenset()
        for name, value in client_headers:
            lower = name.lower()
            if b"_" in lower:
                lower = lower.replace(b"_", b"-")
            if lower in dropped:
                if lower == b"connection":
                    extra = _connection_tokens(client_headers)
                continue
            kept.append((lower, b"%s: %s\r\n" % (name, value)))
        parts = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), self._fixed]
        parts += [line for lower, line in kept if lower not in extra]
        parts.append(b"X-Request-Id: %s\r\n%s" % (request_id.encode("ascii"), added))
        if body_length is not None:
            parts.append(b"Content-Length: %d\r\n" % body_length)
        parts.append(b"\r\n")
        return b"".join(parts)


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


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """Header lines for `RequestHeadBuilder.build(added=...)`; values via `header_value`."""
    return b"".join(
        f"{name}: {header_value(value)}\r\n".encode("latin-1") for name, value in headers
    )
