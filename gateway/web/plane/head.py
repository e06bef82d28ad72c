"""Which request heads the lean data plane serves, parsed once with llhttp (httptools).

A head is served here only when it is plain: a `GET`, `POST` or `DELETE` of exactly a route's
path (and any query) in origin-form, HTTP/1.1, header lines that are RFC 9110/9112 valid by the
gateway's own grammar (checked on the raw bytes, independently of llhttp, which must also
accept them), within aiohttp's size and count limits, with a `Host` and no repeated singleton
header, and no `Transfer-Encoding`, `Expect`, `Upgrade`, `Content-Encoding` or
`Sec-WebSocket-Key1`, and a body only on a POST. Anything else (None) is given, byte for byte,
to aiohttp, which answers it as it always has: its errors for malformed requests, chunked
bodies, 100-continue, other methods and paths. So the two planes cannot disagree on how a
request is framed: the lean one serves a subset that both parse the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Generic, NamedTuple, TypeVar

import httptools

Lane = TypeVar("Lane")

MAX_LINE = 8190
"""aiohttp's limit on the request target (its `max_line_size`)."""
MAX_HEADERS = 128
"""aiohttp's limit on the number of header lines (its `max_headers`)."""
LEAN_METHODS = frozenset({"GET", "POST", "DELETE"})

# RFC 9110 section 5.6.2 token characters (names); section 5.5 field-value characters: visible
# ASCII, obs-text, and space or tab (inside a value: llhttp and aiohttp strip them around it).
_TOKEN_BYTES = bytes(b for b in range(256) if chr(b).isalnum() and b < 128) + b"!#$%&'*+-.^_`|~"
_FIELD_BYTES = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100)) + b" \t"
"""Every byte a head may hold but CR and LF: field-value characters."""
# RFC 9112 section 3.2.1 origin-form: an absolute path and an optional query of RFC 3986 pchar
# (unreserved, sub-delims, ":" "@", complete percent-escapes), "/" and "?".
_ORIGIN_FORM = re.compile(
    rb"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*"
    rb"(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)
_HANDED_TO_AIOHTTP = frozenset(
    {b"transfer-encoding", b"expect", b"upgrade", b"content-encoding", b"sec-websocket-key1"}
)
"""`Sec-WebSocket-Key1` (the old WebSocket draft) is refused by aiohttp's parser (400)."""
_SINGLETONS = frozenset(
    {
        b"content-length",
        b"content-location",
        b"content-range",
        b"content-type",
        b"etag",
        b"host",
        b"max-forwards",
        b"server",
        b"transfer-encoding",
        b"user-agent",
    }
)
"""Headers aiohttp refuses to see twice (400): such a request is left to it."""


class Head(NamedTuple, Generic[Lane]):
    """A request head the lean plane serves, and the lane (route) it is for."""

    lane: Lane
    method: str
    target: str
    """Path and query, as sent."""
    path: str
    headers: list[tuple[bytes, bytes]]
    """Field lines in order: names as sent, values without surrounding whitespace."""
    content_length: int
    keep_alive: bool


class _Collector:
    """The httptools callbacks of one head."""

    __slots__ = ("complete", "headers", "keep_alive", "parser", "url", "widest")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.keep_alive = False
        self.widest = 0
        """The most bytes aiohttp's parser may count against its field limit for one line: the
        name, the value with its trailing whitespace, and the name of the line before."""
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        if self.widest >= 0:  # measured only for a head longer than the limit (see parse_head)
            width = len(name) + len(value) + (len(headers[-1][0]) if headers else 0)
            if width > self.widest:
                self.widest = width
        headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # before the message completes


def parse_head(head: bytes, lanes: Mapping[bytes, Lane], max_field: int) -> Head[Lane] | None:
    """The head (bytes up to and including the blank line ending it) if the lean plane serves
    it, for one of `lanes` (by exact raw path); None to leave the request to aiohttp.

    llhttp parses it; the gateway's own checks then confirm, on the raw bytes, that it is
    exactly a request line and one line per header llhttp reported, each of RFC-valid
    characters: without those, what is left is CR LF once per line (so no other byte, and as
    many CRs as LFs as lines), and as many of those CR LF pairs are side by side in the head
    (so no bare CR or LF, even one of each; no folding; the head ends in CRLF CRLF).
    """
    collector = _Collector()
    if len(head) <= max_field:
        collector.widest = -1  # no line, even with the name before it, can be over the limit
    parser = collector.parser
    try:
        parser.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None  # an upgrade (CONNECT, `Upgrade` with `Connection: upgrade`) too
    url = collector.url
    path = url.partition(b"?")[0]
    lane = lanes.get(path)
    if lane is None or not collector.complete or parser.should_upgrade():
        return None
    method = parser.get_method()
    headers = collector.headers
    lines = len(headers) + 2
    if (
        parser.get_http_version() != "1.1"
        or not head.startswith(b"%s %s HTTP/1.1\r\n" % (method, url))
        or head.translate(None, _FIELD_BYTES) != b"\r\n" * lines
        or head.count(b"\r\n") != lines  # a bare CR and a later bare LF do not make a pair
        or len(url) > MAX_LINE
        or collector.widest > max_field
        or _ORIGIN_FORM.fullmatch(url) is None
    ):
        return None
    length = _content_length(headers)
    if length is None or method.decode("ascii") not in LEAN_METHODS:
        return None
    if length and method != b"POST":
        return None  # a body nothing reads: aiohttp discards it with backpressure, not in memory
    return Head(
        lane,
        method.decode("ascii"),
        url.decode("ascii"),
        path.decode("ascii"),
        headers,
        length,
        collector.keep_alive,
    )


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length (0 without `Content-Length`), or None when a header makes the request
    one for aiohttp (see the module doc)."""
    if len(headers) > MAX_HEADERS or b"".join([n for n, _ in headers]).translate(
        None, _TOKEN_BYTES
    ):
        return None
    length = 0
    seen: set[bytes] = set()
    for name, value in headers:
        if not name:
            return None
        lower = name.lower()
        if lower in _HANDED_TO_AIOHTTP:
            return None
        if lower in _SINGLETONS:
            if lower in seen:
                return None
            seen.add(lower)
            if lower == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    return None
                length = int(value)
    if b"host" not in seen:
        return None  # HTTP/1.1 requires it: aiohttp's parser answers 400
    return length
