from __future__ import annotations

import pytest

from gateway.proxy.headers import RequestHeadBuilder, response_headers


def head_lines(head: bytes) -> list[str]:
    assert head.endswith(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n")[:-2]


def test_request_head_drops_credentials_and_hop_by_hop() -> None:
    builder = RequestHeadBuilder("upstream:3001", {"X-Api-Key": "k"})
    client = (
        (b"Authorization", b"Bearer t"),
        (b"cookie", b"a=b"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"p"),
        (b"X-Api-Key", b"forged"),
        (b"Host", b"gateway"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Accept", b"application/json, text/event-stream"),
        (b"Mcp-Session-Id", b"s"),
    )
    lines = head_lines(builder.build("POST", "/mcp", client, 12, "rid"))
    assert lines == [
        "POST /mcp HTTP/1.1",
        "Host: upstream:3001",
        "X-Api-Key: k",
        "Accept: application/json, text/event-stream",
        "Mcp-Session-Id: s",
        "X-Request-Id: rid",
        "Content-Length: 12",
    ]


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
            [(b"X-Early", b"1"), (b"Connection", b"close, X-Early"), (b"Mcp-Session-Id", b"s")],
            {"Mcp-Session-Id": "s"},
            False,
        ),
    ],
    ids=["sse", "json", "cookies-and-cors", "connection-named"],
)
def test_response_headers(
    raw: list[tuple[bytes, bytes]], expected: dict[str, str], sse: bool
) -> None:
    headers, event_stream = response_headers(raw)
    assert dict(headers) == expected
    assert event_stream is sse
