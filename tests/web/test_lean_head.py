"""Which request heads the lean data plane takes (`parse_head`), and the response heads it writes
(`response_head`), checked against two independent HTTP/1.1 parsers.

A head the lean plane accepts must be one that h11 and aiohttp's own C parser (the one that
serves every other request on the listener) both accept, with the same method, target and header
lines: otherwise the two planes could frame or read one request differently. A head it leaves
to aiohttp (None) is answered by aiohttp as before, so refusing is always safe; accepting is what
must be right. No sockets here.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Iterator
from typing import Any

import h11
import pytest
from aiohttp._http_parser import HttpRequestParser
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.web.plane.head import MAX_HEADERS, MAX_LINE, parse_head
from gateway.web.plane.lanes import Plane
from gateway.web.plane.responder import response_head

LANES = {b"/mcp": "mcp", b"/up/mcp": "up"}
MAX_FIELD = 8190
H11_LIMIT = 1 << 20


def head(*lines: str | bytes, line: str | bytes = b"POST /mcp HTTP/1.1") -> bytes:
    """A request head: the request line, then one CRLF-ended line each, then the blank line."""
    parts = [part.encode("latin-1") if isinstance(part, str) else part for part in (line, *lines)]
    return b"".join(part + b"\r\n" for part in parts) + b"\r\n"


HOST = "Host: gw.example"
TYPE = "Content-Type: application/json"


# -- the table: one row per rule of head.py's module doc and `_content_length` -----------------

ACCEPTED: list[Any] = [
    pytest.param(head(HOST, "Content-Length: 12"), ("POST", "/mcp", 12, True), id="plain-post"),
    pytest.param(head(HOST, line="GET /mcp HTTP/1.1"), ("GET", "/mcp", 0, True), id="get"),
    pytest.param(head(HOST, line="DELETE /mcp HTTP/1.1"), ("DELETE", "/mcp", 0, True), id="delete"),
    pytest.param(
        head(HOST, line="POST /up/mcp HTTP/1.1"), ("POST", "/up/mcp", 0, True), id="second-lane"
    ),
    pytest.param(
        head(HOST, line="POST /mcp?a=1&b=%2F:@!$'()*+,;=/? HTTP/1.1"),
        ("POST", "/mcp?a=1&b=%2F:@!$'()*+,;=/?", 0, True),
        id="query-of-pchar",
    ),
    pytest.param(
        head(HOST, line="POST /mcp? HTTP/1.1"), ("POST", "/mcp?", 0, True), id="empty-query"
    ),
    pytest.param(
        head(HOST, "Connection: close"), ("POST", "/mcp", 0, False), id="connection-close"
    ),
    pytest.param(head(HOST, "Content-Length: 007"), ("POST", "/mcp", 7, True), id="leading-zeros"),
    pytest.param(
        head(HOST, "Content-Length: " + "9" * 18),
        ("POST", "/mcp", int("9" * 18), True),
        id="content-length-18-digits",
    ),
    pytest.param(
        head(HOST, "Accept: a", "Accept: b"), ("POST", "/mcp", 0, True), id="repeated-list"
    ),
    pytest.param(head(HOST, b"X-Obs: caf\xe9 \xff"), ("POST", "/mcp", 0, True), id="obs-text"),
    pytest.param(head(HOST, "X-Tab: a\tb"), ("POST", "/mcp", 0, True), id="tab-inside-value"),
    pytest.param(head(HOST, "X-Empty:"), ("POST", "/mcp", 0, True), id="empty-value"),
    pytest.param(head(HOST, "X-Ows: \t a \t"), ("POST", "/mcp", 0, True), id="ows-around-value"),
    pytest.param(head("host: gw.example"), ("POST", "/mcp", 0, True), id="lowercase-name"),
    pytest.param(
        head(HOST, "X-" + "a" * (MAX_FIELD - 7) + ": b"),  # with "Host", the name before
        ("POST", "/mcp", 0, True),
        id="field-at-limit",
    ),
    pytest.param(
        head(HOST, "X: " + "a" * (MAX_FIELD - 5)),
        ("POST", "/mcp", 0, True),
        id="value-at-limit",
    ),
    pytest.param(
        head(HOST, *[f"X-{n}: v" for n in range(MAX_HEADERS - 1)]),
        ("POST", "/mcp", 0, True),
        id="max-headers",
    ),
    pytest.param(
        head(HOST, line="POST /mcp?" + "a" * (MAX_LINE - 5) + " HTTP/1.1"),
        ("POST", "/mcp?" + "a" * (MAX_LINE - 5), 0, True),
        id="target-at-limit",
    ),
    pytest.param(head(HOST, "Connection: keep-alive"), ("POST", "/mcp", 0, True), id="keep-alive"),
    pytest.param(
        head(HOST, "Content-Length: 0", line="GET /mcp HTTP/1.1"),
        ("GET", "/mcp", 0, True),
        id="get-with-empty-body",
    ),
]

LEFT_TO_AIOHTTP: list[Any] = [
    # method, route and request-target
    pytest.param(head(HOST, line="PUT /mcp HTTP/1.1"), id="put"),
    pytest.param(head(HOST, line="OPTIONS /mcp HTTP/1.1"), id="options-preflight"),
    pytest.param(head(HOST, line="HEAD /mcp HTTP/1.1"), id="head"),
    pytest.param(head(HOST, line="PATCH /mcp HTTP/1.1"), id="patch"),
    pytest.param(head(HOST, line="CONNECT gw.example:443 HTTP/1.1"), id="connect"),
    pytest.param(head(HOST, line="post /mcp HTTP/1.1"), id="lowercase-method"),
    pytest.param(head(HOST, line="POST /other HTTP/1.1"), id="not-a-lane"),
    pytest.param(head(HOST, line="POST /mcp/ HTTP/1.1"), id="trailing-slash"),
    pytest.param(head(HOST, line="POST /MCP HTTP/1.1"), id="path-case"),
    pytest.param(head(HOST, line="POST //mcp HTTP/1.1"), id="double-slash"),
    pytest.param(head(HOST, line="POST /%6Dcp HTTP/1.1"), id="escaped-path"),
    pytest.param(head(HOST, line="POST /mcp#frag HTTP/1.1"), id="fragment"),
    pytest.param(head(HOST, line="POST http://gw.example/mcp HTTP/1.1"), id="absolute-form"),
    pytest.param(head(HOST, line="OPTIONS * HTTP/1.1"), id="asterisk-form"),
    pytest.param(head(HOST, line="POST /mcp?a=<b> HTTP/1.1"), id="query-angle-brackets"),
    pytest.param(head(HOST, line="POST /mcp?a=%zz HTTP/1.1"), id="query-bad-escape"),
    pytest.param(head(HOST, line="POST /mcp?a=% HTTP/1.1"), id="query-cut-escape"),
    pytest.param(head(HOST, line='POST /mcp?a="b" HTTP/1.1'), id="query-quote"),
    pytest.param(head(HOST, line=b"POST /mcp?\xe9 HTTP/1.1"), id="query-obs-text"),
    pytest.param(
        head(HOST, line="POST /mcp?" + "a" * (MAX_LINE - 4) + " HTTP/1.1"), id="target-too-long"
    ),
    # version and request line
    pytest.param(head(HOST, line="POST /mcp HTTP/1.0"), id="http-1.0"),
    pytest.param(head(HOST, line="POST /mcp HTTP/2.0"), id="http-2.0"),
    pytest.param(head(HOST, line="POST  /mcp HTTP/1.1"), id="double-space"),
    pytest.param(head(HOST, line="POST /mcp HTTP/1.1 "), id="trailing-space-in-line"),
    pytest.param(head(HOST, line="POST\t/mcp HTTP/1.1"), id="tab-in-line"),
    pytest.param(head(HOST, line="POST /mcp"), id="http-0.9"),
    # line endings and characters
    pytest.param(b"POST /mcp HTTP/1.1\nHost: gw.example\n\n", id="bare-lf-everywhere"),
    pytest.param(b"POST /mcp HTTP/1.1\r\nHost: gw.example\n\r\n", id="bare-lf-ending-a-line"),
    pytest.param(head(HOST, "X-A: a\rb"), id="bare-cr-in-value"),
    pytest.param(head(HOST, "X-A: a\nb"), id="bare-lf-in-value"),
    # A bare LF and a bare CR in one head keep the counts of CRs and LFs equal; old llhttp
    # (httptools 0.5, the floor) reads the LF as a line end (found by the property below).
    pytest.param(
        b"POST /mcp HTTP/1.1\r\nHost: gw.example\r\n0: gw.example\r\n0: \n\r\r\n",
        id="bare-lf-and-bare-cr",
    ),
    # A bare CR and, later, a bare LF: without the other bytes they read as one more CR LF.
    pytest.param(head(HOST, "X-A: a\rb\nX-B: c"), id="bare-cr-then-bare-lf"),
    pytest.param(head(HOST, "X-A: a", " folded"), id="obs-fold-space"),
    pytest.param(head(HOST, "X-A: a", "\tfolded"), id="obs-fold-tab"),
    pytest.param(head(HOST, "X-A: a\x00b"), id="nul-in-value"),
    pytest.param(head(HOST, "X-A: a\x7fb"), id="del-in-value"),
    pytest.param(head(HOST, "X-A: a\x01b"), id="control-in-value"),
    pytest.param(head(HOST, "X-A: a\x0bb"), id="vertical-tab-in-value"),
    pytest.param(head(HOST, "X-A : b"), id="space-before-colon"),
    pytest.param(head(HOST, ": b"), id="empty-name"),
    pytest.param(head(HOST, "X(A): b"), id="name-not-a-token"),
    pytest.param(head(HOST, b"X-\xe9: b"), id="name-obs-text"),
    pytest.param(head(HOST, "X-A b"), id="no-colon"),
    pytest.param(head(HOST, "Content-Length: 1")[:-2], id="incomplete"),
    # a body only on a POST: nothing reads another's, so it could pile up unread
    pytest.param(head(HOST, "Content-Length: 1", line="GET /mcp HTTP/1.1"), id="get-with-body"),
    pytest.param(
        head(HOST, "Content-Length: 1", line="DELETE /mcp HTTP/1.1"), id="delete-with-body"
    ),
    # limits
    pytest.param(head(HOST, "X-" + "a" * (MAX_FIELD - 2) + ": b"), id="field-over-limit"),
    pytest.param(head(HOST, *[f"X-{n}: v" for n in range(MAX_HEADERS)]), id="too-many-headers"),
    # headers that make it aiohttp's
    pytest.param(head(HOST, "Transfer-Encoding: chunked"), id="chunked"),
    pytest.param(head(HOST, "transfer-encoding: identity"), id="transfer-encoding-any"),
    pytest.param(head(HOST, "Expect: 100-continue"), id="expect"),
    pytest.param(head(HOST, "Upgrade: websocket"), id="upgrade-alone"),
    pytest.param(
        head(HOST, "Connection: upgrade", "Upgrade: websocket"), id="upgrade-with-connection"
    ),
    pytest.param(head(HOST, "Content-Encoding: gzip"), id="content-encoding"),
    pytest.param(head(HOST, "CONTENT-ENCODING: identity"), id="content-encoding-any"),
    pytest.param(head(HOST, HOST), id="repeated-host"),
    pytest.param(head(HOST, "HOST: other"), id="repeated-host-other-case"),
    pytest.param(head(HOST, TYPE, TYPE), id="repeated-content-type"),
    pytest.param(head(HOST, "User-Agent: a", "User-Agent: b"), id="repeated-user-agent"),
    pytest.param(
        head(HOST, "Content-Length: 1", "Content-Length: 1"), id="repeated-content-length"
    ),
    pytest.param(head(HOST, "Content-Length: abc"), id="content-length-not-a-number"),
    pytest.param(head(HOST, "Content-Length: -1"), id="content-length-negative"),
    pytest.param(head(HOST, "Content-Length: +1"), id="content-length-plus"),
    pytest.param(head(HOST, "Content-Length: 1, 1"), id="content-length-list"),
    pytest.param(head(HOST, "Content-Length: " + "9" * 19), id="content-length-19-digits"),
]

REFUSED_BY_AIOHTTP: list[Any] = [
    # HTTP/1.1 requires a Host (the lean plane would answer 421 where aiohttp answers 400)
    pytest.param(head("Content-Length: 0"), id="no-host"),
    pytest.param(head(HOST, "Sec-WebSocket-Key1: x"), id="old-websocket-key"),
    # aiohttp's parser counts the name of the line before against its field limit too, and a
    # value's trailing whitespace
    pytest.param(
        head(HOST, "X-" + "a" * (MAX_FIELD - 5) + ": b"), id="field-over-limit-with-name-before"
    ),
    pytest.param(
        head(HOST, "X: " + "a" * (MAX_FIELD - 2) + "   "), id="value-over-limit-with-trailing-space"
    ),
]
"""Heads that look plain but that aiohttp's parser refuses (400): left to it, to refuse."""


@pytest.mark.parametrize(("raw", "expected"), ACCEPTED)
def test_heads_the_lean_plane_serves(raw: bytes, expected: tuple[str, str, int, bool]) -> None:
    parsed = parse_head(raw, LANES, MAX_FIELD)
    assert parsed is not None
    assert (parsed.method, parsed.target, parsed.content_length, parsed.keep_alive) == expected
    assert parsed.path == parsed.target.partition("?")[0]
    assert parsed.lane == LANES[parsed.path.encode()]
    assert parsed.headers == expected_lines(raw)
    assert h11_reads(raw) == (parsed.method, parsed.target, parsed.headers)
    assert aiohttp_reads(raw) == (parsed.method, parsed.target, parsed.headers, parsed.keep_alive)


@pytest.mark.parametrize("raw", LEFT_TO_AIOHTTP)
def test_heads_left_to_aiohttp(raw: bytes) -> None:
    assert parse_head(raw, LANES, MAX_FIELD) is None


@pytest.mark.parametrize("raw", REFUSED_BY_AIOHTTP)
def test_heads_aiohttp_refuses_are_left_to_it(raw: bytes) -> None:
    with pytest.raises(HttpProcessingError):
        aiohttp_reads(raw)
    assert parse_head(raw, LANES, MAX_FIELD) is None


def expected_lines(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The header lines of a well-formed head, read by splitting it (no parser)."""
    lines = raw[: -len(b"\r\n\r\n")].split(b"\r\n")[1:]
    return [(name, value.strip(b" \t")) for name, _, value in (x.partition(b":") for x in lines)]


# -- the property: whatever the lean plane accepts, h11 and aiohttp read the same ---------------

_LOOP = asyncio.new_event_loop()  # aiohttp's parser wants one for body streams; never run


def aiohttp_reads(raw: bytes) -> tuple[str, str, list[tuple[bytes, bytes]], bool]:
    """Method, target, header lines and keep-alive as aiohttp's C parser (the listener's, with
    the gateway's `max_field_size`) reads them; its error if it refuses the head."""
    parser = HttpRequestParser(BaseProtocol(_LOOP), _LOOP, 2**16, max_field_size=MAX_FIELD)
    messages, upgraded, _ = parser.feed_data(raw)
    [(message, _payload)] = messages
    assert not upgraded
    return message.method, message.path, list(message.raw_headers), not message.should_close


def h11_reads(raw: bytes) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    """Method, target and header lines as h11 reads them; its error if it refuses the head."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=H11_LIMIT)
    conn.receive_data(raw)
    request = conn.next_event()
    assert isinstance(request, h11.Request), request
    assert request.http_version == b"1.1"
    return (
        request.method.decode("ascii"),
        request.target.decode("ascii"),
        list(request.headers.raw_items()),
    )


NAMES = [
    "Host",
    "Content-Length",
    "Content-Type",
    "Accept",
    "Authorization",
    "Connection",
    "Mcp-Session-Id",
    "MCP-Protocol-Version",
    "Origin",
    "Transfer-Encoding",
    "Expect",
    "Upgrade",
    "Content-Encoding",
    "User-Agent",
    "Sec-WebSocket-Key1",
    "X-Forwarded-For",
    "X_Underscore",
]
TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
names = st.one_of(
    st.sampled_from(NAMES).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper()])),
    st.text(alphabet=TOKEN, min_size=1, max_size=12),
).map(str.encode)
visible = st.sampled_from([bytes([b]) for b in [*range(0x21, 0x7F), *range(0x80, 0x100)]])
values = st.one_of(
    st.sampled_from(
        [
            b"gw.example",
            b"application/json",
            b"close",
            b"keep-alive",
            b"upgrade",
            b"chunked",
            b"0",
            b"12",
            b"007",
            b"1, 1",
            b"-1",
            b"",
            b"100-continue",
            b"gzip",
        ]
    ),
    st.lists(st.one_of(visible, st.sampled_from([b" ", b"\t"])), max_size=24).map(b"".join),
    st.binary(max_size=16),
    st.integers(min_value=1, max_value=MAX_FIELD + 8).map(lambda n: b"v" * n),
)
separators = st.sampled_from([b": ", b":", b":\t", b":  ", b" : ", b": \t "])
trailers = st.sampled_from([b"", b"", b"", b" ", b"\t", b" \t"])
targets = st.one_of(
    st.sampled_from([b"/mcp", b"/up/mcp"]),
    st.tuples(
        st.sampled_from([b"/mcp", b"/up/mcp"]),
        st.text(alphabet=string.ascii_letters + "=&%/?:@!$'()*+,;-._~#<> \"", max_size=12),
    ).map(lambda pair: pair[0] + b"?" + pair[1].encode()),
    st.sampled_from(
        [
            b"/mcp/",
            b"//mcp",
            b"/MCP",
            b"*",
            b"http://gw.example/mcp",
            b"/mcp#x",
            b"/other",
            b"/%6Dcp",
        ]
    ),
)
methods = st.sampled_from([b"POST", b"POST", b"GET", b"DELETE", b"PUT", b"OPTIONS", b"post"])
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"])
header_lists = st.lists(st.tuples(names, separators, values, trailers), max_size=8)
line_ends = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r", b"\r\n ", b"\r\n\t", b"\n\r"])


good_values = st.one_of(
    st.sampled_from([b"gw.example", b"application/json", b"close", b"keep-alive", b"0", b"12"]),
    *[
        st.lists(st.one_of(visible, st.sampled_from([b" ", b"\t"])), max_size=24).map(
            lambda parts: b"".join(parts).strip(b" \t")
        )
    ]
    * 4,
    st.integers(min_value=1, max_value=MAX_FIELD).map(lambda n: b"v" * n),
    st.integers(min_value=MAX_FIELD - 40, max_value=MAX_FIELD).map(lambda n: b"v" * n),
)
short_names = st.text(alphabet=TOKEN, min_size=1, max_size=12).map(str.encode)
good_names = st.one_of(
    *[short_names] * 6,  # and a name near the field limit now and then
    st.integers(min_value=MAX_FIELD - 40, max_value=MAX_FIELD).map(lambda n: b"N" * n),
).filter(lambda n: n.lower() not in {b"host", b"content-length", b"transfer-encoding", b"upgrade"})
good_lines = st.lists(
    st.tuples(good_names, st.sampled_from([b": ", b":", b":\t"]), good_values, trailers),
    max_size=8,
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head, either well-formed by construction (about half) or built from odd parts
    and then mutated (line endings, inserted bytes, repeated lines)."""
    if draw(st.booleans()):
        target = draw(st.sampled_from([b"/mcp", b"/up/mcp", b"/mcp?a=1&b=%2F", b"/up/mcp?"]))
        lines = [draw(st.sampled_from([b"POST", b"GET", b"DELETE"])) + b" " + target + b" HTTP/1.1"]
        lines.append(b"Host: " + draw(st.sampled_from([b"gw.example", b"127.0.0.1:8080", b""])))
        if draw(st.booleans()):
            lines.append(b"Content-Length: %d" % draw(st.integers(0, 10**6)))
        lines += [name + sep + value + tail for name, sep, value, tail in draw(good_lines)]
        order = draw(st.permutations(lines[1:]))
        return b"\r\n".join([lines[0], *order]) + b"\r\n\r\n"
    method, target, version = draw(methods), draw(targets), draw(versions)
    lines = [b"%s %s %s" % (method, target, version)]
    if draw(st.booleans()):
        lines.append(b"Host: " + draw(st.sampled_from([b"gw.example", b"127.0.0.1:8080", b""])))
    lines += [name + sep + value + tail for name, sep, value, tail in draw(header_lists)]
    if len(lines) > 1 and draw(st.integers(0, 5)) == 0:
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(lines[1:])))
    raw = b"".join(line + draw(line_ends) for line in lines) + b"\r\n"
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(raw)))
        odd = draw(st.sampled_from([b"\x00", b"\r", b"\n", b" ", b"\t", b"\x7f", b"\xe9", b"\x0b"]))
        raw = raw[:at] + odd + raw[at:]
    return raw


def examples(count: int) -> settings:
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@examples(2000)
@given(raw=heads())
def test_a_head_the_lean_plane_serves_reads_the_same_in_h11_and_aiohttp(raw: bytes) -> None:
    parsed = parse_head(raw, LANES, MAX_FIELD)
    if parsed is None:
        event("left to aiohttp")
        return
    event("served by the lean plane")
    lines = parsed.headers
    assert h11_reads(raw) == (parsed.method, parsed.target, lines)
    assert aiohttp_reads(raw) == (parsed.method, parsed.target, lines, parsed.keep_alive)
    length = [value for name, value in lines if name.lower() == b"content-length"]
    assert parsed.content_length == (int(length[0]) if length else 0)


def prefixes(raw: bytes) -> Iterator[bytes]:
    """Proper prefixes of a head, as a connection may receive them before the blank line:
    every one through the request line, then those ending around each later line break."""
    line_end = raw.index(b"\r\n") + 2
    ends = set(range(line_end + 1))
    for at in range(line_end, len(raw)):
        if raw[at] in b"\r\n":
            ends.update((at - 1, at, at + 1))
    for end in sorted(ends):
        if end < len(raw):
            yield raw[:end]


@examples(1000)
@given(raw=heads())
def test_a_head_the_lean_plane_serves_is_never_handed_off_early(raw: bytes) -> None:
    """`Plane.may_start` sees the bytes of a head that has not all arrived: it must not give
    a request the lean plane would serve to aiohttp because of where a packet ended."""
    parsed = parse_head(raw, LANES, MAX_FIELD)
    if parsed is None:
        return
    plane = Plane(LANES, MAX_FIELD)  # type: ignore[arg-type]  # lanes are never called here
    for prefix in prefixes(raw):
        assert plane.may_start(prefix), prefix


def test_a_head_cut_after_its_first_cr_stays_lean() -> None:
    """A segment ending between the request line's CR and LF: the CR waits for its LF, and the
    connection stays on the lean plane (it once compared `HTTP/1.1\\r` with `HTTP/1.1` and
    handed the connection to aiohttp)."""
    raw = head(HOST, "Content-Length: 2")
    assert parse_head(raw, LANES, MAX_FIELD) is not None
    plane = Plane(LANES, MAX_FIELD)  # type: ignore[arg-type]
    assert plane.may_start(raw[: raw.index(b"\r\n") + 1])


@pytest.mark.parametrize(
    "prefix",
    [
        b"PUT",
        b"OPTIONS /mcp",
        b"POST /other ",
        b"POST /mcpx",
        b"POST /mcp HTTP/1.0",
        b"POST /mcp HTTP/1.0\r\n",
        b"GET * ",
        b"\x16\x03\x01",
        b"PRI * HTTP/2.0",
    ],
)
def test_a_request_that_cannot_be_lean_is_handed_off_before_its_head_ends(prefix: bytes) -> None:
    assert not Plane(LANES, MAX_FIELD).may_start(prefix)  # type: ignore[arg-type]


# -- response heads ------------------------------------------------------------------------------

BREAKS = "\r\n\x00"
header_names = st.text(alphabet=TOKEN, min_size=1, max_size=10).filter(
    lambda n: (
        n.lower() not in {"content-length", "transfer-encoding", "date", "server", "connection"}
    )
)
# Field values as RFC 9110 section 5.5 has them (visible ASCII and obs-text, inner spaces and
# tabs), some with a CR, LF or NUL put in.
value_text = st.text(
    alphabet=st.characters(codec="latin-1", exclude_categories=["Cc"], exclude_characters="\x7f")
    | st.sampled_from(" \t"),
    max_size=20,
).map(lambda v: v.strip(" \t"))


@st.composite
def maybe_broken(draw: st.DrawFn, strategy: st.SearchStrategy[str]) -> str:
    text = draw(strategy)
    if draw(st.integers(0, 7)) == 0:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([*BREAKS, "\r\n", "\r\nX-Injected: 1"])) + text[at:]
    return text


@examples(1000)
@given(
    status=st.integers(min_value=200, max_value=599),
    pairs=st.lists(st.tuples(maybe_broken(header_names), maybe_broken(value_text)), max_size=6),
    close=st.booleans(),
)
def test_response_heads_read_back_in_h11_or_are_refused(
    status: int, pairs: list[tuple[str, str]], close: bool
) -> None:
    broken = any(c in part for pair in pairs for part in pair for c in BREAKS)
    try:
        raw = response_head(status, CIMultiDict(pairs), close=close)
    except ValueError:
        assert broken
        return
    assert not broken
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "gw.example")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    response = client.next_event()
    assert isinstance(response, h11.Response), response
    assert response.status_code == status
    got = [(n.decode("latin-1"), v.decode("utf-8")) for n, v in response.headers.raw_items()]
    expected = [*pairs, ("Date", got[len(pairs)][1]), ("Server", SERVER_SOFTWARE)]
    if close:
        expected.append(("Connection", "close"))
    assert got == expected


def test_response_head_keeps_the_date_and_server_given_and_replaces_connection() -> None:
    given_headers = CIMultiDict(
        [("Date", "Thu, 01 Jan 2026 00:00:00 GMT"), ("Server", "up"), ("Connection", "keep-alive")]
    )
    raw = response_head(204, given_headers, close=True)
    assert raw == (
        b"HTTP/1.1 204 No Content\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nServer: up\r\n"
        b"Connection: close\r\n\r\n"
    )
