"""Every gateway endpoint against malformed input (issue 14, acceptance item 3).

Each case sends one hand-built HTTP/1.1 request over a raw socket (so percent-escapes, bytes
and repeated headers arrive exactly as written) to a real gateway, and asserts that the answer
is not a 5xx, except 502/503/504 (an upstream or dependency the gateway depends on; documented),
and that the gateway wrote no error-level log line. Endpoints and malformations:

- gateways: facade mode with local users (every authorization-server endpoint, the
  metadata documents, probes, an MCP route without a token), federated login against a real
  OpenID provider (`oidc-provider`), and a resource server with a real `mcp` SDK upstream and
  a valid token (so malformed MCP requests get past authentication);
- malformations: wrong methods, missing and repeated parameters, bad percent-escapes, invalid
  UTF-8, lone surrogates and NUL in queries and form bodies, wrong content types, oversized
  values, JSON that is not an object, huge numbers, deep nesting, invalid headers.

A case that fails because of code another part of the issue owns is marked `xfail(strict=True)`
with the reason, so it turns into a failure as soon as it is fixed (then the mark goes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from base64 import urlsafe_b64encode
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from gateway.web.facade import FLOW_COOKIE
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.facade import facade_gateway, write_users
from tests.support.local_issuer import LocalIssuer
from tests.support.oidc import OidcProviderProcess, oidc_provider
from tests.support.processes import HttpServerProcess, free_port
from tests.support.sdk_server import sdk_server
from tests.support.secrets import remember

BOUND = 15.0  # seconds for an answer: longer is a failure, not a hang
PASSWORD = remember("sweep password that is long enough")
ROUTE = "/files/mcp"
DOCUMENTED_5XX = frozenset({502, 503, 504})
TRUSTED_PROXIES = ["127.0.0.1/32"]
"""The sweep's client is its own reverse proxy: forwarding headers are parsed on every probe."""
REDIRECT_URI = "http://127.0.0.1:6274/callback"
VERIFIER = "v" * 50
CHALLENGE = urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
MCP_HEADERS = (
    ("Accept", "application/json, text/event-stream"),
    ("MCP-Protocol-Version", "2025-11-25"),
)
RPC_CALL = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
    b'"arguments":{"text":"hi"}}}'
)


# -- requests ---------------------------------------------------------------------------------


@dataclass
class Probe:
    """One request, as raw as it goes on the wire."""

    method: str
    path: str
    query: str = ""
    """Already percent-encoded (or deliberately not): written into the target as it is."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    chunked: bool = False
    """Send the body with `Transfer-Encoding: chunked` (one chunk with an extension, a
    trailer) instead of `Content-Length`."""
    target: str | None = None
    """The request target as written, instead of path and query (absolute or asterisk form)."""
    version: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def without(self, name: str) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers if k.lower() != name.lower()]

    def encode(self, port: int) -> bytes:
        target = self.target or self.path + (f"?{self.query}" if self.query else "")
        lines = [f"{self.method} {target} {self.version}", "Connection: close"]
        if self.header("Host") is None:
            lines.append(f"Host: 127.0.0.1:{port}")
        lines += [f"{k}: {v}" for k, v in self.headers]
        body = self.body or b""
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
            body = b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(body), body)
        elif self.body is not None:
            lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        return head + body


async def send(port: int, raw: bytes) -> int:
    """Send `raw` and return the answer's status (0: the connection closed without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(raw)
            await writer.drain()

    writing = asyncio.create_task(write())
    try:
        status = 100
        while status == 100:  # interim answers (Expect: 100-continue) come first
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
            status = int(head.split(b" ", 2)[1])
        length = re.search(rb"\r\ncontent-length: *(\d+)", head.lower())
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            if length is not None:
                await asyncio.wait_for(reader.readexactly(int(length.group(1))), BOUND)
            elif b"text/event-stream" not in head.lower():  # a stream would not end by itself
                await asyncio.wait_for(reader.read(), BOUND)
        return status
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0
    finally:
        writing.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    id: str
    mode: str
    """"local" (facade, local users), "federated", or "resource" (a token, a real upstream)."""
    method: str
    path: str
    body: str = "none"
    """"none", "form", "json" or "mcp": what the endpoint reads."""
    params: tuple[str, ...] = ()
    """The query or form parameters it reads."""
    other_methods: tuple[str, ...] = ("PUT", "PATCH", "DELETE", "TRACE", "BREW", "HEAD")


@dataclass
class Target:
    """A running gateway of one mode and what a well-formed request to it needs."""

    gw: Gateway
    values: dict[str, str]
    """Well-formed values of the endpoints' parameters (client_id, state, ...)."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Headers every well-formed request carries (a token on the resource route)."""


AUTHORIZE_PARAMS = (
    "response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method",
    "state", "resource", "scope",
)  # fmt: skip
ENDPOINTS = [
    Endpoint("as-metadata", "local", "GET", "/.well-known/oauth-authorization-server"),
    Endpoint("oidc-metadata", "local", "GET", "/.well-known/openid-configuration"),
    Endpoint("resource-metadata", "local", "GET", "/.well-known/oauth-protected-resource" + ROUTE),
    Endpoint("jwks", "local", "GET", "/oauth/jwks"),
    Endpoint(
        "register", "local", "POST", "/oauth/register", "json",
        other_methods=("GET", "PUT", "DELETE", "BREW"),
    ),
    Endpoint("authorize", "local", "GET", "/oauth/authorize", params=AUTHORIZE_PARAMS),
    Endpoint(
        "sign-in", "local", "POST", "/oauth/sign-in", "form", ("state", "username", "password"),
        other_methods=("GET", "PUT", "DELETE", "BREW"),
    ),
    Endpoint(
        "consent", "local", "POST", "/oauth/consent", "form", ("state", "decision"),
        other_methods=("GET", "PUT", "DELETE", "BREW"),
    ),
    Endpoint(
        "token", "local", "POST", "/oauth/token", "form",
        ("grant_type", "code", "client_id", "redirect_uri", "code_verifier", "refresh_token",
         "resource"),
        other_methods=("GET", "PUT", "DELETE", "BREW"),
    ),
    Endpoint(
        "revoke", "local", "POST", "/oauth/revoke", "form", ("token", "client_id",
                                                               "token_type_hint"),
        other_methods=("GET", "PUT", "DELETE", "BREW"),
    ),
    Endpoint("callback-local", "local", "GET", "/oauth/callback", params=("state", "code", "iss")),
    Endpoint("healthz", "local", "GET", "/healthz"),
    Endpoint("readyz", "local", "GET", "/readyz"),
    Endpoint("metrics", "local", "GET", "/metrics"),
    Endpoint("unknown-path", "local", "GET", "/no/such/path"),
    Endpoint(
        "mcp-no-token", "local", "POST", ROUTE, "mcp", other_methods=("PUT", "PATCH", "BREW")
    ),
    Endpoint("callback", "federated", "GET", "/oauth/callback", params=("state", "code", "iss")),
    Endpoint("authorize-federated", "federated", "GET", "/oauth/authorize",
             params=AUTHORIZE_PARAMS),
    Endpoint(
        "sign-in-federated", "federated", "POST", "/oauth/sign-in", "form",
        ("state", "username", "password"), other_methods=("GET", "BREW"),
    ),
    Endpoint(
        "mcp-post", "resource", "POST", ROUTE, "mcp",
        other_methods=("PUT", "PATCH", "TRACE", "BREW", "HEAD"),
    ),
    Endpoint("mcp-get", "resource", "GET", ROUTE, other_methods=()),
    Endpoint("mcp-delete", "resource", "DELETE", ROUTE, other_methods=()),
]  # fmt: skip


def baseline(endpoint: Endpoint, target: Target) -> Probe:
    """A well-formed request to `endpoint` (the malformations change one thing in it)."""
    return request_for(endpoint, target.values, target.gw.base, target.headers)


def request_for(
    endpoint: Endpoint, values: dict[str, str], base: str, headers: list[tuple[str, str]]
) -> Probe:
    probe = Probe(endpoint.method, endpoint.path, headers=list(headers))
    if endpoint.mode == "resource":
        probe.headers += MCP_HEADERS
        if endpoint.method == "POST":
            probe.headers.append(("Content-Type", "application/json"))
            probe.body = RPC_CALL
        return probe
    if endpoint.body == "mcp":
        probe.headers += [*MCP_HEADERS, ("Content-Type", "application/json")]
        probe.body = RPC_CALL
    elif endpoint.body == "json":
        probe.headers.append(("Content-Type", "application/json"))
        probe.body = json.dumps(
            {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}
        ).encode()
    elif endpoint.body == "form":
        probe.headers += [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", base),
        ]
        probe.body = encode_form({name: values.get(name, "x") for name in endpoint.params}).encode()
    elif endpoint.params:
        probe.query = encode_form({name: values.get(name, "x") for name in endpoint.params})
        if endpoint.path == "/oauth/callback":
            probe.query = encode_form({"state": values.get("state", "x"), "code": "c"})
    return probe


def encode_form(fields: dict[str, str]) -> str:
    return urlencode(fields)


# -- malformations ----------------------------------------------------------------------------

Malform = Callable[[Probe, Endpoint], Probe | None]
"""Changes a well-formed probe; None: not applicable to this endpoint."""


def _query(value: str) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe:
        names = endpoint.params or ("x",)
        probe.query = "&".join(f"{name}={value}" for name in names)
        return probe

    return malform


def _set_query(text: str) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe:
        probe.query = text
        return probe

    return malform


def _path(path: Callable[[str], str]) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe:
        probe.path = path(probe.path)
        return probe

    return malform


def _wire(**changes: Any) -> Malform:
    """Change how the request is framed: `chunked`, `target`, `version`."""

    def malform(probe: Probe, endpoint: Endpoint) -> Probe | None:
        if changes.get("chunked") and probe.body is None:
            return None
        for name, value in changes.items():
            setattr(probe, name, value.replace("{path}", probe.path) if name == "target" else value)
        return probe

    return malform


def _form_body(text: bytes) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe | None:
        if endpoint.body != "form":
            return None
        names = endpoint.params
        probe.body = b"&".join(name.encode() + b"=" + text for name in names)
        return probe

    return malform


def _body(content_type: str | None, body: bytes, kinds: tuple[str, ...]) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe | None:
        if endpoint.body not in kinds:
            return None
        probe.headers = probe.without("Content-Type")
        if content_type is not None:
            probe.headers.append(("Content-Type", content_type))
        probe.body = body
        return probe

    return malform


def _json(body: bytes) -> Malform:
    return _body("application/json", body, ("json", "mcp"))


def _method(method: str) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe | None:
        if method not in endpoint.other_methods:
            return None
        probe.method = method
        return probe

    return malform


def _repeat_params(probe: Probe, endpoint: Endpoint) -> Probe | None:
    if not endpoint.params:
        return None
    if endpoint.body == "form" and probe.body is not None:
        probe.body = probe.body + b"&" + probe.body
    else:
        probe.query = probe.query + "&" + probe.query
    return probe


def _missing_params(probe: Probe, endpoint: Endpoint) -> Probe | None:
    if not endpoint.params:
        return None
    if endpoint.body == "form":
        probe.body = b""
    else:
        probe.query = ""
    return probe


def _header(name: str, value: str, *, replace: bool = True) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe:
        if replace:
            probe.headers = probe.without(name)
        probe.headers.append((name, value))
        return probe

    return malform


def _repeat_header(name: str) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe | None:
        value = probe.header(name)
        if value is None:
            return None
        probe.headers.append((name, value))
        return probe

    return malform


def _get_with_body(probe: Probe, endpoint: Endpoint) -> Probe | None:
    if endpoint.method != "GET":
        return None
    probe.headers.append(("Content-Type", "application/json"))
    probe.body = b'{"a": 1}'
    return probe


def _preflight(origin: str) -> Malform:
    def malform(probe: Probe, endpoint: Endpoint) -> Probe:
        probe.method = "OPTIONS"
        probe.body = None
        probe.headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", endpoint.method),
            ("Access-Control-Request-Headers", "content-type, x-\u00e9, " + "a" * 3000),
        ]
        return probe

    return malform


def _unchanged(probe: Probe, endpoint: Endpoint) -> Probe:
    return probe


DEEP = b"[" * 100_000 + b"]" * 100_000
MALFORMATIONS: dict[str, Malform] = {
    "well-formed": _unchanged,
    # methods
    **{f"method-{m.lower()}": _method(m) for m in ("GET", "PUT", "PATCH", "DELETE", "TRACE")},
    "method-head": _method("HEAD"),
    "method-unknown": _method("BREW"),
    "options-not-a-preflight": lambda p, e: Probe("OPTIONS", p.path, p.query, p.headers),
    "preflight-foreign-origin": _preflight("https://evil.example"),
    "preflight-own-origin-odd-headers": _preflight("null"),
    # parameters
    "params-missing": _missing_params,
    "params-repeated": _repeat_params,
    "query-bad-percent-escape": _query("%zz%4"),
    "query-lone-percent": _query("%"),
    "query-invalid-utf8": _query("%ff%fe%c3"),
    "query-lone-surrogate": _query("%ed%a0%80"),
    "query-nul": _query("a%00b"),
    "query-crlf": _query("a%0d%0aX-Injected:%201"),
    "query-oversized": _query("q" * 6000),
    "query-raw-non-ascii": _query("\udcff\udcfe"),  # raw bytes 0xff 0xfe (surrogateescape)
    "query-empty-names": _set_query("&&=&==&"),
    "query-thousands-of-params": _set_query("&".join(f"p{i}=v" for i in range(1500))),
    # form bodies
    "form-invalid-utf8": _form_body(b"%ff%fe"),
    "form-raw-invalid-utf8": _form_body(b"\xff\xfe"),
    "form-lone-surrogate": _form_body(b"%ed%a0%80"),
    "form-nul": _form_body(b"a%00b"),
    "form-bad-percent-escape": _form_body(b"%zz"),
    "form-oversized-value": _form_body(b"v" * 200_000),
    "form-charset-unknown": lambda p, e: (
        _header("Content-Type", "application/x-www-form-urlencoded; charset=no-such")(p, e)
        if e.body == "form"
        else None
    ),
    "form-charset-utf16": lambda p, e: (
        _header("Content-Type", "application/x-www-form-urlencoded; charset=utf-16")(p, e)
        if e.body == "form"
        else None
    ),
    "form-as-multipart-without-boundary": _body(
        "multipart/form-data", b"state=x", ("form", "json")
    ),
    "form-as-multipart": _body(
        "multipart/form-data; boundary=b",
        b'--b\r\nContent-Disposition: form-data; name="state"\r\n\r\n\xff\r\n--b--\r\n',
        ("form", "json", "mcp"),
    ),
    # content types and bodies
    "body-without-content-type": _body(None, b"a=b", ("form", "json", "mcp")),
    "body-text-plain": _body("text/plain", b"hello", ("form", "json", "mcp")),
    "body-json-to-form-endpoint": _body("application/json", b'{"state": "x"}', ("form",)),
    "body-form-to-json-endpoint": _body(
        "application/x-www-form-urlencoded", b"a=b", ("json", "mcp")
    ),
    "body-oversized": _body("application/json", b'{"a":"' + b"x" * 5_000_000 + b'"}',
                            ("form", "json", "mcp")),
    "body-empty": _body("application/json", b"", ("json", "mcp")),
    "get-with-body": _get_with_body,
    "json-array": _json(b"[]"),
    "json-array-of-non-objects": _json(b"[1, null, \"x\"]"),
    "json-string": _json(b'"x"'),
    "json-number": _json(b"1"),
    "json-null": _json(b"null"),
    "json-huge-exponent": _json(b'{"a": 1e999999, "jsonrpc": "2.0", "id": 1e999, "method": "x"}'),
    "json-huge-integer": _json(b'{"jsonrpc": "2.0", "id": ' + b"9" * 5000 + b', "method": "x"}'),
    "json-nan": _json(b'{"jsonrpc": "2.0", "id": NaN, "method": "x"}'),
    "json-lone-surrogate": _json(
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "\\ud800"},'
        b' "redirect_uris": ["http://127.0.0.1/\\ud800"]}'
    ),
    "json-nul": _json(
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call\\u0000",'
        b' "params": {"name": "a\\u0000"}, "redirect_uris": ["http://127.0.0.1/\\u0000"],'
        b' "client_name": "\\u0000"}'
    ),
    "json-invalid-utf8": _json(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}'),
    "json-bom": _json(b'\xef\xbb\xbf{"jsonrpc": "2.0", "id": 1, "method": "ping"}'),
    "json-truncated": _json(b'{"jsonrpc": "2.0", "id": 1, "meth'),
    "json-deeply-nested": _json(DEEP),
    "json-duplicate-keys": _json(
        b'{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "ping", "method": "tools/call",'
        b' "redirect_uris": [], "redirect_uris": ["http://127.0.0.1/cb"]}'
    ),
    "json-wrong-types": _json(
        b'{"jsonrpc": 2, "id": {}, "method": 7, "params": [], "redirect_uris": "x",'
        b' "grant_types": {}, "client_name": 5, "scope": []}'
    ),
    # headers
    "content-type-repeated": _repeat_header("Content-Type"),
    "content-type-garbage": lambda p, e: (
        _header("Content-Type", "\x7f;;;=;charset")(p, e) if p.body is not None else None
    ),
    "authorization-garbage": _header("Authorization", "Bearer \u00e9\t!!"),
    "authorization-repeated": lambda p, e: (
        _repeat_header("Authorization")(p, e)
        or _header("Authorization", "Basic Og==", replace=False)(
            _header("Authorization", "Basic !!!")(p, e), e
        )
    ),
    "authorization-basic-not-base64": _header("Authorization", "Basic %%%"),
    "authorization-basic-invalid-utf8": _header("Authorization", "Basic /w=="),
    "origin-null": _header("Origin", "null"),
    "origin-repeated": lambda p, e: _header("Origin", "http://a", replace=False)(
        _header("Origin", "http://b")(p, e), e
    ),
    "host-foreign": _header("Host", "evil.example"),
    "host-repeated": lambda p, e: _header("Host", "evil.example", replace=False)(
        _header("Host", "127.0.0.1")(p, e), e
    ),
    "host-empty": _header("Host", ""),
    "accept-garbage": _header("Accept", "\u00e9/\u00e9;q=x"),
    "protocol-version-garbage": _header("MCP-Protocol-Version", "v\u00e9\u00e9"),
    "protocol-version-repeated": _header("MCP-Protocol-Version", "2025-06-18", replace=False),
    "session-id-garbage": _header("Mcp-Session-Id", "\u00e9 not a session"),
    "session-id-repeated": lambda p, e: _header("Mcp-Session-Id", "b", replace=False)(
        _header("Mcp-Session-Id", "a")(p, e), e
    ),
    "last-event-id-oversized": _header("Last-Event-ID", "e" * 6000),
    "content-encoding-gzip": lambda p, e: (
        _header("Content-Encoding", "gzip")(p, e) if p.body is not None else None
    ),
    "forwarded-garbage": _header("Forwarded", 'for="[::1'),
    "forwarded-chain": _header("Forwarded", 'for=unknown;by="\\"", for="[::1]:_x", For=10.0.0.1'),
    "x-forwarded-for-garbage": _header("X-Forwarded-For", "1.2.3.4, \u00e9, ::ffff:999.1.1.1"),
    "forwarding-headers-disagree": lambda p, e: _header("X-Forwarded-For", "192.0.2.1")(
        _header("Forwarded", "for=192.0.2.2")(p, e), e
    ),
    "expect-100-continue": _header("Expect", "100-continue"),
    "expect-unknown": _header("Expect", "teapot"),
    "upgrade-websocket": lambda p, e: _header("Upgrade", "websocket")(
        _header("Connection", "Upgrade")(
            _header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")(
                _header("Sec-WebSocket-Version", "13")(p, e), e
            ),
            e,
        ),
        e,
    ),
    "upgrade-h2c": lambda p, e: _header("Upgrade", "h2c")(
        _header("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")(p, e), e
    ),
    "transfer-encoding-unknown": lambda p, e: (
        _header("Transfer-Encoding", "gzip, chunked")(p, e) if p.body is None else None
    ),
    # framing and request targets
    "body-chunked-with-extension-and-trailer": _wire(chunked=True),
    "http-1.0": _wire(version="HTTP/1.0"),
    "absolute-form-target": _wire(target="http://evil.example{path}"),
    "asterisk-form-target": _wire(target="*"),
    "path-trailing-slash": _path(lambda path: path + "/"),
    "path-double-slash": _path(lambda path: "/" + path),
    "path-dot-segments": _path(lambda path: path + "/../" + path.rsplit("/", 1)[-1]),
    "path-encoded-dot-segments": _path(lambda path: path + "/%2e%2e/" + path.rsplit("/", 1)[-1]),
    "path-encoded-slash": _path(lambda path: path.replace("/", "%2F")),
    "path-nul": _path(lambda path: path + "%00"),
    "path-invalid-utf8": _path(lambda path: path + "%ff"),
    "path-upper-case": _path(str.upper),
    "path-oversized": _path(lambda path: path + "/" + "p" * 7000),
}  # fmt: skip


# -- known failures in code other parts of issue 14 own (see the report) ----------------------

KNOWN: dict[tuple[str, str], str] = {}
"""(endpoint id, malformation id) -> reason, for `xfail(strict=True)`."""


def cases() -> Iterator[Any]:
    for endpoint in ENDPOINTS:
        for name, malform in MALFORMATIONS.items():
            if not applies(endpoint, name, malform):
                continue
            marks = []
            reason = KNOWN.get((endpoint.id, name))
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            yield pytest.param(endpoint, name, id=f"{endpoint.id}:{name}", marks=marks)


def applies(endpoint: Endpoint, name: str, malform: Malform) -> bool:
    """Whether the malformation changes something for this endpoint (tried on a stand-in)."""
    return malform(request_for(endpoint, {}, "http://127.0.0.1:1", []), endpoint) is not None


# -- gateways ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mcp_upstream() -> Iterator[HttpServerProcess]:
    with sdk_server(json_response=True, stateless=True) as server:
        yield server


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProviderProcess]:
    with oidc_provider() as running:
        yield running


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_users(tmp_path_factory.mktemp("sweep") / "users.yaml", PASSWORD)


async def local_target(
    start: StartGateway, users_file: Path, upstream: str, endpoint: Endpoint
) -> Target:
    """A facade gateway; for the endpoints that need them, a registered client, and a pending
    consent (consent) or, once approved, a pending sign-in (sign-in), with the browser's flow
    cookie that each step is bound to."""
    gw = await facade_gateway(
        start,
        upstream,
        users_file,
        {"trusted_proxies": TRUSTED_PROXIES},
        registrations_per_minute=10_000,
        sign_ins_per_minute=10_000,
    )
    values = {
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "resource": gw.url(ROUTE),
        "scope": "mcp:tools",
        "grant_type": "authorization_code",
        "code": "not-a-code",
        "code_verifier": VERIFIER,
        "refresh_token": "not-a-refresh-token",
        "token": "not-a-token",
        "token_type_hint": "access_token",
        "username": "alice",
        "password": PASSWORD,
        "decision": "approve",
        "iss": gw.base,
    }
    if endpoint.id not in {"authorize", "token", "revoke", "sign-in", "consent"}:
        return Target(gw, values)
    headers: list[tuple[str, str]] = []
    async with httpx2.AsyncClient(timeout=BOUND, follow_redirects=False) as http:
        registered = await http.post(
            gw.url("/oauth/register"),
            json={"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"},
        )
        assert registered.status_code == 201, registered.text
        values["client_id"] = registered.json()["client_id"]
        if endpoint.id in {"sign-in", "consent"}:
            authorize = {k: values[k] for k in AUTHORIZE_PARAMS if k in values}
            page = await http.get(gw.url("/oauth/authorize"), params={**authorize, "state": "s"})
            assert page.status_code == 200, page.text  # the consent page, first
            values["state"] = hidden_state(page.text)
            headers.append(("Cookie", f"{FLOW_COOKIE}={http.cookies[FLOW_COOKIE]}"))
        if endpoint.id == "sign-in":
            approved = await http.post(
                gw.url("/oauth/consent"),
                data={"state": values["state"], "decision": "approve"},
                headers={"Origin": gw.base},
            )
            assert approved.status_code == 200, approved.text  # the sign-in page
            values["state"] = hidden_state(approved.text)
    return Target(gw, values, headers)


def hidden_state(page: str) -> str:
    found = re.search(r'name="state" value="([^"]*)"', page)
    assert found is not None, page[:500]
    return found.group(1)


async def federated_target(start: StartGateway, provider: OidcProviderProcess) -> Target:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        registered = await http.post(
            provider.registration_endpoint,
            json={"redirect_uris": [base + "/oauth/callback"], "token_endpoint_auth_method": "none",
                  "grant_types": ["authorization_code"], "response_types": ["code"]},
        )  # fmt: skip
    assert registered.status_code == 201, registered.text
    gw = await start(
        {"name": "files", "route": ROUTE, "url": f"http://127.0.0.1:{free_port()}/mcp",
         "scopes": ["mcp:tools"]},
        port=port,
        auth={"authorization_server": {
            "login": {"oidc": {"issuer": provider.issuer,
                               "client_id": registered.json()["client_id"]}},
            "grants": [{"scopes": ["mcp:tools"]}],
        }},
    )  # fmt: skip
    values = {
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "resource": gw.url(ROUTE),
        "scope": "mcp:tools",
        "iss": provider.issuer,
        "code": "not-a-code",
    }
    async with httpx2.AsyncClient(timeout=BOUND, follow_redirects=False) as http:
        registered = await http.post(
            gw.url("/oauth/register"),
            json={"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"},
        )
        assert registered.status_code == 201, registered.text
        values["client_id"] = registered.json()["client_id"]
        authorize = {k: values[k] for k in AUTHORIZE_PARAMS if k in values}
        # A pending sign-in at the provider (consent approved first): its `state` is what the
        # callback expects, from the browser holding the flow cookie.
        page = await http.get(gw.url("/oauth/authorize"), params={**authorize, "state": "s1"})
        assert page.status_code == 200, page.text
        sent = await http.post(
            gw.url("/oauth/consent"),
            data={"state": hidden_state(page.text), "decision": "approve"},
            headers={"Origin": gw.base},
        )
        assert sent.status_code == 302, sent.text
        values["state"] = parse_qs(urlsplit(sent.headers["Location"]).query)["state"][0]
        cookie = ("Cookie", f"{FLOW_COOKIE}={http.cookies[FLOW_COOKIE]}")
    return Target(gw, values, [cookie])


async def resource_target(
    start: StartGateway, issuer: LocalIssuer, upstream: HttpServerProcess
) -> Target:
    gw = await start(
        {"name": "files", "route": ROUTE, "url": upstream.url, "scopes": ["mcp:tools"]},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        server={"shutdown_timeout": 1, "trusted_proxies": TRUSTED_PROXIES},
    )
    token = issuer.mint(issuer.claims(gw.url(ROUTE), scope="mcp:tools"))
    return Target(gw, {}, [("Authorization", f"Bearer {token}")])


@pytest.fixture
async def targets(
    request: pytest.FixtureRequest, start_gateway_for: StartGateway, users_file: Path
) -> AsyncIterator[Callable[[Endpoint], Awaitable[Target]]]:
    """Starts the gateway an endpoint lives on (and, for the resource route, a token issuer)."""
    issuers: list[LocalIssuer] = []

    async def target(endpoint: Endpoint) -> Target:
        if endpoint.mode == "federated":
            provider = request.getfixturevalue("provider")
            return await federated_target(start_gateway_for, provider)
        upstream = request.getfixturevalue("mcp_upstream")
        if endpoint.mode == "local":
            return await local_target(start_gateway_for, users_file, upstream.url, endpoint)
        issuer = LocalIssuer()
        await issuer.start()
        issuers.append(issuer)
        return await resource_target(start_gateway_for, issuer, upstream)

    yield target
    for issuer in issuers:
        await issuer.stop()


def log_lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway_log().splitlines() if line.strip()]


TRACES = ("request_completed", "malformed_http_request_rejected")
"""The line every request leaves: the access line, or the parser's refusal (answered 400)."""
UNTRACED = {
    "method-unknown": "aiohttp's parser knows no such method: it logs that at debug (port scans "
    "and TLS sent to an HTTP port look the same), below the lowest level for its logger",
    "expect-unknown": "aiohttp answers 417 itself before any middleware runs",
}
"""Malformations answered (with a 4xx) but deliberately left without a trace line."""


@pytest.mark.parametrize(("endpoint", "malformation"), list(cases()))
async def test_malformed_input_gets_no_5xx_and_no_error_log(
    targets: Callable[[Endpoint], Awaitable[Target]], endpoint: Endpoint, malformation: str
) -> None:
    target = await targets(endpoint)
    probe = MALFORMATIONS[malformation](baseline(endpoint, target), endpoint)
    assert probe is not None
    status = await send(target.gw.running.port, probe.encode(target.gw.running.port))
    await target.gw.running.stop()  # every handler has finished and logged
    target.gw.running.runners.clear()  # stopped once only
    assert status != 0, "the connection closed without an answer"
    assert status < 500 or status in DOCUMENTED_5XX, status
    lines = log_lines()
    assert [line for line in lines if line["level"] in {"error", "critical"}] == []
    if malformation in UNTRACED:
        return
    trace = [line for line in lines if line["event"] in TRACES][-1]  # the probe's (it came last)
    # 499: a stream's answer, which the sweep stops reading after its head.
    assert trace.get("status", 400) in {status, 499}, trace
