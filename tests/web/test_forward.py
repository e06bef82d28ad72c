"""The proxy's transport behaviour, against real HTTP upstreams on loopback sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import StartGateway
from tests.support.http_upstream import recording_upstream
from tests.support.processes import free_port

RPC = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo"}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def json_ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 7, "result": {"ok": True}})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def route(url: str, **extra: object) -> dict[str, object]:
    return {"name": "up", "route": "/up/mcp", "url": url, **extra}


async def test_credentials_and_hop_by_hop_headers_never_reach_upstream(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    async with recording_upstream(json_ok) as upstream:
        gw = await start_gateway_for(route(upstream.url, headers={"X-Api-Key": "configured"}))
        headers = {
            **ACCEPT,
            "Authorization": "Bearer client-token",
            "Cookie": "sid=client-cookie",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Origin": gw.base,  # allowed (the gateway's own origin), yet not forwarded
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "named-in-connection",
            "X-Forwarded-For": "6.6.6.6",
            "X-Api-Key": "forged",
            "X_Api_Key": "forged-too",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "tools/call",
            "Mcp-Name": "echo",
        }
        async with http.post(gw.url("/up/mcp?x=1"), json=RPC, headers=headers) as resp:
            assert resp.status == 200
            assert await resp.json() == {"jsonrpc": "2.0", "id": 7, "result": {"ok": True}}

    [seen] = upstream.requests
    sent = {k.lower(): v for k, v in seen.headers.items()}
    for name in ("authorization", "cookie", "proxy-authorization", "origin", "x-hop"):
        assert name not in sent, name
    assert "x-forwarded-for" not in sent
    assert sent["host"] == upstream.url.split("/")[2]
    assert sent["x-api-key"] == "configured"
    assert "x_api_key" not in sent
    assert sent["mcp-protocol-version"] == "2026-07-28"
    assert sent["mcp-method"] == "tools/call"
    assert sent["mcp-name"] == "echo"
    assert json.loads(seen.body) == RPC
    assert seen.path_qs == "/mcp?x=1"


async def test_upstream_status_and_error_body_pass_through(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Bad session"}}

    async def bad_request(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            body,
            status=400,
            headers={
                "X-Upstream": "yes",
                "Set-Cookie": "upstream=1",
                "Access-Control-Allow-Origin": "*",
            },
        )

    async with recording_upstream(bad_request) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        async with http.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT) as resp:
            assert resp.status == 400
            assert await resp.json() == body
            assert resp.headers["X-Upstream"] == "yes"
            assert "Set-Cookie" not in resp.headers
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_unreachable_upstream_gives_502_with_the_request_id_and_no_detail(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway_for(route(f"http://127.0.0.1:{free_port()}/mcp"))
    request = {**RPC, "id": "req-abc"}
    async with http.post(gw.url("/up/mcp"), json=request, headers=ACCEPT) as resp:
        assert resp.status == 502
        text = await resp.text()
    error = json.loads(text)
    assert error["id"] == "req-abc"
    assert error["error"]["data"] == {"reason": "upstream_unavailable"}
    assert "127.0.0.1" not in text
    assert "refused" not in text.lower()


async def test_upstream_timeout_gives_504_with_the_request_id(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.Response()

    async with recording_upstream(hang) as upstream:
        gw = await start_gateway_for(route(upstream.url, timeouts={"response": 0.2}))
        async with http.post(gw.url("/up/mcp"), json={**RPC, "id": 42}, headers=ACCEPT) as resp:
            assert resp.status == 504
            error = await resp.json()
        never.set()
    assert error["id"] == 42
    assert error["error"]["data"] == {"reason": "upstream_timeout"}


async def test_upstream_dropping_the_connection_gives_502(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    async with recording_upstream(drop) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        async with http.post(gw.url("/up/mcp"), json={**RPC, "id": 9}, headers=ACCEPT) as resp:
            assert resp.status == 502
            assert (await resp.json())["id"] == 9
        async with http.get(gw.url("/metrics")) as resp:
            metrics = await resp.text()
    assert 'mcp_gateway_upstream_errors_total{kind="closed",upstream="up"} 1.0' in metrics


async def test_body_limit_is_enforced_while_streaming(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    async def chunked_body() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512  # JSON whitespace: only the size makes it unacceptable

    async with recording_upstream(json_ok) as upstream:
        gw = await start_gateway_for(route(upstream.url), server={"max_request_bytes": 2048})
        async with http.post(gw.url("/up/mcp"), data=chunked_body(), headers=ACCEPT) as resp:
            assert resp.status == 413
            assert resp.headers.get("Content-Length") is not None
            assert (await resp.json())["error"]["data"]["reason"] == "request_too_large"
        big = json.dumps({**RPC, "params": {"pad": "x" * 4096}})
        async with http.post(gw.url("/up/mcp"), data=big, headers=ACCEPT) as resp:
            assert resp.status == 413
        small = json.dumps(RPC)
        async with http.post(gw.url("/up/mcp"), data=small, headers=ACCEPT) as resp:
            assert resp.status == 200
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "identity, gzip"])
async def test_compressed_request_bodies_are_refused(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession, encoding: str
) -> None:
    bomb = gzip.compress(b" " * 1_000_000)  # 1 MB of JSON whitespace in about 1 KB
    async with recording_upstream(json_ok) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        headers = {**ACCEPT, "Content-Encoding": encoding}
        async with http.post(gw.url("/up/mcp"), data=bomb, headers=headers) as resp:
            assert resp.status == 415
            assert (await resp.json())["error"]["data"]["reason"] == "unsupported_content_encoding"
        plain = {**ACCEPT, "Content-Encoding": "identity"}
        async with http.post(gw.url("/up/mcp"), json=RPC, headers=plain) as resp:
            assert resp.status == 200
    assert len(upstream.requests) == 1


async def test_a_body_slower_than_the_deadline_gets_408_and_others_are_served(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    async with recording_upstream(json_ok) as upstream:
        gw = await start_gateway_for(route(upstream.url), server={"body_timeout": 0.5})
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.running.port)
        body = json.dumps(RPC).encode()
        writer.write(
            b"POST /up/mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (gw.running.port, len(body), body[:10])
        )
        await writer.drain()
        # While that body stalls, other clients are served.
        async with http.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT) as resp:
            assert resp.status == 200
        async with asyncio.timeout(10):
            answer = await reader.read()  # the gateway answers, then closes the connection
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request_timeout" in answer
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, -32700),
        (b"\xff\xfe", 400, -32700),
        (b'"a string"', 400, -32600),
        (b"[]", 400, -32600),
    ],
    ids=["broken-json", "not-utf8", "not-an-object", "empty-batch"],
)
async def test_malformed_bodies_never_reach_upstream(
    start_gateway_for: StartGateway,
    http: aiohttp.ClientSession,
    body: bytes,
    status: int,
    code: int,
) -> None:
    async with recording_upstream(json_ok) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        async with http.post(gw.url("/up/mcp"), data=body, headers=ACCEPT) as resp:
            assert resp.status == status
            assert (await resp.json())["error"]["code"] == code
    assert upstream.requests == []


async def test_sse_event_reaches_client_while_upstream_stream_is_open(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: message\ndata: {"n": 1}\n\n')
        await release.wait()
        await resp.write(b'event: message\ndata: {"n": 2}\n\n')
        await resp.write_eof()
        return resp

    async with recording_upstream(sse) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        async with http.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["X-Accel-Buffering"] == "no"
            assert len(resp.headers["X-Request-Id"]) == 16
            first = await resp.content.readuntil(b"\n\n")
            assert b'"n": 1' in first
            assert not release.is_set()  # the upstream is still holding its stream open
            release.set()
            rest = await resp.content.read()
            assert b'"n": 2' in rest


async def test_client_disconnect_cancels_the_upstream_request(
    start_gateway_for: StartGateway,
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await asyncio.Event().wait()
        return resp

    async with recording_upstream(endless) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        async with aiohttp.ClientSession() as client:
            resp = await client.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT)
            assert await resp.content.readuntil(b"\n\n") == b"data: first\n\n"
            resp.close()  # drop the connection mid-stream
        await asyncio.wait_for(upstream.cancelled.wait(), timeout=10)


async def test_upstream_failing_mid_stream_truncates_the_client_response(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    async def dies(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        assert request.transport is not None
        request.transport.abort()
        return resp

    async with recording_upstream(dies) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        async with http.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.content.read()


async def test_upstream_connections_are_pooled_and_reused(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    async with recording_upstream(json_ok) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        for _ in range(20):
            async with http.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT) as resp:
                assert resp.status == 200
    assert len(upstream.requests) == 20
    assert len(upstream.connection_ports) == 1


async def test_unknown_paths_and_methods_get_json_errors(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    async with recording_upstream(json_ok) as upstream:
        gw = await start_gateway_for(route(upstream.url))
        async with http.get(gw.url("/elsewhere")) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["data"]["reason"] == "not_found"
        async with http.put(gw.url("/up/mcp"), json=RPC) as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "DELETE, GET, POST"
    assert upstream.requests == []
