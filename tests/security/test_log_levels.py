"""Client-caused conditions are logged at info or warning, never error (issue 14, finding 9).

Anyone who can open a TCP connection could otherwise write error-level lines at will (aiohttp
logs a request it cannot parse at error, with the offending bytes), drowning real errors and
paging on-call. Each case sends raw bytes to a real gateway and reads its log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

import pytest

from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.http_upstream import RecordingUpstream
from tests.support.secrets import remember

BOUND = 10.0  # seconds: an answer that takes longer is a failure, not a hang
# Looks like a credential: it must never reach a log line (the autouse tripwire checks).
TOKEN = remember("sekrit-" + "x" * 40)
SECRET = "Bearer " + TOKEN


@pytest.fixture
async def gw(start_gateway_for: StartGateway, upstream: RecordingUpstream) -> Gateway:
    return await start_gateway_for({"name": "up", "route": "/up/mcp", "url": upstream.url})


def log_records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway_log().splitlines() if line.strip()]


async def exchange(gw: Gateway, raw: bytes) -> bytes:
    """Send `raw` on a fresh connection and read until the gateway closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.running.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def head(gw: Gateway, *lines: str, method: str = "GET") -> bytes:
    port = gw.running.port
    return (
        "\r\n".join([f"{method} /up/mcp HTTP/1.1", f"Host: 127.0.0.1:{port}", *lines]) + "\r\n\r\n"
    ).encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


CASES = {
    "oversized-header": lambda gw: head(gw, "Authorization: " + SECRET + "y" * 20_000),
    "oversized-request-line": lambda gw: (
        f"GET /up/mcp?{TOKEN}{'q' * 20_000} HTTP/1.1\r\n\r\n".encode()
    ),
    "malformed-request-line": lambda gw: f"GET /up/mcp {SECRET} HTTP/1.1\r\n\r\n".encode(),
    "bad-http-version": lambda gw: b"GET /up/mcp HTTP/7.x\r\nHost: a\r\n\r\n",
    "header-without-colon": lambda gw: head(gw, SECRET.replace(":", "")),
    "bad-header-name": lambda gw: head(gw, "Bad Name: " + SECRET),
    "nul-in-header-value": lambda gw: head(gw, "X-A: a\x00" + SECRET),
    "content-length-and-chunked": lambda gw: head(
        gw, "Content-Length: 3", "Transfer-Encoding: chunked", method="POST"
    ),
    "bad-content-length": lambda gw: head(gw, "Content-Length: 1x", method="POST"),
    "second-request-malformed": lambda gw: head(gw) + b"GET /up/mcp HTTP/1.1 trailing\r\n\r\n",
    "not-http-at-all": lambda gw: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + SECRET.encode(),
    "bad-chunk-size": lambda gw: (
        head(
            gw,
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            "Transfer-Encoding: chunked",
            method="POST",
        )
        + b"zz\r\n{}\r\n0\r\n\r\n"
    ),
}


QUIET = {"not-http-at-all"}
"""A connection whose first bytes are not HTTP (a TLS hello, a port scan) is internet noise:
aiohttp logs it at debug, below the gateway's lowest level here (info for foreign loggers)."""


@pytest.mark.parametrize("case", list(CASES))
async def test_malformed_http_is_logged_below_error(
    gw: Gateway, upstream: RecordingUpstream, case: str
) -> None:
    answer = await exchange(gw, CASES[case](gw))
    # Every status line, also one right after a previous answer's body (a request pipelined
    # behind a served one is answered after it).
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]
    assert statuses, answer[:200]
    assert statuses[-1] == 400, answer[:300]
    records = log_records()
    errors = [record for record in records if record.get("level") in {"error", "critical"}]
    assert errors == []
    rejected = [r for r in records if r.get("event") == "malformed_http_request_rejected"]
    if case in QUIET:
        assert rejected == []
    else:
        assert len(rejected) == 1, records
        assert rejected[0]["level"] in {"info", "warning"}
        assert rejected[0]["reason"]
    assert not any(r.method == "POST" for r in upstream.requests)
    assert TOKEN[:20] not in gateway_log()


@pytest.mark.parametrize(
    ("error", "event", "level"),
    [
        pytest.param(
            ConnectionResetError("peer gone"), "client_connection_lost", "info", id="reset"
        ),
        pytest.param(
            RuntimeError("a gateway bug"),
            "Error handling request from 192.0.2.1",
            "error",
            id="bug",
        ),
    ],
)
def test_aiohttp_errors_are_demoted_only_when_the_client_caused_them(
    error: Exception, event: str, level: str
) -> None:
    """A client that leaves mid-response is the client's doing; a failure in the gateway's own
    code stays an error."""
    logging.getLogger("aiohttp.server").error(
        "Error handling request from %s", "192.0.2.1", exc_info=error
    )
    records = log_records()
    assert [(r["event"], r["level"]) for r in records] == [(event, level)]


async def test_a_bad_method_on_a_kept_alive_connection_is_logged_below_error(gw: Gateway) -> None:
    """aiohttp logs a bad method at debug on a connection's first request (a port scan) but at
    error on a later one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.running.port)
    try:
        writer.write(head(gw, "Accept: application/json, text/event-stream"))
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(length), BOUND)
        writer.write(b"G\x01T /up/mcp HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert status_of(answer) == 400
    records = log_records()
    assert [r for r in records if r.get("level") in {"error", "critical"}] == []
    rejected = [r for r in records if r.get("event") == "malformed_http_request_rejected"]
    assert [(r["level"], r["reason"]) for r in rejected] == [("info", "bad_http_method")]
