"""`policy.limits` at the gateway, on both data planes: real tokens, a real upstream that can
hold calls, a real client. Limits here are this process's own (no store); the shared ones are
in `tests/e2e/test_limits_replicas.py`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.web.app import create_app
from gateway.web.keys import LANES_KEY
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.configs import gateway_document, validated
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer

ROUTE = "/files/mcp"
BOUND = 10.0
PLANES = pytest.mark.parametrize("plane", ["lean", "aiohttp"])


@dataclass
class Held:
    """An upstream that holds `tools/call hold` until released, counting calls in flight."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most: int = 0
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        name = body.get("params", {}).get("name")
        if name == "stream":
            return await self._stream(request, body)
        if name == "hold":
            async with self.arrived:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                self.arrived.notify_all()
            try:
                await self.release.wait()
            finally:
                self.in_flight -= 1
        return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": {}})

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: message\ndata: {}\n\n")
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": body.get("id"), "result": {}}
        await response.write(f"event: message\ndata: {json.dumps(answer)}\n\n".encode())
        await response.write_eof()
        return response

    async def wait_for(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: self.in_flight >= count), BOUND)


@pytest.fixture
async def held() -> AsyncIterator[tuple[Held, RecordingUpstream]]:
    upstream = Held()
    async with recording_upstream(upstream.handle) as recorded:
        yield upstream, recorded
        upstream.release.set()


async def limited_gateway(
    start: StartGateway, issuer: LocalIssuer, url: str, limits: list[dict[str, Any]], plane: str
) -> Gateway:
    return await start(
        {"name": "files", "route": ROUTE, "url": url, "scopes": ["mcp:tools"],
         "policy": {"tools": {"*": []}, "limits": limits}},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        server={"data_plane": plane},
    )  # fmt: skip


def call(name: str, rpc_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": name}}


def token_for(issuer: LocalIssuer, gw: Gateway, subject: str = "alice") -> str:
    return issuer.mint(issuer.claims(gw.url(ROUTE), sub=subject))


async def post(
    http: aiohttp.ClientSession, gw: Gateway, token: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with http.post(gw.url(ROUTE), json=body, headers=headers) as resp:
        text = await resp.text()
        parsed = json.loads(text) if resp.content_type == "application/json" else {"sse": text}
        return resp.status, dict(resp.headers), parsed


def log_lines(event: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway_log().splitlines() if f'"{event}"' in line]


async def until_logged(count: int, event: str = "request_completed") -> None:
    """Wait (bounded) until `count` access lines were written: a request's slots are given
    back before its access line."""
    async with asyncio.timeout(BOUND):
        while len(log_lines(event)) < count:
            await asyncio.sleep(0.01)


@PLANES
async def test_a_call_over_the_rate_gets_429_naming_the_limit_and_is_not_forwarded(
    start_gateway_for: StartGateway, issuer: LocalIssuer, held: tuple[Held, RecordingUpstream],
    plane: str,
) -> None:  # fmt: skip
    _, recorded = held
    limits = [{"tools": ["write_*"], "rate": 2, "per": "minute"}]
    gw = await limited_gateway(start_gateway_for, issuer, recorded.url, limits, plane)
    alice, bob = token_for(issuer, gw), token_for(issuer, gw, "bob")
    async with aiohttp.ClientSession() as http:
        assert [(await post(http, gw, alice, call("write_a", n)))[0] for n in (1, 2)] == [200, 200]
        status, headers, body = await post(http, gw, alice, call("write_b", 3))
        assert (await post(http, gw, alice, call("read_a", 4)))[0] == 200  # not counted
        assert (await post(http, gw, bob, call("write_a", 5)))[0] == 200  # bob's own bucket
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 30  # one token in 30 s
    assert body == {"jsonrpc": "2.0", "id": 3, "error": {
        "code": -31059, "message": "Rate limit for tools matching 'write_*': 2 per minute",
        "data": {"reason": "rate_limited"}}}  # fmt: skip
    names = [json.loads(r.body)["params"]["name"] for r in recorded.requests]
    assert names == ["write_a", "write_a", "read_a", "write_a"]
    [event] = log_lines("call_limited")
    assert {k: event[k] for k in ("upstream", "limit", "kind", "by", "sub", "name")} == {
        "upstream": "files", "limit": "0", "kind": "rate", "by": "principal", "sub": "alice",
        "name": "write_b"}  # fmt: skip
    access = [line for line in log_lines("request_completed") if line["status"] == 429]
    assert [line["decision"] for line in access] == ["limited"]
    metrics = await metrics_text(gw)
    assert 'mcp_gateway_limited_total{kind="rate",limit="0",upstream="files"} 1.0' in metrics


async def metrics_text(gw: Gateway) -> str:
    async with aiohttp.ClientSession() as http, http.get(gw.url("/metrics")) as resp:
        return await resp.text()


@PLANES
async def test_the_concurrency_cap_holds_under_100_concurrent_calls(
    start_gateway_for: StartGateway, issuer: LocalIssuer, held: tuple[Held, RecordingUpstream],
    plane: str,
) -> None:  # fmt: skip
    upstream, recorded = held
    cap = 5
    limits = [{"name": "inflight", "concurrency": cap}]
    gw = await limited_gateway(start_gateway_for, issuer, recorded.url, limits, plane)
    alice = token_for(issuer, gw)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        calls = [asyncio.create_task(post(http, gw, alice, call("hold", n))) for n in range(100)]
        await upstream.wait_for(cap)
        async with asyncio.timeout(BOUND):
            while sum(task.done() for task in calls) < 100 - cap:
                await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        assert upstream.in_flight == cap
        upstream.release.set()
        answers = await asyncio.gather(*calls)
        assert sorted(status for status, _, _ in answers) == [200] * cap + [429] * (100 - cap)
        assert upstream.most == cap
        refused = next(body for status, _, body in answers if status == 429)
        assert refused["error"]["message"] == (
            "Concurrency limit 'inflight' for all calls: 5 in flight"
        )
        await until_logged(100)
        upstream.release.clear()
        # every slot came back: the cap admits as many again
        again = [asyncio.create_task(post(http, gw, alice, call("hold", n))) for n in range(cap)]
        await upstream.wait_for(cap)
        upstream.release.set()
        assert [status for status, _, _ in await asyncio.gather(*again)] == [200] * cap


@PLANES
async def test_slots_come_back_after_a_streamed_answer_and_after_a_client_leaves(
    start_gateway_for: StartGateway, issuer: LocalIssuer, held: tuple[Held, RecordingUpstream],
    plane: str,
) -> None:  # fmt: skip
    upstream, recorded = held
    gw = await limited_gateway(start_gateway_for, issuer, recorded.url, [{"concurrency": 1}], plane)
    alice = token_for(issuer, gw)
    async with aiohttp.ClientSession() as http:
        status, _, body = await post(http, gw, alice, call("stream", 1))
        assert status == 200
        assert '"id": 1' in body["sse"]
        await until_logged(1)
        status, _, body = await post(http, gw, alice, call("stream", 2))
        assert status == 200
        assert '"id": 2' in body["sse"]
        await until_logged(2)
        # a client that leaves while its call is held upstream
        leaving = asyncio.create_task(post(http, gw, alice, call("hold", 3)))
        await upstream.wait_for(1)
        assert (await post(http, gw, alice, call("write", 4)))[0] == 429  # the slot is taken
        leaving.cancel()
        await asyncio.wait_for(recorded.cancelled.wait(), BOUND)
        await until_logged(4)
        status, _, _ = await post(http, gw, alice, call("write", 5))
    assert status == 200
    assert [line["status"] for line in log_lines("request_completed")] == [200, 200, 429, 499, 200]


async def test_routes_without_limits_run_the_steps_they_ran_before(issuer: LocalIssuer) -> None:
    auth = {"resource_server": {"authorization_servers": [issuer.auth_server()]}}
    config = validated(gateway_document(
        {"name": "files", "route": ROUTE, "url": "http://127.0.0.1:9/mcp", "scopes": ["s"],
         "policy": {"limits": [{"concurrency": 1}]}},
        {"name": "plain", "route": "/plain/mcp", "url": "http://127.0.0.1:9/mcp", "scopes": ["s"]},
        public_url="https://gw.example", auth=auth,
    ))  # fmt: skip
    lanes = create_app(config, registry=CollectorRegistry())[LANES_KEY]
    steps = {path: [step.__name__ for step in lane._steps] for path, lane in lanes.items()}  # type: ignore[attr-defined]
    before = ["authenticate", "read_body", "inspect_message", "bind_session", "decide"]
    assert steps == {b"/plain/mcp": before, ROUTE.encode(): [*before, "limit"]}
