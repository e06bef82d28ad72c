"""One client request becomes exactly one upstream request, built only from validated parts.

Issue 14, findings 1 and 4: a percent-decoded query used to be written raw into the upstream
request line, so `%0D%0A` injected headers ahead of the gateway's own identity headers and a
whole second request could be smuggled past the policy; identity-like client headers reached the
upstream. What arrives upstream is parsed here by h11 (`tests/support/raw_upstream.py`), a
parser independent of the gateway's and of aiohttp's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.conftest import Gateway, StartGateway
from tests.support.local_issuer import LocalIssuer
from tests.support.raw_upstream import RawUpstream, SeenRequest

CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
FORBIDDEN = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "wipe"}}
STATIC_KEY = "configured-static-key"
GATEWAY_SET = {"host", "x-api-key", "x-user", "x-request-id", "content-length"}


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    server = RawUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def gateway(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RawUpstream
) -> Gateway:
    return await start_gateway_for(
        {
            "name": "up",
            "route": "/up/mcp",
            "url": upstream.url,
            "headers": {"X-Api-Key": STATIC_KEY},
            "identity_headers": {"subject": "X-User"},
            "pass_headers": ["X-Tenant"],
            "policy": {"tools": {"wipe": "deny"}},
        },
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )


def token_for(issuer: LocalIssuer, gateway: Gateway) -> str:
    return issuer.mint(issuer.claims(gateway.url("/up/mcp"), sub="alice"))


async def send_raw(gateway: Gateway, data: bytes, *, read_for: float = 5.0) -> bytes:
    """Write `data` on one connection and read until the gateway closes it or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.running.port)
    writer.write(data)
    await writer.drain()
    received = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_for)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        pass
    finally:
        writer.close()
    return received


def post_head(gateway: Gateway, target: str, token: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.running.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1") + body


def statuses(response: bytes) -> list[int]:
    return [int(line.split()[1]) for line in response.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def tool_names(seen: list[SeenRequest]) -> list[str]:
    return [json.loads(r.body)["params"]["name"] for r in seen if r.body]


SMUGGLED = (
    "x%20HTTP%2F1.1%0D%0AContent-Length%3A%200%0D%0A%0D%0APOST%20%2Fmcp%20HTTP%2F1.1%0D%0A"
    "Content-Type%3A%20application%2Fjson%0D%0AContent-Length%3A%2072%0D%0A%0D%0A"
    + "".join(f"%{b:02X}" for b in json.dumps(FORBIDDEN).encode())
)


@pytest.mark.parametrize(
    "query",
    [
        # The reported payload: headers injected ahead of the gateway's identity header.
        "x%20HTTP%2F1.1%0D%0AX-User%3A%20admin%0D%0AX-Dummy%3A",
        "x%0D%0AX-User:%20admin",
        "x%0AX-User:%20admin",
        "x%0DX-User:%20admin",
        "x%00y",
        "x%20y",
        "a=%E2%9C%93&b=%25",
        SMUGGLED,
    ],
    ids=["reported", "crlf", "lf", "cr", "nul", "space", "utf8", "whole-request"],
)
async def test_an_encoded_query_reaches_the_upstream_still_encoded_as_one_request(
    gateway: Gateway, issuer: LocalIssuer, upstream: RawUpstream, query: str
) -> None:
    body = json.dumps(CALL).encode()
    response = await send_raw(
        gateway, post_head(gateway, f"/up/mcp?{query}", token_for(issuer, gateway), body)
    )
    assert statuses(response) == [200]
    [seen] = upstream.requests
    assert upstream.errors == []
    assert seen.target == f"/mcp?{query}"
    assert seen.values("x-user") == ["alice"]
    assert seen.values("x-api-key") == [STATIC_KEY]
    assert {name for name, _ in seen.headers} <= GATEWAY_SET | {"content-type"}
    assert tool_names(upstream.requests) == ["echo"]


@pytest.mark.parametrize(
    "target",
    ["/up/mcp%0D%0AX-User:%20admin", "/up/mcp%0A", "/up/mcp%00", "/up/mcp%20HTTP/1.1"],
    ids=["crlf", "lf", "nul", "space"],
)
async def test_escapes_in_the_path_never_reach_the_upstream(
    gateway: Gateway, issuer: LocalIssuer, upstream: RawUpstream, target: str
) -> None:
    body = json.dumps(CALL).encode()
    response = await send_raw(gateway, post_head(gateway, target, token_for(issuer, gateway), body))
    assert statuses(response) == [404]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "query",
    ['x="y"', "x={y}", "x=a|b", "x=\x7f", "x=\x01", "x=a\tb", "x=caf\xe9", "x=%zz", "x=%"],
    ids=["quote", "braces", "pipe", "del", "soh", "tab", "latin1", "bad-escape", "lone-percent"],
)
async def test_raw_bytes_http_does_not_allow_in_a_query_are_refused(
    gateway: Gateway, issuer: LocalIssuer, upstream: RawUpstream, query: str
) -> None:
    body = json.dumps(CALL).encode()
    response = await send_raw(
        gateway, post_head(gateway, f"/up/mcp?{query}", token_for(issuer, gateway), body)
    )
    [status] = statuses(response)
    assert status == 400
    assert upstream.requests == []


IDENTITY_LIKE = {
    "X-Forwarded-User": "admin",
    "X-Forwarded-Email": "admin@example.com",
    "X-Forwarded-Uri": "/admin",
    "X-Forwarded-Prefix": "/admin",
    "X-Forwarded-Groups": "admins",
    "X-Forwarded-Access-Token": "forged",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-Real-IP": "10.0.0.1",
    "Forwarded": "for=10.0.0.1",
    "X-Auth-Request-User": "admin",
    "Remote-User": "admin",
    "DPoP": "forged.proof.jwt",
    "X-User": "mallory",
    "X_User": "mallory",
    "X-Api-Key": "forged",
    "Mcp_Method": "tools/list",
    "User-Agent": "attacker",
}


async def test_only_allowlisted_client_headers_reach_the_upstream(
    gateway: Gateway, issuer: LocalIssuer, upstream: RawUpstream
) -> None:
    extra = "".join(f"{name}: {value}\r\n" for name, value in IDENTITY_LIKE.items())
    extra += "Accept: application/json, text/event-stream\r\nMcp-Param-Region: eu\r\n"
    extra += (
        "X-Tenant: t1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    )
    body = json.dumps(CALL).encode()
    response = await send_raw(
        gateway, post_head(gateway, "/up/mcp", token_for(issuer, gateway), body, extra)
    )
    assert statuses(response) == [200]
    [seen] = upstream.requests
    names = [name for name, _ in seen.headers]
    assert sorted(names) == sorted(
        [*GATEWAY_SET, "content-type", "accept", "mcp-param-region", "x-tenant", "traceparent"]
    )
    assert seen.values("x-user") == ["alice"]
    assert seen.values("x-api-key") == [STATIC_KEY]
    assert seen.values("x-tenant") == ["t1"]


def chunked(body: bytes, extension: str = "") -> bytes:
    return b"%x%s\r\n%s\r\n0\r\n" % (len(body), extension.encode(), body)


def smuggling_cases(allowed: bytes, forbidden: bytes) -> dict[str, tuple[str, bytes]]:
    """name -> (headers after the Host and Authorization lines, the body bytes that follow)."""
    inner = (
        b"POST /up/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(forbidden), forbidden)
    )
    return {
        "cl-and-te": (
            f"Content-Length: {len(allowed)}\r\nTransfer-Encoding: chunked\r\n",
            chunked(allowed) + b"\r\n" + inner,
        ),
        "te-and-cl": (
            f"Transfer-Encoding: chunked\r\nContent-Length: {len(allowed) + len(inner)}\r\n",
            allowed + inner,
        ),
        "duplicate-cl": (
            f"Content-Length: {len(allowed)}\r\nContent-Length: {len(allowed) + len(inner)}\r\n",
            allowed + inner,
        ),
        "cl-list": (
            f"Content-Length: {len(allowed)}, {len(allowed) + len(inner)}\r\n",
            allowed + inner,
        ),
        "cl-plus-sign": (f"Content-Length: +{len(allowed)}\r\n", allowed + inner),
        "te-obs-fold": (
            f"Content-Length: {len(allowed)}\r\nTransfer-Encoding:\r\n chunked\r\n",
            allowed + inner,
        ),
        "te-space-before-colon": (
            f"Content-Length: {len(allowed)}\r\nTransfer-Encoding : chunked\r\n",
            allowed + inner,
        ),
        "te-xchunked": (
            f"Content-Length: {len(allowed)}\r\nTransfer-Encoding: xchunked\r\n",
            allowed + inner,
        ),
        "te-chunked-identity": (
            "Transfer-Encoding: chunked, identity\r\n",
            chunked(allowed) + b"\r\n" + inner,
        ),
        "te-twice": (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            chunked(allowed) + b"\r\n" + inner,
        ),
        "bare-lf-in-head": (
            f"Content-Length: {len(allowed)}\nX-Smuggle: 1\n",
            allowed + inner,
        ),
        "chunk-extension": (
            "Transfer-Encoding: chunked\r\n",
            chunked(allowed, ';ext="a\\"b"') + b"\r\n" + inner,
        ),
        "chunk-size-overflow": (
            "Transfer-Encoding: chunked\r\n",
            b"1" + b"0" * 16 + b"%x\r\n%s\r\n0\r\n\r\n" % (len(allowed), allowed) + inner,
        ),
        "trailer": (
            "Transfer-Encoding: chunked\r\n",
            chunked(allowed) + b"X-User: admin\r\n\r\n" + inner,
        ),
        "bare-lf-chunk": (
            "Transfer-Encoding: chunked\r\n",
            b"%x\n%s\n0\n\n" % (len(allowed), allowed) + inner,
        ),
    }


CASES = list(smuggling_cases(json.dumps(CALL).encode(), json.dumps(FORBIDDEN).encode()))


@pytest.mark.parametrize("case", CASES)
async def test_client_side_smuggling_forms_never_get_a_forbidden_call_upstream(
    gateway: Gateway, issuer: LocalIssuer, upstream: RawUpstream, case: str
) -> None:
    """Each form tries to make the gateway see one request where a server might see two (or
    the other way round): the forbidden `wipe` call must never reach the upstream, the upstream
    must never see a request it cannot parse, and anything served is the allowed call alone."""
    allowed, forbidden = json.dumps(CALL).encode(), json.dumps(FORBIDDEN).encode()
    headers, body = smuggling_cases(allowed, forbidden)[case]
    head = (
        f"POST /up/mcp HTTP/1.1\r\nHost: 127.0.0.1:{gateway.running.port}\r\n"
        f"Authorization: Bearer {token_for(issuer, gateway)}\r\n"
        f"Content-Type: application/json\r\n{headers}\r\n"
    ).encode()
    response = await send_raw(gateway, head + body, read_for=3.0)
    answered = statuses(response)
    assert answered, "the gateway answered nothing"
    assert all(status in (200, 400, 403, 413) for status in answered), answered
    assert upstream.errors == []
    assert "wipe" not in tool_names(upstream.requests)
    assert len(upstream.requests) == answered.count(200)
    for seen in upstream.requests:
        assert seen.body == allowed
        assert seen.values("x-user") == ["alice"]
        assert not any(name.startswith("x-smuggle") for name, _ in seen.headers)
