"""Property: whatever a client sends, what the gateway writes upstream is exactly one HTTP/1.1
request, with the expected target and no header the allowlist does not permit, as parsed by h11
(independent of the gateway's writer and of aiohttp's parser).

Two levels: the head writer alone (thousands of examples, every odd byte), and the running
gateway over real sockets, where aiohttp's parser, the pipeline and the writer act together.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator

import h11
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.errors import UnsafeRequestPartError
from gateway.proxy.headers import PASSED_REQUEST_HEADERS, RequestHeadBuilder
from gateway.web.app import create_app
from gateway.web.server import RunningGateway, start_gateway
from tests.support.configs import PRODUCTION_LOG, gateway_document, validated
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import free_port
from tests.support.raw_upstream import RawUpstream
from tests.support.threaded_gateway import LoopThread, raw_exchange

ALLOWED = {name.decode() for name in PASSED_REQUEST_HEADERS} | {"x-tenant"}
GATEWAY_SET = {"host", "x-api-key", "x-user", "x-request-id", "content-length"}
STATIC_KEY = "static-key-value"
# RFC 3986 characters that may stand unencoded in a query, spelled out independently of the
# writer's regular expression.
QUERY_SAFE = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?")

# -- strategies ----------------------------------------------------------------------------------

escapes = st.sampled_from(["%0D%0A", "%0d%0a", "%0A", "%0D", "%00", "%20", "%25", "%2F", "%3F"])
odd_chars = st.sampled_from([*'\r\n\x00\t "#<>[]\\^`{|}%\x7f\xe9\u2028', "%zz", "%4", "%"])
query_parts = st.one_of(
    st.text(alphabet=sorted(QUERY_SAFE), max_size=8), escapes, odd_chars, st.just("HTTP/1.1")
)
queries = st.lists(query_parts, max_size=12).map("".join)

allowlisted = st.sampled_from([*sorted(ALLOWED), "mcp-param-region", "mcp-param-x"])
lookalikes = st.sampled_from(
    [
        "authorization",
        "cookie",
        "host",
        "transfer-encoding",
        "content-length",
        "connection",
        "x-user",
        "x_user",
        "x-api-key",
        "x_api_key",
        "x-forwarded-user",
        "x-forwarded-for",
        "x-original-url",
        "forwarded",
        "dpop",
        "mcp_method",
        "mcp_name",
        "mcp-param-",
        "x_tenant",
        "last-event-id",
        "mcp-session-id",
        "expect",
    ]
)
tokens = st.text(alphabet=string.ascii_letters + string.digits + "-_!#$&'*+.^`|~", min_size=1)
names = st.one_of(allowlisted, lookalikes, tokens).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.title(), name.replace("-", "_")])
)
value_chars = st.characters(min_codepoint=0, max_codepoint=255)
values = st.one_of(
    st.text(alphabet=string.ascii_letters + " ;=/,", max_size=40),
    st.text(alphabet=value_chars, max_size=40),
    st.integers(min_value=1000, max_value=3000).map(lambda n: "v" * n),
)
header_lists = st.lists(st.tuples(names, values), max_size=8)

# -- the writer alone ----------------------------------------------------------------------------


def parse_upstream_head(head: bytes, body: bytes) -> list[h11.Request]:
    """Every request h11 finds in the bytes (a second one would be a smuggled request)."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(head + body)
    server.receive_data(b"")  # and then the connection ends: nothing may be left over
    found: list[h11.Request] = []
    while True:
        event = server.next_event()
        if isinstance(event, h11.Request):
            found.append(event)
        elif isinstance(event, h11.EndOfMessage):
            server.send(h11.Response(status_code=204, headers=[]))
            server.send(h11.EndOfMessage())
            server.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA:
            return found


def independently_valid_query(query: str) -> bool:
    """RFC 3986 query characters, and every `%` starts a complete escape."""
    for index, char in enumerate(query):
        if char == "%":
            escape = query[index + 1 : index + 3]
            if len(escape) < 2 or any(c not in string.hexdigits for c in escape):
                return False
        elif char not in QUERY_SAFE:
            return False
    return True


WRITER = RequestHeadBuilder(
    "upstream:3001", {"X-Api-Key": STATIC_KEY}, managed=["X-User"], passed=["X-Tenant"]
)


@settings(max_examples=4000, deadline=None, database=None)
@given(query=queries, headers=header_lists, subject=values)
def test_the_writer_emits_exactly_one_request_with_only_allowed_headers(
    query: str, headers: list[tuple[str, str]], subject: str
) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    target = "/mcp" + (f"?{query}" if query else "")
    client = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    identity = [(b"X-User", subject.encode("latin-1"))]
    try:
        head = WRITER.build("POST", target, client, len(body), "rid-1", identity)
    except UnsafeRequestPartError:
        event("refused")
        # Refused: something really was unsafe, by a reading independent of the writer's.
        unsafe_value = any(
            ch in value for _, value in [*headers, ("", subject)] for ch in "\r\n\x00\x7f"
        ) or any(
            value != value.strip(" \t") or any(ord(c) < 0x20 and c != "\t" for c in value)
            for _, value in [*headers, ("", subject)]
        )
        assert not independently_valid_query(query) or unsafe_value
        return
    assert independently_valid_query(query)
    [request] = parse_upstream_head(head, body)
    assert request.target == target.encode()
    sent = [(n.decode(), v.decode("latin-1")) for n, v in request.headers]
    for name, _ in sent:
        assert name in ALLOWED | GATEWAY_SET or name.startswith("mcp-param-"), name
    assert [v for n, v in sent if n == "x-user"] == [subject]
    assert [v for n, v in sent if n == "x-api-key"] == [STATIC_KEY]
    assert [v for n, v in sent if n == "content-length"] == [str(len(body))]
    passed = [(n.lower(), v) for n, v in headers if n.lower() in ALLOWED]
    passed += [(n.lower(), v) for n, v in headers if n.lower().startswith("mcp-param-")]
    passed = [(n, v) for n, v in passed if n != "mcp-param-"]
    gateway_set = [(n, v) for n, v in sent if n not in GATEWAY_SET]
    assert sorted(gateway_set) == sorted(passed)


# -- the running gateway -------------------------------------------------------------------------


class Stack:
    """issuer + h11 upstream + gateway on a loop in a background thread."""

    def __init__(self, thread: LoopThread) -> None:
        self.thread = thread
        self.issuer = LocalIssuer()
        self.upstream = RawUpstream()
        self.running: RunningGateway | None = None
        self.port = free_port()
        self.token = ""

    def start(self) -> None:
        self.thread.run(self.issuer.start())
        self.thread.run(self.upstream.start())
        upstream = {
            "name": "up",
            "route": "/up/mcp",
            "url": self.upstream.url,
            "headers": {"X-Api-Key": STATIC_KEY},
            "identity_headers": {"subject": "X-User"},
            "pass_headers": ["X-Tenant"],
        }
        auth = {"resource_server": {"authorization_servers": [self.issuer.auth_server()]}}
        config = validated(
            gateway_document(upstream, port=self.port, log=PRODUCTION_LOG, auth=auth)
        )
        self.running = self.thread.run(
            start_gateway(config, create_app(config, registry=CollectorRegistry()))
        )
        resource = f"http://127.0.0.1:{self.port}/up/mcp"
        self.token = self.issuer.mint(self.issuer.claims(resource, sub="alice"))

    def stop(self) -> None:
        if self.running is not None:
            self.thread.run(self.running.stop())
        self.thread.run(self.upstream.stop())
        self.thread.run(self.issuer.stop())


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with LoopThread().running() as thread:
        stack = Stack(thread)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


def client_request(stack: Stack, query: str, headers: list[tuple[str, str]]) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    target = "/up/mcp" + (f"?{query}" if query else "")
    lines = [f"POST {target} HTTP/1.1", f"Host: 127.0.0.1:{stack.port}"]
    lines += [f"Authorization: Bearer {stack.token}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


# The client's own framing is not under test here: values carry no CR/LF (those would just be
# more header lines, which the header strategies already generate).
client_values = values.map(lambda v: v.replace("\r", "").replace("\n", ""))
client_names = names.filter(
    lambda n: (
        n.lower() not in ("content-length", "transfer-encoding", "host", "connection")
        and n.lower() not in ("authorization", "expect", "mcp-session-id")
    )
)


@settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    # A raw space or line break in the request line is the client's own framing, not a query.
    query=queries.map(lambda q: "".join(c for c in q if c not in " \t\r\n")),
    headers=st.lists(st.tuples(client_names, client_values), max_size=6),
)
def test_one_client_request_is_at_most_one_upstream_request(
    stack: Stack, query: str, headers: list[tuple[str, str]]
) -> None:
    mark = stack.upstream.snapshot()
    status = raw_exchange(stack.port, client_request(stack, query, headers))
    seen, errors = stack.upstream.since(mark)
    event(f"status {status}")
    assert errors == []
    assert status is not None
    assert status < 500
    if status != 200:
        assert seen == []
        return
    [request] = seen
    assert independently_valid_query(query)
    assert request.target == "/mcp" + (f"?{query}" if query else "")
    for name, _ in request.headers:
        assert name in ALLOWED | GATEWAY_SET or name.startswith("mcp-param-"), name
    assert request.values("x-user") == ["alice"]
    assert request.values("x-api-key") == [STATIC_KEY]
