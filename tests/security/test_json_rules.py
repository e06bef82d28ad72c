"""JSON strictness at the gateway, and log lines no client can break or bloat.

A lone surrogate escape or a non-finite number is read differently by every JSON parser (and
orjson cannot write it at all): such a body is a parse error, refused before any upstream sees
it. Whatever a line carries from a client is truncated with a visible marker, and a value the
fast serialiser refuses is escaped rather than costing the access line.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.observability.logging import ACCESS_LOG
from tests.conftest import LOG_SINK, Gateway, StartGateway, gateway_log
from tests.support.configs import PRODUCTION_LOG, gateway_document, write_yaml
from tests.support.http_upstream import RecordingUpstream
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import ManagedProcess, free_port


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> Gateway:
    return await start_gateway_for(
        {"name": "files", "route": "/files/mcp", "url": upstream.url, "scopes": ["mcp:tools"]},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )


@pytest.fixture
def access_lines() -> Iterator[io.BytesIO]:
    """The access line written as in production: orjson bytes to a binary stream."""
    sink = io.BytesIO()
    ACCESS_LOG.configure(sink, logging.DEBUG)
    try:
        yield sink
    finally:
        ACCESS_LOG.configure(None, logging.DEBUG)
        LOG_SINK.write(sink.getvalue().decode())  # still scanned for leaked secrets


def access_line(sink: io.BytesIO) -> dict[str, Any]:
    [line] = [
        json.loads(raw)
        for raw in sink.getvalue().decode("utf-8").splitlines()
        if '"/files/mcp"' in raw
    ]
    return line  # type: ignore[no-any-return]


async def post(
    gw: Gateway, token: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url("/files/mcp"),
            data=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        ) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def call(params: bytes, method: bytes = b"tools/call") -> bytes:
    return b'{"jsonrpc":"2.0","id":4,"method":"' + method + b'","params":' + params + b"}"


UNREADABLE = [
    ("tool-name", call(b'{"name":"\\ud800"}')),
    ("tool-name-low-half", call(b'{"name":"read\\uDC00file"}')),
    ("resource-uri", call(b'{"uri":"file:///etc/\\udbff"}', b"resources/read")),
    ("prompt-name", call(b'{"name":"sum\\ud83d"}', b"prompts/get")),
    ("argument-key", call(b'{"name":"echo","arguments":{"\\ud800":1}}')),
    ("nan", call(b'{"name":"echo","arguments":{"n":NaN}}')),
    ("infinity", call(b'{"name":"echo","arguments":{"n":Infinity}}')),
    ("minus-infinity", call(b'{"name":"echo","arguments":{"n":[-Infinity]}}')),
    ("nan-in-batch", b'[{"jsonrpc":"2.0","id":1,"method":"ping","params":{"n":NaN}}]'),
]


@pytest.mark.parametrize("body", [c[1] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
async def test_unreadable_json_is_a_parse_error_and_reaches_no_upstream(
    gw: Gateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    access_lines: io.BytesIO,
    body: bytes,
) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="mcp:tools"))
    status, answer = await post(gw, token, body)
    assert (status, answer["error"]["code"]) == (400, -32700)
    assert upstream.requests == []
    assert access_line(access_lines)["status"] == 400


@pytest.mark.parametrize(
    ("escaped", "name"),
    [(b"\\ud83d\\ude00", "\U0001f600"), (b"caf\\u00e9", "café")],
    ids=["surrogate-pair", "bmp-escape"],
)
async def test_valid_escapes_still_pass(
    gw: Gateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    access_lines: io.BytesIO,
    escaped: bytes,
    name: str,
) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="mcp:tools"))
    status, _ = await post(gw, token, call(b'{"name":"' + escaped + b'"}'))
    assert status == 200
    assert [json.loads(r.body)["params"]["name"] for r in upstream.requests] == [name]
    assert access_line(access_lines)["name"] == name


async def test_a_long_name_is_logged_truncated_with_a_marker(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, access_lines: io.BytesIO
) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="mcp:tools"))
    name = "n" * 10_000
    status, _ = await post(gw, token, call(json.dumps({"name": name}).encode()))
    assert status == 200
    assert len(upstream.requests) == 1  # the upstream gets the whole name; only logs are cut
    raw = access_lines.getvalue()
    assert len(raw) < 2_000
    assert access_line(access_lines)["name"] == "n" * 200 + "…[+9800 chars]"


async def test_audit_events_truncate_client_strings_too(
    gw: Gateway, issuer: LocalIssuer, access_lines: io.BytesIO
) -> None:
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), scope="mcp:tools"))
    method = "vendor/" + "m" * 5_000
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t" * 5_000}},
        {"jsonrpc": "2.0", "id": 2, "method": method},
    ]
    status, _ = await post(gw, token, json.dumps(batch).encode())
    assert status == 200
    decided = [
        json.loads(line)
        for line in gateway_log().splitlines()
        if '"policy_decided"' in line and '"/files/mcp"' not in line
    ]
    assert [(e["method"], e["name"]) for e in decided] == [
        ("tools/call", "t" * 200 + "…[+4800 chars]"),
        (method[:200] + "…[+4807 chars]", None),
    ]
    assert all(len(json.dumps(e)) < 1_000 for e in decided)


async def test_the_access_line_survives_a_value_orjson_refuses(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, access_lines: io.BytesIO
) -> None:
    """A signed token can carry a lone surrogate in a claim the access line logs (`sub`):
    the request is served and the line is written, the surrogate shown as escape text."""
    token = issuer.mint(
        issuer.claims(gw.url("/files/mcp"), scope="mcp:tools", sub="alice\ud800", client_id="c")
    )
    status, _ = await post(gw, token, call(b'{"name":"read_file"}'))
    assert status == 200
    assert len(upstream.requests) == 1
    line = access_line(access_lines)
    assert (line["sub"], line["status"], line["name"]) == ("alice\\ud800", 200, "read_file")


async def test_a_long_path_is_logged_truncated_with_a_marker(
    gw: Gateway, access_lines: io.BytesIO
) -> None:
    path = "/files/mcp/" + "p" * 3_000
    async with aiohttp.ClientSession() as http, http.get(gw.url(path)) as resp:
        assert resp.status == 404
    [line] = [json.loads(raw) for raw in access_lines.getvalue().splitlines()]
    assert line["path"] == path[:200] + f"…[+{len(path) - 200} chars]"


async def test_served_logs_escape_and_truncate_on_the_production_path(
    tmp_path: Path, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    """`serve` writes JSON lines as orjson bytes (the access line directly, every other event
    through structlog): neither a lone surrogate in a claim nor a 5,000-character name costs a
    line or makes a long one."""
    port = free_port()
    up = {"name": "up", "route": "/up/mcp", "url": upstream.url, "scopes": ["mcp:tools"]}
    auth = {"resource_server": {"authorization_servers": [issuer.auth_server("l")]}}
    document = gateway_document(up, port=port, log=PRODUCTION_LOG, auth=auth)
    config = write_yaml(tmp_path / "gw.yaml", document)
    url = f"http://127.0.0.1:{port}/up/mcp"
    token = issuer.mint(issuer.claims(url, scope="mcp:tools", sub="bob\udfff"))
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t" * 5_000}},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    ]
    process = ManagedProcess(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
    )
    async with process:
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json=batch, headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            assert resp.status == 200
        assert await process.stop_async() == 0
        text = process.stderr_text()
    lines = [line for line in text.splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in lines]
    [access] = [e for e in events if e["event"] == "request_completed" and e["path"] == "/up/mcp"]
    assert (access["sub"], access["status"]) == ("bob\\udfff", 200)
    decided = [e for e in events if e["event"] == "policy_decided"]
    assert [e["name"] for e in decided] == ["t" * 200 + "…[+4800 chars]", None]
    assert max(len(line) for line in lines) < 2_000
