from __future__ import annotations

import pytest

from gateway.errors import UnsafeRequestPartError
from gateway.proxy.headers import RequestHeadBuilder, header_value, upstream_response_head


def head_lines(head: bytes) -> list[str]:
    assert head.endswith(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n")[:-2]


def test_request_head_passes_only_the_allowlist() -> None:
    builder = RequestHeadBuilder(
        "upstream:3001", {"X-Api-Key": "k"}, managed=["X-User"], passed=["X-Tenant"]
    )
    client = (
        (b"Authorization", b"Bearer t"),
        (b"cookie", b"a=b"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"p"),
        (b"X-Api-Key", b"forged"),
        (b"Host", b"gateway"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Accept", b"application/json, text/event-stream"),
        (b"Mcp-Session-Id", b"gateway-session"),
        (b"Last-Event-ID", b"7"),
        (b"X-Forwarded-User", b"admin"),
        (b"X-Original-URL", b"/admin"),
        (b"DPoP", b"proof"),
        # Gateway-set headers in the spellings a server framework may merge with the real one.
        (b"X_Api_Key", b"forged"),
        (b"x-user", b"mallory"),
        (b"X_USER", b"mallory"),
        (b"Mcp_Method", b"tools/list"),
        (b"mcp-method", b"tools/call"),
        (b"Mcp-Param-Region", b"eu"),
        (b"Mcp-Param-", b"nameless"),
        (b"x-tenant", b"t1"),
        (b"X_Tenant", b"t2"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    )
    added = [(b"Mcp-Session-Id", b"upstream-session"), (b"X-User", b"alice")]
    lines = head_lines(builder.build("POST", "/mcp", client, 12, "rid", added))
    assert lines == [
        "POST /mcp HTTP/1.1",
        "Host: upstream:3001",
        "X-Api-Key: k",
        "Accept: application/json, text/event-stream",
        "mcp-method: tools/call",
        "Mcp-Param-Region: eu",
        "x-tenant: t1",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Request-Id: rid",
        "Mcp-Session-Id: upstream-session",
        "X-User: alice",
        "Content-Length: 12",
    ]


def test_a_route_cannot_pass_a_header_the_gateway_sets() -> None:
    builder = RequestHeadBuilder("h", {"X-Api-Key": "k"}, managed=["X-User"], passed=["x-user"])
    client = ((b"X-User", b"mallory"), (b"x-api-key", b"forged"))
    lines = head_lines(builder.build("GET", "/mcp", client, None, "r"))
    assert lines == ["GET /mcp HTTP/1.1", "Host: h", "X-Api-Key: k", "X-Request-Id: r"]


@pytest.mark.parametrize(
    "target",
    [
        "/mcp?x HTTP/1.1\r\nX-User: admin\r\nX-Dummy:",
        "/mcp?x\ny",
        "/mcp?x\ry",
        "/mcp?x\x00y",
        "/mcp?x y",
        "/mcp?x\ty",
        "/mcp?%zz",
        "/mcp?%0",
        "/mcp#fragment",
        "/mcp?\u00e9",
        "mcp",
        "http://evil/mcp",
        "",
    ],
    ids=repr,
)
def test_targets_http_does_not_allow_are_refused(target: str) -> None:
    with pytest.raises(UnsafeRequestPartError):
        RequestHeadBuilder("h", {}).build("GET", target, (), None, "r")


@pytest.mark.parametrize(
    "target",
    ["/mcp", "/", "/a/b?x=1&y=%0D%0A", "/mcp?q=%E2%9C%93&a=b:c@d/e?f", "/mcp?x=%20%00%0a"],
)
def test_valid_targets_are_written_as_given(target: str) -> None:
    head = RequestHeadBuilder("h", {}).build("GET", target, (), None, "r")
    assert head.startswith(f"GET {target} HTTP/1.1\r\n".encode())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"Accept", b"a\r\nX-Admin: 1"),
        (b"Accept", b"a\nb"),
        (b"Accept", b"a\rb"),
        (b"Accept", b"a\x00b"),
        (b"Accept", b"a\x7fb"),
        (b"Accept", b" leading"),
        (b"Accept", b"trailing\t"),
        (b"Mcp-Param-X\r\nX-Admin", b"1"),
        (b"Mcp-Param-X Y", b"1"),
        (b"Mcp-Param-X:", b"1"),
    ],
    ids=repr,
)
def test_header_bytes_http_does_not_allow_are_refused(name: bytes, value: bytes) -> None:
    with pytest.raises(UnsafeRequestPartError):
        RequestHeadBuilder("h", {}).build("GET", "/mcp", ((name, value),), None, "r")


@pytest.mark.parametrize(
    "added",
    [[(b"X-User", b"a\r\nX-Admin: 1")], [(b"X-User\r\n", b"a")], [(b"Last-Event-ID", b"\x00")]],
    ids=repr,
)
def test_the_writer_refuses_unsafe_bytes_from_its_own_callers_too(
    added: list[tuple[bytes, bytes]],
) -> None:
    with pytest.raises(UnsafeRequestPartError):
        RequestHeadBuilder("h", {}).build("GET", "/mcp", (), None, "r", added)


def test_an_empty_value_and_obs_text_are_valid() -> None:
    client = ((b"Accept", b""), (b"Mcp-Name", b"caf\xc3\xa9"))
    lines = head_lines(RequestHeadBuilder("h", {}).build("GET", "/mcp", client, None, "r"))
    assert lines[2:4] == ["Accept: ", "Mcp-Name: caf\xc3\xa9"]


@pytest.mark.parametrize(
    ("claim", "sent"),
    [
        ("alice", "alice"),
        ("Alice Smith", "Alice Smith"),
        ("x\r\nX-Admin: 1", "x%0D%0AX-Admin%3A%201"),
        ("100%", "100%25"),
        ("J\u00f6rg", "J%C3%B6rg"),
        (" padded", "%20padded"),
    ],
)
def test_identity_values_cannot_inject_and_decode_unambiguously(claim: str, sent: str) -> None:
    assert header_value(claim) == sent


def test_request_head_without_body_has_no_length() -> None:
    lines = head_lines(RequestHeadBuilder("h", {}).build("GET", "/mcp", (), None, "r"))
    assert lines == ["GET /mcp HTTP/1.1", "Host: h", "X-Request-Id: r"]


@pytest.mark.parametrize(
    ("raw", "expected", "sse"),
    [
        (
            [(b"Content-Type", b"text/event-stream"), (b"Transfer-Encoding", b"chunked")],
            {"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"},
            True,
        ),
        (
            [(b"Content-Type", b"application/json"), (b"Content-Length", b"10")],
            {"Content-Type": "application/json"},
            False,
        ),
        (
            [(b"Set-Cookie", b"a=b"), (b"Access-Control-Allow-Origin", b"*"), (b"X-Ok", b"1")],
            {"X-Ok": "1"},
            False,
        ),
        (
            [(b"X-Early", b"1"), (b"Connection", b"close, X-Early"), (b"X-Late", b"2")],
            {"X-Late": "2"},
            False,
        ),
    ],
    ids=["sse", "json", "cookies-and-cors", "connection-named"],
)
def test_upstream_response_head(
    raw: list[tuple[bytes, bytes]], expected: dict[str, str], sse: bool
) -> None:
    headers, event_stream, session_id = upstream_response_head(raw)
    assert dict(headers) == expected
    assert event_stream is sse
    assert session_id is None


def test_upstream_session_id_is_taken_out_of_the_response() -> None:
    head = upstream_response_head([(b"mcp-session-id", b"upstream-1"), (b"X-Ok", b"1")])
    assert dict(head.headers) == {"X-Ok": "1"}
    assert head.session_id == "upstream-1"
