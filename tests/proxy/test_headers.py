from __future__ import annotations

import pytest

from gateway.proxy.headers import RequestHeadBuilder, header_value, upstream_response_head


def head_lines(head: bytes) -> list[str]:
    assert head.endswith(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n")[:-2]


def test_request_head_drops_credentials_and_hop_by_hop() -> None:
    builder = RequestHeadBuilder("upstream:3001", {"X-Api-Key": "k"}, managed=["X-User"])
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
        # Gateway-set headers in the spellings a server framework may merge with the real one.
        (b"X_Api_Key", b"forged"),
        (b"x-user", b"mallory"),
        (b"X_USER", b"mallory"),
        (b"X-Users", b"kept"),
    )
    added = b"Mcp-Session-Id: upstream-session\r\nX-User: alice\r\n"
    lines = head_lines(builder.build("POST", "/mcp", client, 12, "rid", added))
    assert lines == [
        "POST /mcp HTTP/1.1",
        "Host: upstream:3001",
        "X-Api-Key: k",
        "Accept: application/json, text/event-stream",
        "X-Users: kept",
        "X-Request-Id: rid",
        "Mcp-Session-Id: upstream-session",
        "X-User: alice",
        "Content-Length: 12",
    ]


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
