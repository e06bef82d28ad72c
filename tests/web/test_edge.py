"""The HTTP edge: Host and Origin checks, CORS and no-store, on a real gateway and upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.web.edge import (
    ALLOWED_REQUEST_HEADERS,
    host_allowed,
    origin_allowed,
    preflight_headers,
)
from gateway.web.server import start_gateway
from tests.conftest import Gateway, StartGateway
from tests.support.configs import gateway_document, validated
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer

RPC = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo"}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
APP = "https://app.example.com"
EVIL = "https://evil.example"


async def json_ok(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"jsonrpc": "2.0", "id": 7, "result": {}}, headers={"Cache-Control": "max-age=600"}
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(json_ok) as recorded:
        yield recorded


@pytest.fixture
async def gw(start_gateway_for: StartGateway, upstream: RecordingUpstream) -> Gateway:
    """An anonymous route at /up/mcp that also allows the browser origin APP."""
    return await start_gateway_for(
        {"name": "up", "route": "/up/mcp", "url": upstream.url},
        server={"allowed_origins": [APP]},
    )


@pytest.fixture
async def auth_gw(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> Gateway:
    """A token-protected route at /files/mcp (with protected resource metadata), allowing APP."""
    return await start_gateway_for(
        {"name": "files", "route": "/files/mcp", "url": upstream.url, "scopes": ["mcp:tools"]},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        server={"allowed_origins": [APP]},
    )


def cors_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


# -- the pure checks -----------------------------------------------------------------------------

HOSTS = frozenset({"gw.example.com", "gw.example.com:443", "127.0.0.1:8080", "[::1]:8080"})


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("gw.example.com", True),
        ("GW.Example.COM", True),
        ("gw.example.com:443", True),
        ("gw.example.com:8443", True),  # listed without a port: any port
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("127.0.0.1", False),  # listed only with its port
        ("127.0.0.1:8081", False),
        ("[::1]", False),
        ("evil.example", False),
        ("evil.example:8080", False),
        ("gw.example.com.evil.example", False),
        ("gw.example.com:", False),
        ("gw.example.com:x", False),
        ("", False),
        (None, False),
    ],
    ids=lambda v: repr(v),
)
def test_host_allowed(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, HOSTS) is allowed


ORIGINS = frozenset({"https://app.example.com", "http://127.0.0.1:8080"})


@pytest.mark.parametrize(
    ("origins", "allowed"),
    [
        pytest.param(["https://app.example.com"], True, id="listed"),
        pytest.param(["HTTPS://App.Example.com"], True, id="other-case"),
        pytest.param(["http://127.0.0.1:8080"], True, id="with-port"),
        pytest.param(["http://app.example.com"], False, id="other-scheme"),
        pytest.param(["https://app.example.com:8443"], False, id="other-port"),
        pytest.param(["https://app.example.com:443"], False, id="default-port-spelled-out"),
        pytest.param(["https://app.example.com/"], False, id="with-path"),
        pytest.param(["https://app.example.com.evil.example"], False, id="suffix"),
        pytest.param(["null"], False, id="null"),
        pytest.param(["https://app.example.com"] * 2, False, id="twice"),
        pytest.param([EVIL], False, id="evil"),
        pytest.param([""], False, id="empty"),
    ],
)
def test_origin_allowed(origins: list[str], allowed: bool) -> None:
    assert origin_allowed(origins, ORIGINS) is allowed


@pytest.mark.parametrize(
    ("requested", "extra"),
    [
        (None, []),
        ("content-type, authorization", []),
        ("mcp-param-region, x-evil", ["mcp-param-region"]),
        ("Mcp-Param-A,Mcp-Param-B", ["Mcp-Param-A", "Mcp-Param-B"]),
        ("mcp-param-, mcp-param-a\tb, mcp-param-(x)", []),
    ],
    ids=["none", "standard", "param-and-foreign", "two-params", "malformed-params"],
)
def test_preflight_headers_allow_mcp_headers_only(requested: str | None, extra: list[str]) -> None:
    headers = preflight_headers(APP, "GET", requested)
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Headers"].split(", ") == [
        *ALLOWED_REQUEST_HEADERS,
        *extra,
    ]


# -- Origin ----------------------------------------------------------------------------------


async def test_foreign_origin_is_refused_before_the_upstream(
    gw: Gateway, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    headers = {**ACCEPT, "Origin": EVIL}
    async with http.post(gw.url("/up/mcp"), json=RPC, headers=headers) as resp:
        assert resp.status == 403
        assert resp.headers["Cache-Control"] == "no-store"
        assert cors_headers(resp.headers) == {}
        error = await resp.json()
    assert error["error"]["data"] == {"reason": "origin_not_allowed"}
    assert error["id"] is None
    assert upstream.requests == []


@pytest.mark.parametrize(
    "origins",
    [["null"], [APP, APP], [APP, EVIL], [APP + "/"]],
    ids=["null", "allowed-twice", "allowed-and-foreign", "with-path"],
)
async def test_unusable_origin_headers_are_refused(
    gw: Gateway, upstream: RecordingUpstream, http: aiohttp.ClientSession, origins: list[str]
) -> None:
    headers = CIMultiDict(ACCEPT)
    for origin in origins:
        headers.add("Origin", origin)
    async with http.post(gw.url("/up/mcp"), json=RPC, headers=headers) as resp:
        assert resp.status == 403
        assert cors_headers(resp.headers) == {}
    assert upstream.requests == []


async def test_allowed_origin_gets_cors_headers_and_the_response(
    gw: Gateway, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(gw.url("/up/mcp"), json=RPC, headers={**ACCEPT, "Origin": APP}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"jsonrpc": "2.0", "id": 7, "result": {}}
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        exposed = {
            h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")
        }
        assert {"mcp-session-id", "www-authenticate", "mcp-protocol-version"} <= exposed
        assert "Origin" in resp.headers.getall("Vary")
        assert "Access-Control-Allow-Credentials" not in resp.headers
        assert resp.headers.getall("Cache-Control") == ["no-store"]
    assert len(upstream.requests) == 1


async def test_the_gateways_own_origin_is_allowed(gw: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.post(gw.url("/up/mcp"), json=RPC, headers={**ACCEPT, "Origin": gw.base}) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == gw.base


async def test_no_origin_means_no_cors_headers_but_still_no_store(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT) as resp:
        assert resp.status == 200
        assert cors_headers(resp.headers) == {}
        assert "Vary" not in resp.headers
        assert resp.headers.getall("Cache-Control") == ["no-store"]  # the upstream's replaced


async def test_streamed_response_gets_cors_headers_and_no_store(
    start_gateway_for: StartGateway, http: aiohttp.ClientSession
) -> None:
    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "public, max-age=60"}
        )
        await resp.prepare(request)
        await resp.write(b'event: message\ndata: {"n": 1}\n\n')
        await resp.write_eof()
        return resp

    async with recording_upstream(sse) as upstream:
        gw = await start_gateway_for(
            {"name": "up", "route": "/up/mcp", "url": upstream.url},
            server={"allowed_origins": [APP]},
        )
        async with http.post(
            gw.url("/up/mcp"), json=RPC, headers={**ACCEPT, "Origin": APP}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert resp.headers.getall("Cache-Control") == ["no-store"]
            assert b'"n": 1' in await resp.read()


async def test_gateway_error_to_an_allowed_origin_is_readable_by_the_page(
    auth_gw: Gateway, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        auth_gw.url("/files/mcp"), json=RPC, headers={**ACCEPT, "Origin": APP}
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert "WWW-Authenticate" in resp.headers["Access-Control-Expose-Headers"]
        assert resp.headers.getall("Cache-Control") == ["no-store"]
    assert upstream.requests == []


# -- CORS preflight --------------------------------------------------------------------------


async def test_preflight_from_an_allowed_origin_needs_no_token(
    auth_gw: Gateway, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    headers = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, mcp-param-region, x-evil",
    }
    async with http.options(auth_gw.url("/files/mcp"), headers=headers) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert resp.headers["Vary"] == "Origin"
        assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST, DELETE"
        allowed = {h.lower() for h in resp.headers["Access-Control-Allow-Headers"].split(", ")}
        assert {"authorization", "content-type", "mcp-session-id", "mcp-protocol-version"} <= (
            allowed
        )
        assert "mcp-param-region" in allowed
        assert "x-evil" not in allowed
        assert int(resp.headers["Access-Control-Max-Age"]) > 0
        assert "WWW-Authenticate" not in resp.headers
        assert resp.headers["Cache-Control"] == "no-store"
    assert upstream.requests == []


async def test_preflight_for_metadata_allows_get(
    auth_gw: Gateway, http: aiohttp.ClientSession
) -> None:
    path = "/.well-known/oauth-protected-resource/files/mcp"
    headers = {
        "Origin": APP,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "mcp-protocol-version",
    }
    async with http.options(auth_gw.url(path), headers=headers) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert resp.headers["Access-Control-Allow-Methods"] == "GET"
    async with http.get(auth_gw.url(path), headers={"Origin": APP}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert (await resp.json())["resource"] == auth_gw.url("/files/mcp")
    async with http.get(auth_gw.url(path)) as resp:
        assert resp.status == 200
        assert cors_headers(resp.headers) == {}
        assert resp.headers["Vary"] == "Origin"  # publicly cacheable: caches must key on Origin


@pytest.mark.parametrize("path", ["/files/mcp", "/.well-known/oauth-protected-resource/files/mcp"])
async def test_preflight_from_a_foreign_origin_is_refused(
    auth_gw: Gateway, http: aiohttp.ClientSession, path: str
) -> None:
    headers = {"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    async with http.options(auth_gw.url(path), headers=headers) as resp:
        assert resp.status == 403
        assert cors_headers(resp.headers) == {}


async def test_options_that_is_not_a_preflight_is_not_allowed(
    gw: Gateway, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.options(gw.url("/up/mcp"), headers={"Origin": APP}) as resp:
        assert resp.status == 405
        assert resp.headers["Access-Control-Allow-Origin"] == APP
    async with http.options(gw.url("/up/mcp")) as resp:
        assert resp.status == 405
        assert cors_headers(resp.headers) == {}
    assert upstream.requests == []


# -- Host ------------------------------------------------------------------------------------


async def test_rebinding_host_gets_421_before_the_upstream(
    gw: Gateway, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    port = gw.running.port
    for host in (f"evil.example:{port}", "evil.example", f"localhost:{port}"):
        headers = {**ACCEPT, "Host": host}
        async with http.post(gw.url("/up/mcp"), json=RPC, headers=headers) as resp:
            assert resp.status == 421, host
            assert (await resp.json())["error"]["data"] == {"reason": "misdirected_request"}
            assert resp.headers["Cache-Control"] == "no-store"
    async with http.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT) as resp:
        assert resp.status == 200  # Host: 127.0.0.1:<port>, as in public_url
    assert len(upstream.requests) == 1


async def test_probes_answer_any_host_but_other_paths_do_not(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    foreign = {"Host": "evil.example", "Origin": EVIL}
    for path in ("/healthz", "/metrics"):
        async with http.get(gw.url(path), headers=foreign) as resp:
            assert resp.status == 200, path
    async with http.get(gw.url("/nowhere"), headers=foreign) as resp:
        assert resp.status == 421
    async with http.post(gw.url("/healthz"), headers=foreign) as resp:
        assert resp.status == 421


async def test_configured_hosts_replace_the_public_urls(
    start_gateway_for: StartGateway, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway_for(
        {"name": "up", "route": "/up/mcp", "url": upstream.url},
        server={"allowed_hosts": ["mcp.internal", "Gateway.Example:9000"]},
    )
    statuses = {}
    for host in ("mcp.internal", "mcp.internal:1234", "gateway.example:9000", "127.0.0.1"):
        async with http.post(gw.url("/up/mcp"), json=RPC, headers={**ACCEPT, "Host": host}) as resp:
            statuses[host] = resp.status
    async with http.post(gw.url("/up/mcp"), json=RPC, headers=ACCEPT) as resp:
        statuses["default"] = resp.status
    assert statuses == {
        "mcp.internal": 200,
        "mcp.internal:1234": 200,
        "gateway.example:9000": 200,
        "127.0.0.1": 421,
        "default": 421,
    }


async def test_without_public_url_the_bound_port_is_served(
    upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    route = {"name": "up", "route": "/up/mcp", "url": upstream.url, "allow_anonymous": True}
    config = validated(gateway_document(route, port=0, public_url=None))
    running = await start_gateway(config)
    try:
        base = f"http://127.0.0.1:{running.port}/up/mcp"
        statuses = []
        for host in (None, f"localhost:{running.port}", "127.0.0.1:0", "127.0.0.1:1"):
            headers = {**ACCEPT, "Host": host} if host else ACCEPT
            async with http.post(base, json=RPC, headers=headers) as resp:
                statuses.append(resp.status)
    finally:
        await running.stop()
    assert statuses == [200, 200, 421, 421]
