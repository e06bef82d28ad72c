"""Health, readiness and metrics endpoints of a running gateway."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.conftest import StartGateway
from tests.support.http_upstream import recording_upstream
from tests.support.processes import free_port


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


async def test_health_and_readiness(start_gateway_for: StartGateway) -> None:
    async with recording_upstream(ok) as upstream:
        gw = await start_gateway_for(
            {"name": "up", "route": "/up/mcp", "url": upstream.url},
            {"name": "down", "route": "/down/mcp", "url": f"http://127.0.0.1:{free_port()}/mcp"},
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url("/healthz")) as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok"}
            async with http.get(gw.url("/readyz")) as resp:
                assert resp.status == 503
                assert await resp.json() == {
                    "status": "not_ready",
                    "upstreams": {"up": "ok", "down": "unreachable"},
                }


async def test_metrics_count_requests_and_upstream_errors(start_gateway_for: StartGateway) -> None:
    async with recording_upstream(ok) as upstream:
        gw = await start_gateway_for(
            {"name": "up", "route": "/up/mcp", "url": upstream.url},
            {"name": "down", "route": "/down/mcp", "url": f"http://127.0.0.1:{free_port()}/mcp"},
        )
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.post(gw.url("/up/mcp"), json=body) as resp:
                    assert resp.status == 200
            async with http.post(gw.url("/down/mcp"), json=body) as resp:
                assert resp.status == 502
            async with http.get(gw.url("/metrics")) as resp:
                assert resp.status == 200
                text = await resp.text()
    assert 'mcp_gateway_requests_total{method="POST",status="200",upstream="up"} 3.0' in text
    assert 'mcp_gateway_requests_total{method="POST",status="502",upstream="down"} 1.0' in text
    assert 'mcp_gateway_upstream_errors_total{kind="connect",upstream="down"} 1.0' in text
    assert 'mcp_gateway_upstream_duration_seconds_count{upstream="up"} 3.0' in text
    assert "mcp_gateway_open_streams" in text


async def test_metrics_on_their_own_port(start_gateway_for: StartGateway) -> None:
    async with recording_upstream(ok) as upstream:
        gw = await start_gateway_for(
            {"name": "up", "route": "/up/mcp", "url": upstream.url},
            server={"metrics_port": free_port()},
        )
        assert gw.running.metrics_port is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url("/metrics")) as resp:
                assert resp.status == 404
            metrics_url = f"http://127.0.0.1:{gw.running.metrics_port}/metrics"
            async with http.get(metrics_url) as resp:
                assert resp.status == 200
                assert "mcp_gateway_requests_total" in await resp.text()
