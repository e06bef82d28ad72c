"""Differential: the lean data plane and aiohttp answer the same bytes the same way.

Two gateways with one config and one upstream, one on the lean plane (the default) and one with
`server.data_plane: aiohttp`, are sent the same raw bytes, each on a fresh connection: mostly
well-formed MCP requests with one or more of the mutations a smuggler, a fuzzer or an odd client
would make. Their answers, parsed by h11 (independent of llhttp, which both planes parse with),
must be the same apart from `Date` and the request ids, and so must whether the connection stays
open and what reached the upstream (parsed by h11 too: `tests/support/raw_upstream.py`).
Issue 18: "both planes answer every request identically".
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from gateway.web.plane.head import parse_head
from tests.conftest import Gateway, StartGateway
from tests.support.local_issuer import LocalIssuer
from tests.support.raw_exchange import Exchange, exchange
from tests.support.raw_upstream import RawUpstream, SeenRequest

PUBLIC = "https://gw.example"
HOST = b"gw.example"
APP_ORIGIN = b"https://app.example"
OPEN_ROUTE = "/mcp"
"""Anonymous."""
AUTH_ROUTE = "/up/mcp"
"""Bearer tokens with `mcp:tools`; tool `wipe` denied, `admin` needs `admin:all`."""
LANES = {OPEN_ROUTE.encode(): OPEN_ROUTE, AUTH_ROUTE.encode(): AUTH_ROUTE}
SENTINEL = b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
"""Ends an exchange: once it is answered the server closes, so nothing is timed."""


# -- the two planes ------------------------------------------------------------------------------


@dataclass
class Planes:
    lean: Gateway
    aiohttp: Gateway
    upstream: RawUpstream
    max_field: int = 8190
    """The header field limit both parsers have (`gateway.web.server`)."""
    tokens: dict[str, bytes] = field(default_factory=dict)
    """Authorization values by kind, for the authenticated route (same for both gateways: they
    share `public_url`, so a token's audience names both)."""


@pytest.fixture
async def planes(start_gateway_for: StartGateway, issuer: LocalIssuer) -> AsyncIterator[Planes]:
    upstream = RawUpstream()
    await upstream.start()
    routes = (
        {"name": "open", "route": OPEN_ROUTE, "url": upstream.url, "allow_anonymous": True},
        {
            "name": "up",
            "route": AUTH_ROUTE,
            "url": upstream.url,
            "scopes": ["mcp:tools"],
            "pass_headers": ["X-Tenant"],
            "identity_headers": {"subject": "X-User"},
            "policy": {"tools": {"wipe": "deny", "admin": ["admin:all"]}},
        },
    )
    server = {
        "allowed_origins": [APP_ORIGIN.decode()],
        # Short, so a request left waiting for bytes that never come ends in a second.
        "header_timeout": 1,
        "body_timeout": 1,
        "keepalive_timeout": 1,
    }
    auth = {"resource_server": {"authorization_servers": [issuer.auth_server()]}}
    gateways = [
        await start_gateway_for(
            *routes,
            public_url=PUBLIC,
            server={**server, "data_plane": plane},
            auth=auth,
        )
        for plane in ("lean", "aiohttp")
    ]
    resource = PUBLIC + AUTH_ROUTE
    tokens = {
        "valid": b"Bearer " + issuer.mint(issuer.claims(resource)).encode(),
        "no scope": b"Bearer " + issuer.mint(issuer.claims(resource, scope="")).encode(),
        "admin": b"Bearer "
        + issuer.mint(issuer.claims(resource, scope="mcp:tools admin:all")).encode(),
        "other audience": b"Bearer "
        + issuer.mint(issuer.claims("https://other.example/mcp")).encode(),
        "expired": b"Bearer " + issuer.mint(issuer.claims(resource, exp=1000)).encode(),
        "garbage": b"Bearer not-a-token",
        "lowercase scheme": b"bearer " + issuer.mint(issuer.claims(resource)).encode(),
        "basic": b"Basic dXNlcjpwYXNz",
        "empty": b"Bearer",
    }
    validation = gateways[0].config.token_validation()
    assert validation is not None
    max_field = max(8190, 2 * validation.max_token_bytes + 1024)
    yield Planes(gateways[0], gateways[1], upstream, max_field, tokens)
    await upstream.stop()


# -- what is sent --------------------------------------------------------------------------------


@dataclass
class Request:
    """One request as raw parts, so each part can be made odd on its own."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[bytes]
    """Complete header lines, without their line ending."""
    endings: list[bytes]
    """The line ending after each header line."""
    body: bytes

    def render(self) -> bytes:
        lines = b"".join(line + end for line, end in zip(self.headers, self.endings, strict=True))
        return b"%s %s %s\r\n%s\r\n%s" % (self.method, self.target, self.version, lines, self.body)


@dataclass
class Example:
    requests: list[Request]
    sentinel: bool

    def data(self) -> bytes:
        return b"".join(r.render() for r in self.requests) + (SENTINEL if self.sentinel else b"")

    def methods(self) -> list[str]:
        methods = [r.method.decode("latin-1") for r in self.requests]
        return [*methods, "GET"] if self.sentinel else methods


def rpc(method: str, id_: int | str | None = 1, **params: object) -> dict[str, object]:
    message: dict[str, object] = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        message["id"] = id_
    if params:
        message["params"] = params
    return message


MESSAGES = [
    rpc("tools/call", name="echo", arguments={"text": "hi"}),
    rpc("tools/call", name="wipe"),
    rpc("tools/call", name="admin"),
    rpc("tools/list"),
    rpc("initialize", protocolVersion="2025-11-25", capabilities={}, clientInfo={"name": "t"}),
    rpc("notifications/initialized", None),
    rpc("ping", "text-id"),
    [rpc("tools/list", 1), rpc("tools/call", 2, name="echo")],
    [rpc("tools/call", 1, name="wipe"), rpc("ping", None)],
    [],
    {"jsonrpc": "2.0", "id": 1},
    "just a string",
]
bodies = st.one_of(
    *[st.sampled_from(MESSAGES).map(lambda m: json.dumps(m).encode())] * 4,
    st.sampled_from(
        [
            b"",
            b"{",
            b"not json",
            b'{"jsonrpc":"2.0","id":1,"method":"ping"}x',
            b"\xff\xfe",
            b'{"a":1,"a":2}',
            b"null",
        ]
    ),
)

METHODS = [b"POST"] * 8 + [b"GET", b"DELETE", b"PUT", b"OPTIONS", b"HEAD", b"post", b"get"]
VERSIONS = [b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 "]


def targets(route: str) -> st.SearchStrategy[bytes]:
    path = route.encode()
    head, last = path[:-1], path[-1:]
    return st.sampled_from(
        [path] * 10
        + [
            path + b"?x=1",
            path + b"?",
            head + b"%" + b"%02X" % last[0],  # /mc%70
            head + b"%" + b"%02x" % last[0],
            path + b"/",
            b"/" + path,  # //mcp
            path.upper(),
            b"http://gw.example" + path,
            b"http://127.0.0.1" + path,
            b"*",
            path + b"#frag",
            path + b"?a=1#frag",
            path + b"?q=\xff",
            path + b"?q=a b",
            path + b"?q=%0d%0a",
            path + b"?q=%zz",
            path + b'?q="<>"',
            path + b";x",
            path + b"\x7f",
            b"/healthz",
            b"/.well-known/oauth-protected-resource" + path,
        ]
    )


ORIGINS = [APP_ORIGIN, b"https://evil.example", b"null", PUBLIC.encode(), b"HTTPS://APP.EXAMPLE"]

# Odd framings of the body: how Content-Length (or Transfer-Encoding) describes it.
FRAMINGS = [
    "none",
    "zeros",
    "plus",
    "duplicate equal",
    "duplicate different",
    "shorter",
    "longer",
    "negative",
    "list",
    "spaces",
    "chunked",
    "chunked and length",
    "chunked bad",
    "chunked gzip",
    "identity",
]
PLAIN_EXTRAS: list[tuple[bytes, bytes]] = [
    (b"Connection", b"close"),
    (b"Connection", b"keep-alive"),
    (b"Mcp-Session-Id", b"s-1"),
    (b"MCP-Protocol-Version", b"2025-11-25"),
    (b"MCP-Protocol-Version", b"1999-01-01"),
    (b"X-Tenant", b"t1"),
    (b"X-User", b"mallory"),
    (b"Content-Type", b"text/plain"),
    (b"Accept", b"text/html"),
    (b"Forwarded", b"for=1.2.3.4"),
    (b"X-Forwarded-For", b"1.2.3.4"),
    (b"Cookie", b"a=b"),
    (b"Last-Event-ID", b"7"),
    (b"Mcp-Method", b"tools/call"),
]
"""Ordinary headers: the lean plane serves requests with them."""
EXTRAS: list[tuple[bytes, bytes]] = [
    (b"Connection", b"close"),
    (b"Connection", b"keep-alive"),
    (b"Connection", b"upgrade"),
    (b"Upgrade", b"websocket"),
    (b"Upgrade", b"h2c"),
    (b"Expect", b"100-continue"),
    (b"Expect", b"nothing"),
    (b"Content-Encoding", b"gzip"),
    (b"Content-Encoding", b"identity"),
    (b"Mcp-Session-Id", b"s-1"),
    (b"MCP-Protocol-Version", b"2025-11-25"),
    (b"MCP-Protocol-Version", b"1999-01-01"),
    (b"X-Tenant", b"t1"),
    (b"X-User", b"mallory"),
    (b"Content-Type", b"text/plain"),
    (b"Accept", b"text/html"),
    (b"Forwarded", b"for=1.2.3.4"),
    (b"Cookie", b"a=b"),
    (b"Last-Event-ID", b"7"),
]
# What may be done to one header line.
LINE_MUTATIONS = [
    "upper name",
    "lower name",
    "no space",
    "tab before",
    "spaces after",
    "tab after",
    "empty value",
    "obs-fold",
    "bare LF",
    "bare CR",
    "NUL",
    "obs-text",
    "long value",
    "very long value",
    "space before colon",
    "no colon",
    "control char",
    "duplicate",
]


def mutate_line(name: bytes, value: bytes, how: str) -> tuple[list[bytes], bytes]:
    """The header line(s) for `name: value` made odd by `how`, and its line ending."""
    sep, end = b": ", b"\r\n"
    if how == "upper name":
        name = name.upper()
    elif how == "lower name":
        name = name.lower()
    elif how == "no space":
        sep = b":"
    elif how == "tab before":
        sep = b":\t"
    elif how == "spaces after":
        value += b"   "
    elif how == "tab after":
        value += b"\t"
    elif how == "empty value":
        value = b""
    elif how == "obs-fold":
        value = value[: len(value) // 2] + b"\r\n " + value[len(value) // 2 :]
    elif how == "bare LF":
        end = b"\n"
    elif how == "bare CR":
        end = b"\r"
    elif how == "NUL":
        value += b"\x00x"
    elif how == "obs-text":
        value += b"\xe9"
    elif how == "long value":
        value += b"v" * 4000
    elif how == "very long value":
        value += b"v" * 9000
    elif how == "space before colon":
        sep = b" : "
    elif how == "no colon":
        sep = b" "
    elif how == "control char":
        value += b"\x01"
    elif how == "duplicate":
        return [name + sep + value, name + sep + value], end
    return [name + sep + value], end


def chunked(body: bytes) -> bytes:
    half = len(body) // 2
    parts = [part for part in (body[:half], body[half:]) if part]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def frame(framing: str, body: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The framing headers for `body` and the bytes sent as the body."""
    n = len(body)
    cl = b"Content-Length"
    te = b"Transfer-Encoding"
    match framing:
        case "length":
            return [(cl, b"%d" % n)], body
        case "none":
            return [], body
        case "zeros":
            return [(cl, b"00%d" % n)], body
        case "plus":
            return [(cl, b"+%d" % n)], body
        case "duplicate equal":
            return [(cl, b"%d" % n), (cl, b"%d" % n)], body
        case "duplicate different":
            return [(cl, b"%d" % n), (cl, b"%d" % (n + 1))], body
        case "shorter":
            return [(cl, b"%d" % max(n - 3, 0))], body
        case "longer":  # waits for the rest: the server's body timeout ends it
            return [(cl, b"%d" % (n + 2))], body
        case "negative":
            return [(cl, b"-%d" % n)], body
        case "list":
            return [(cl, b"%d, %d" % (n, n))], body
        case "spaces":
            return [(cl, b" %d " % n)], body
        case "chunked":
            return [(te, b"chunked")], chunked(body)
        case "chunked and length":
            return [(te, b"chunked"), (cl, b"%d" % n)], chunked(body)
        case "chunked bad":
            return [(te, b"chunked")], b"zz\r\n" + body + b"\r\n0\r\n\r\n"
        case "chunked gzip":
            return [(te, b"gzip, chunked")], chunked(gzip.compress(body))
        case "identity":
            return [(te, b"identity"), (cl, b"%d" % n)], body
    raise AssertionError(framing)


MUTATIONS = ["method", "target", "version", "host", "origin", "extra", "framing", "line", "order"]
"""What may be made odd in a request (a few at a time): most take it off the lean plane."""
ODD_METHODS = [b"PUT", b"OPTIONS", b"HEAD", b"PATCH", b"post", b"get", b"Post"]
ODD_VERSIONS = [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 ", b"HTTP/1"]


@st.composite
def mcp_requests(draw: st.DrawFn, tokens: Sequence[tuple[str, bytes]]) -> Request:
    """A request to one of the two routes: a plain one the lean plane serves (varied in body,
    credentials, Origin and ordinary headers), with none, one or a few mutations."""
    count = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 1, 2, 2, 3]))
    odd = set(draw(st.lists(st.sampled_from(MUTATIONS), min_size=count, max_size=count)))
    for mutation in sorted(odd):
        event(f"mutation {mutation}")
    route = draw(st.sampled_from([OPEN_ROUTE, AUTH_ROUTE]))
    body = draw(bodies)
    method = draw(st.sampled_from([b"POST"] * 6 + [b"GET", b"DELETE"]))
    if "method" in odd:
        method = draw(st.sampled_from(ODD_METHODS))
    if method != b"POST" and draw(st.booleans()):
        body = b""
    path = route.encode()
    target = draw(st.sampled_from([path, path, path, path + b"?x=1", path + b"?a=%20&b"]))
    if "target" in odd:
        target = draw(targets(route))
    version = draw(st.sampled_from(ODD_VERSIONS)) if "version" in odd else b"HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = []
    hosts = [HOST] * 6 + [b"gw.example:443", b"GW.EXAMPLE", b"evil.example"]
    host: bytes | None = draw(st.sampled_from(hosts))
    if "host" in odd:
        host = draw(st.sampled_from([None, b"", b"127.0.0.1", b"gw.example:x", b"twice"]))
    if host == b"twice":
        headers += [(b"Host", HOST), (b"Host", draw(st.sampled_from([HOST, b"evil.example"])))]
    elif host is not None:
        headers.append((b"Host", host))
    headers.append((b"Content-Type", b"application/json"))
    headers.append((b"Accept", b"application/json, text/event-stream"))
    if route == AUTH_ROUTE or draw(st.integers(0, 9)) == 0:
        kind, value = draw(st.sampled_from(tokens))
        event(f"token {kind}")
        if kind != "none":
            headers.append((b"Authorization", value))
    if draw(st.integers(0, 3)) == 0:
        headers.append((b"Origin", draw(st.sampled_from([APP_ORIGIN, PUBLIC.encode()]))))
    if "origin" in odd:
        for origin in draw(st.lists(st.sampled_from(ORIGINS), min_size=1, max_size=2)):
            headers.append((b"Origin", origin))
    headers += draw(st.lists(st.sampled_from(PLAIN_EXTRAS), max_size=2))
    if "extra" in odd:
        headers += draw(st.lists(st.sampled_from(EXTRAS), min_size=1, max_size=2))
    framing = draw(st.sampled_from(FRAMINGS)) if "framing" in odd else "length"
    if "framing" in odd:
        event(f"framing {framing}")
    framing_headers, sent_body = frame(framing, body)
    gzipped = any(name == b"Content-Encoding" and value == b"gzip" for name, value in headers)
    if gzipped and framing == "length" and draw(st.booleans()):
        sent_body = gzip.compress(body)
        framing_headers = [(b"Content-Length", b"%d" % len(sent_body))]
    if method != b"POST" and not body and framing == "length" and draw(st.booleans()):
        framing_headers = []  # a GET or DELETE without Content-Length
    headers += framing_headers
    if "order" in odd:
        headers = draw(st.permutations(headers))
    lines: list[bytes] = []
    endings: list[bytes] = []
    changed: dict[int, str] = {}
    if "line" in odd:
        index = draw(st.integers(0, len(headers) - 1))
        changed[index] = draw(st.sampled_from(LINE_MUTATIONS))
        event(f"line {changed[index]}")
    for index, (name, value) in enumerate(headers):
        how = changed.get(index)
        made, end = mutate_line(name, value, how) if how else ([name + b": " + value], b"\r\n")
        lines += made
        endings += [b"\r\n"] * (len(made) - 1) + [end]
    return Request(method, target, version, lines, endings, sent_body)


def plain_request(route: str, message: object, *, extra: bytes = b"") -> Request:
    body = json.dumps(message).encode()
    headers = [
        b"Host: gw.example",
        b"Content-Type: application/json",
        b"Accept: application/json, text/event-stream",
        *([extra] if extra else []),
        b"Content-Length: %d" % len(body),
    ]
    return Request(b"POST", route.encode(), b"HTTP/1.1", headers, [b"\r\n"] * len(headers), body)


HEALTHZ = Request(b"GET", b"/healthz", b"HTTP/1.1", [b"Host: gw.example"], [b"\r\n"], b"")


def examples(tokens: Sequence[tuple[str, bytes]]) -> st.SearchStrategy[Example]:
    seconds = st.one_of(
        st.just(HEALTHZ),
        st.just(plain_request(OPEN_ROUTE, rpc("tools/list", 7))),
        mcp_requests(tokens),
    )
    return st.builds(
        lambda first, second, sentinel: Example([first, *second], sentinel),
        mcp_requests(tokens),
        st.lists(seconds, max_size=2),
        st.booleans(),
    )


# -- what comes back -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    exchange: Exchange
    upstream: list[SeenRequest]
    upstream_errors: list[str]

    def normalized(self) -> dict[str, object]:
        return {
            **self.exchange.normalized(),
            "upstream": [
                (
                    seen.method,
                    seen.target,
                    tuple((n, "<volatile>" if n == "x-request-id" else v) for n, v in seen.headers),
                    seen.body,
                )
                for seen in self.upstream
            ],
            "upstream errors": self.upstream_errors,
        }


def send(
    planes: Planes,
    gateway: Gateway,
    example: Example,
    data: bytes | Sequence[bytes] | None = None,
) -> Outcome:
    """`example` (or `data` in its place: bytes, or writes) to `gateway` on a new connection."""
    mark = planes.upstream.snapshot()
    result = exchange(
        gateway.running.port,
        example.data() if data is None else data,
        example.methods(),
        until_closed=example.sentinel,
    )
    seen, errors = planes.upstream.since(mark)
    return Outcome(result, seen, errors)


def lean_segments(data: bytes, max_field: int) -> list[bytes]:
    """`data` cut after each leading request the lean plane serves (`parse_head`, and its
    `Content-Length` body); the last part is the rest, which the lean plane hands to aiohttp
    in one piece."""
    parts: list[bytes] = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        head = parse_head(data[: end + 4], LANES, max_field)
        size = end + 4 + (head.content_length if head is not None else 0)
        if head is None or size >= len(data):
            break
        parts.append(data[:size])
        data = data[size:]
    return [*parts, data]


STALLED_ANSWER_HEADERS = frozenset(
    {b"x-request-id", b"access-control-allow-origin", b"access-control-expose-headers", b"vary"}
)


def without_known_differences(outcome: Outcome) -> dict[str, object]:
    """The outcome to compare, without what is known to differ (see
    `test_body_timeout_answer_is_the_same`): the 408 for a body that does not arrive in time
    is sent by aiohttp's error middleware itself, before the outer middlewares can add
    `X-Request-Id` and the CORS headers; the lean plane adds them as to any answer."""
    normalized = outcome.normalized()
    normalized["answers"] = [
        (
            status,
            *rest[:2],
            tuple(h for h in rest[2] if h[0] not in STALLED_ANSWER_HEADERS),
            *rest[3:],
        )
        if status == 408
        else (status, *rest)
        for status, *rest in normalized["answers"]  # type: ignore[attr-defined]
    ]
    return normalized


def compare(
    planes: Planes, example: Example, *, hypothesis: bool = False
) -> tuple[Outcome, Outcome]:
    """Both planes' outcomes for `example`, asserted equal.

    Known differences are taken out (`without_known_differences`), and one is worked around.
    How aiohttp answers a run of pipelined requests depends on how the bytes arrive: llhttp
    takes in one read up to the end of a request (or more) before aiohttp answers an earlier
    one, so bytes it refuses can cost the request before them its answer, and a request with
    `Connection: close` followed by more bytes is refused whole (400, "Data after `Connection:
    close`") when they come in one read, and answered when they do not. The lean plane answers
    each request it serves before it looks at the next, and hands the rest to aiohttp in one
    piece: what aiohttp would answer to these bytes in those reads. When the two differ, aiohttp
    is sent the bytes again in those pieces, each after the answers to the ones before
    (`test_a_request_and_refused_bytes_in_one_read`).
    """
    lean = send(planes, planes.lean, example)
    aiohttp = send(planes, planes.aiohttp, example)
    if without_known_differences(lean) != without_known_differences(aiohttp):
        parts = lean_segments(example.data(), planes.max_field)
        if len(parts) > 1:
            if hypothesis:
                event("sent to aiohttp again, in the lean plane's pieces")
            aiohttp = send(planes, planes.aiohttp, example, parts)
    if hypothesis:
        note(f"sent: {example.data()!r}")
        note(f"lean: {lean.exchange.raw!r}")
        note(f"aiohttp: {aiohttp.exchange.raw!r}")
    assert without_known_differences(lean) == without_known_differences(aiohttp), (
        example.data(),
        lean.exchange.raw,
        aiohttp.exchange.raw,
    )
    return lean, aiohttp


# -- the property --------------------------------------------------------------------------------


async def test_both_planes_answer_any_request_alike(planes: Planes) -> None:
    tokens = [("none", b""), *[("valid", planes.tokens["valid"])] * 4, *planes.tokens.items()]

    @settings(
        max_examples=int(os.environ.get("DIFF_EXAMPLES", "300")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(example=examples(tokens))
    def check(example: Example) -> None:
        lean, _ = compare(planes, example, hypothesis=True)
        finals = lean.exchange.finals()
        event(f"statuses {[a.status for a in finals]}")
        event("closed" if lean.exchange.closed else "open")

    await asyncio.to_thread(check)


# -- the cases most likely to differ -------------------------------------------------------------


async def run(planes: Planes, example: Example) -> tuple[Outcome, Outcome]:
    return await asyncio.to_thread(compare, planes, example)


async def test_pipelined_mcp_request_and_probe(planes: Planes) -> None:
    example = Example([plain_request(OPEN_ROUTE, rpc("tools/list")), HEALTHZ], sentinel=False)
    lean, _ = await run(planes, example)
    assert [a.status for a in lean.exchange.finals()] == [200, 200]
    assert len(lean.upstream) == 1


async def test_pipelined_mcp_requests_then_close(planes: Planes) -> None:
    first = plain_request(OPEN_ROUTE, rpc("tools/list", 1))
    second = plain_request(AUTH_ROUTE, rpc("tools/list", 2))  # no token: 401
    example = Example([first, second, HEALTHZ], sentinel=True)
    lean, _ = await run(planes, example)
    assert [a.status for a in lean.exchange.finals()] == [200, 401, 200, 200]
    assert lean.exchange.closed


async def test_expect_100_continue(planes: Planes) -> None:
    request = plain_request(OPEN_ROUTE, rpc("tools/list"), extra=b"Expect: 100-continue")
    lean, _ = await run(planes, Example([request], sentinel=True))
    assert [a.status for a in lean.exchange.answers] == [100, 200, 200]


async def test_chunked_post(planes: Planes) -> None:
    body = json.dumps(rpc("tools/list")).encode()
    headers = [
        b"Host: gw.example",
        b"Content-Type: application/json",
        b"Accept: application/json, text/event-stream",
        b"Transfer-Encoding: chunked",
    ]
    request = Request(b"POST", b"/mcp", b"HTTP/1.1", headers, [b"\r\n"] * 4, chunked(body))
    lean, _ = await run(planes, Example([request], sentinel=True))
    assert [a.status for a in lean.exchange.finals()][-1] == 200
    assert [seen.body for seen in lean.upstream] == [body]


@pytest.mark.parametrize("second", [b"Content-Length: 0", b"Content-Length: 99"])
async def test_duplicate_content_length(planes: Planes, second: bytes) -> None:
    request = plain_request(OPEN_ROUTE, rpc("tools/list"), extra=second)
    lean, _ = await run(planes, Example([request], sentinel=True))
    assert lean.exchange.finals()[0].status == 400
    assert lean.upstream == []


async def test_duplicate_equal_content_length(planes: Planes) -> None:
    body = json.dumps(rpc("tools/list")).encode()
    request = plain_request(OPEN_ROUTE, rpc("tools/list"), extra=b"Content-Length: %d" % len(body))
    await run(planes, Example([request], sentinel=True))


@pytest.mark.parametrize("target", [b"/mc%70", b"/mc%70?x=1", b"/%6Dcp", b"/up/mc%70"])
async def test_percent_encoded_route_path(planes: Planes, target: bytes) -> None:
    request = plain_request(OPEN_ROUTE, rpc("tools/list"))
    request.target = target
    lean, _ = await run(planes, Example([request], sentinel=True))
    assert lean.exchange.finals()[0].status in (200, 401)


async def test_http_1_0_keep_alive(planes: Planes) -> None:
    request = plain_request(OPEN_ROUTE, rpc("tools/list"), extra=b"Connection: keep-alive")
    request.version = b"HTTP/1.0"
    lean, _ = await run(planes, Example([request, HEALTHZ], sentinel=False))
    assert [a.status for a in lean.exchange.finals()] == [200, 200]


async def test_http_1_0(planes: Planes) -> None:
    request = plain_request(OPEN_ROUTE, rpc("tools/list"))
    request.version = b"HTTP/1.0"
    lean, _ = await run(planes, Example([request], sentinel=False))
    assert [a.status for a in lean.exchange.finals()] == [200]


async def test_http_1_0_with_pipelined_bytes(planes: Planes) -> None:
    """aiohttp refuses bytes after an HTTP/1.0 request without keep-alive (400, "Data after
    `Connection: close`") rather than answer it: so must the lean plane."""
    request = plain_request(OPEN_ROUTE, rpc("tools/list"))
    request.version = b"HTTP/1.0"
    lean, _ = await run(planes, Example([request, HEALTHZ], sentinel=False))
    assert [a.status for a in lean.exchange.finals()] == [400]


async def test_declared_body_over_the_limit(planes: Planes) -> None:
    """413 on the declared length alone, with `Connection: close`. (When the connection then
    closes differs, and is not compared: the lean plane closes at once, aiohttp first reads
    and discards what comes of the body for up to 10 s, its `lingering_time`.)"""
    request = plain_request(OPEN_ROUTE, rpc("tools/list"))
    request.headers[-1] = b"Content-Length: %d" % (8 * 1024 * 1024)
    lean, _ = await run(planes, Example([request], sentinel=False))
    assert [a.status for a in lean.exchange.answers] == [413]
    assert lean.exchange.answers[0].values(b"connection") == [b"close"]


async def test_body_timeout_answer_is_the_same(planes: Planes) -> None:
    """A body shorter than its Content-Length: both planes answer 408 after `body_timeout`,
    with the same headers (aiohttp's error middleware once sent its 408 without the request id
    and CORS headers every other answer gets)."""
    request = plain_request(OPEN_ROUTE, rpc("tools/list"), extra=b"Origin: " + APP_ORIGIN)
    request.body = request.body[:-2]
    example = Example([request], sentinel=False)
    lean = await asyncio.to_thread(send, planes, planes.lean, example)
    aiohttp = await asyncio.to_thread(send, planes, planes.aiohttp, example)
    assert [a.status for a in lean.exchange.answers] == [408]
    assert lean.normalized() == aiohttp.normalized()


@pytest.mark.parametrize(
    "end",
    [b"\n\r\n", b"\n\n", b"\r\n\n", b"\r\r\n"],
    ids=["LF-CRLF", "LF-LF", "CRLF-LF", "CR-CRLF"],
)
async def test_head_ending_in_a_bare_line_break(planes: Planes, end: bytes) -> None:
    """A head that never holds CRLF CRLF: aiohttp answers 400 at once; the lean plane waited
    for the end of a head that never came, and closed without an answer after
    `header_timeout`."""
    body = json.dumps(rpc("tools/list")).encode()
    data = (
        b"POST /mcp HTTP/1.1\r\nHost: gw.example\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d%s%s" % (len(body), end, body)
    )
    example = Example([plain_request(OPEN_ROUTE, rpc("tools/list"))], sentinel=False)
    lean = await asyncio.to_thread(send, planes, planes.lean, example, data)
    aiohttp = await asyncio.to_thread(send, planes, planes.aiohttp, example, data)
    assert [a.status for a in aiohttp.exchange.answers] == [400]
    assert lean.normalized() == aiohttp.normalized()


async def test_a_request_and_refused_bytes_in_one_read(planes: Planes) -> None:
    """A known difference. Bytes aiohttp refuses after a request, in the same read: aiohttp
    answers only its 400 (the request is lost, and never reaches the upstream); the lean plane
    answers the request, then hands the rest to aiohttp, which answers its 400, as aiohttp
    itself does when the bytes come in separate reads."""
    request = plain_request(OPEN_ROUTE, rpc("tools/list"))
    example = Example([request], sentinel=True)
    data = request.render() + b"}}}\r\n\r\n"
    lean = await asyncio.to_thread(send, planes, planes.lean, example, data)
    whole = await asyncio.to_thread(send, planes, planes.aiohttp, example, data)
    parts = lean_segments(data, planes.max_field)
    assert len(parts) == 2
    apart = await asyncio.to_thread(send, planes, planes.aiohttp, example, parts)
    assert [a.status for a in lean.exchange.answers] == [200, 400]
    assert [a.status for a in whole.exchange.answers] == [400]
    assert (len(lean.upstream), len(whole.upstream)) == (1, 0)
    assert without_known_differences(lean) == without_known_differences(apart)


async def test_answer_before_the_body_arrived(planes: Planes) -> None:
    """A 401 written before the body came (authentication runs first); the body, and a second
    request, are sent once it is read. Both planes read and drop the rest of the body and
    answer the second request (the lean plane once closed the connection, unannounced)."""
    body = json.dumps(rpc("tools/list")).encode()
    request = plain_request(AUTH_ROUTE, rpc("tools/list"))
    head = request.render()[: -len(body)]
    example = Example([request, HEALTHZ], sentinel=False)
    lean, aiohttp = [
        await asyncio.to_thread(send, planes, gateway, example, [head, body + HEALTHZ.render()])
        for gateway in (planes.lean, planes.aiohttp)
    ]
    assert [a.status for a in aiohttp.exchange.answers] == [401, 200]
    assert without_known_differences(lean) == without_known_differences(aiohttp)
