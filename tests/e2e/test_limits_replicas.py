"""Limits shared by two gateways (replicas) on one real `redis-server`, in this process as the
other e2e tests run them; a Redis outage applies the configured fallback and heals by itself;
and a real `mcp` SDK client meets a limit in front of a real SDK server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp import MCPError

from gateway.session.seal import new_key
from tests.conftest import Gateway, StartGateway
from tests.e2e.test_stdio import EVERYTHING, everything_upstream
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import HttpServerProcess, free_port
from tests.support.redis import RedisServer
from tests.support.sdk_client import connect
from tests.support.secrets import remember
from tests.web.test_limits import BOUND, Held, call, log_lines, post

ROUTE = "/files/mcp"
N = 5


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer(password=remember(new_key())) as server:
        yield server


@pytest.fixture
async def held() -> AsyncIterator[tuple[Held, RecordingUpstream]]:
    upstream = Held()
    async with recording_upstream(upstream.handle) as recorded:
        yield upstream, recorded
        upstream.release.set()


async def replicas(
    start: StartGateway, issuer: LocalIssuer, redis: RedisServer, url: str,
    limits: list[dict[str, Any]], fallback: str = "refuse",
) -> tuple[Gateway, Gateway]:  # fmt: skip
    """Two gateways on one Redis (one key prefix, as replicas of one deployment) serving one
    public URL, as behind a load balancer."""
    store = {"backend": "redis", "url": redis.url, "key_prefix": f"limits-{redis.port}:",
             "timeout": 1, "limits_fallback": fallback}  # fmt: skip
    auth = {"resource_server": {"authorization_servers": [issuer.auth_server()]}}
    upstream = {"name": "files", "route": ROUTE, "url": url, "scopes": ["mcp:tools"],
                "policy": {"tools": {"*": []}, "limits": limits}}  # fmt: skip
    ports = free_port(), free_port()
    public = f"http://127.0.0.1:{ports[0]}"
    server = {"allowed_hosts": [f"127.0.0.1:{port}" for port in ports]}
    a, b = [
        await start(upstream, auth=auth, store=store, port=port, public_url=public, server=server)
        for port in ports
    ]
    return a, b


def token(issuer: LocalIssuer, gw: Gateway, subject: str = "alice") -> str:
    return issuer.mint(issuer.claims(gw.url(ROUTE), sub=subject))


async def statuses(
    http: aiohttp.ClientSession, gateways: tuple[Gateway, ...], bearer: str, count: int
) -> list[int]:
    """`count` calls alternated between the gateways, one after the other."""
    found = []
    for n in range(count):
        found.append((await post(http, gateways[n % len(gateways)], bearer, call("w", n)))[0])
    return found


async def test_two_replicas_enforce_one_per_user_limit_together(
    start_gateway_for: StartGateway, issuer: LocalIssuer, redis: RedisServer,
    held: tuple[Held, RecordingUpstream],
) -> None:  # fmt: skip
    _, recorded = held
    limits = [{"rate": N, "per": "hour"}]
    a, b = await replicas(start_gateway_for, issuer, redis, recorded.url, limits)
    async with aiohttp.ClientSession() as http:
        alice = await statuses(http, (a, b), token(issuer, a), 2 * N + 3)
        bob = await statuses(http, (b, a), token(issuer, a, "bob"), N + 1)
    assert alice == [200] * N + [429] * (N + 3)  # exactly N of them, whichever replica
    assert bob == [200] * N + [429]  # another user is unaffected by alice's calls
    assert len(recorded.requests) == 2 * N


async def test_the_concurrency_cap_holds_across_replicas_under_100_concurrent_calls(
    start_gateway_for: StartGateway, issuer: LocalIssuer, redis: RedisServer,
    held: tuple[Held, RecordingUpstream],
) -> None:  # fmt: skip
    upstream, recorded = held
    cap = 4
    a, b = await replicas(start_gateway_for, issuer, redis, recorded.url, [{"concurrency": cap}])
    alice = token(issuer, a)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        calls = [asyncio.create_task(post(http, (a, b)[n % 2], alice, call("hold", n)))
                 for n in range(100)]  # fmt: skip
        await upstream.wait_for(cap)
        async with asyncio.timeout(BOUND):
            while sum(task.done() for task in calls) < 100 - cap:
                await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        assert upstream.in_flight == cap
        upstream.release.set()
        answers = [status for status, _, _ in await asyncio.gather(*calls)]
    assert sorted(answers) == [200] * cap + [429] * (100 - cap)
    assert upstream.most == cap


async def until_recovered(http: aiohttp.ClientSession, gw: Gateway, bearer: str, seen: int) -> int:
    """Call `gw` until its limits have the store back (its `limits_store_recovered` line, the
    `seen + 1`th); the status of the call that found it back."""
    async with asyncio.timeout(BOUND):
        while True:
            status = (await post(http, gw, bearer, call("w")))[0]
            if len(log_lines("limits_store_recovered")) > seen:
                return status
            await asyncio.sleep(0.05)


async def test_redis_down_with_refuse_gives_503_then_heals(
    start_gateway_for: StartGateway, issuer: LocalIssuer, redis: RedisServer,
    held: tuple[Held, RecordingUpstream],
) -> None:  # fmt: skip
    _, recorded = held
    a, b = await replicas(
        start_gateway_for, issuer, redis, recorded.url, [{"rate": N, "per": "hour"}], "refuse"
    )
    alice = token(issuer, a)
    async with aiohttp.ClientSession() as http:
        assert await statuses(http, (a, b), alice, 2) == [200, 200]
        redis.stop()
        refused = [await post(http, gw, alice, call("w")) for gw in (a, b)]
        assert [status for status, _, _ in refused] == [503, 503]
        for _, headers, body in refused:
            assert int(headers["Retry-After"]) >= 1
            assert body["error"]["data"] == {"reason": "store_unavailable"}
        forwarded = len(recorded.requests)
        redis.start()  # back, and empty
        assert await until_recovered(http, a, alice, 0) == 200
        assert await until_recovered(http, b, alice, 1) == 200
        # shared again: N in all since Redis came back, two of them already used
        assert await statuses(http, (a, b), alice, N) == [200] * (N - 2) + [429] * 2
    assert forwarded == 2  # nothing refused reached the upstream
    warnings = [line for line in log_lines("limits_store_unavailable")]
    assert [line["level"] for line in warnings] == ["warning", "warning"]  # one per replica


async def test_redis_down_with_local_enforces_per_replica_then_heals(
    start_gateway_for: StartGateway, issuer: LocalIssuer, redis: RedisServer,
    held: tuple[Held, RecordingUpstream],
) -> None:  # fmt: skip
    _, recorded = held
    a, b = await replicas(
        start_gateway_for, issuer, redis, recorded.url, [{"rate": N, "per": "hour"}], "local"
    )
    alice = token(issuer, a)
    async with aiohttp.ClientSession() as http:
        assert await statuses(http, (a, b), alice, N + 1) == [200] * N + [429]
        redis.stop()
        # each replica now counts on its own: N more at each, never unlimited
        assert await statuses(http, (a,), alice, N + 1) == [200] * N + [429]
        assert await statuses(http, (b,), alice, N + 1) == [200] * N + [429]
        redis.start()
        assert await until_recovered(http, a, alice, 0) == 200
        assert await until_recovered(http, b, alice, 1) == 200
        assert await statuses(http, (a, b), alice, N) == [200] * (N - 2) + [429] * 2
    limited = log_lines("call_limited")
    assert {line["fallback"] for line in limited} == {None, "local"}


@pytest.mark.parametrize("server", ["sdk_json", "sdk_sse"])
async def test_the_sdk_client_surfaces_the_429_naming_the_limit(
    start_gateway_for: StartGateway, issuer: LocalIssuer, server: str,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    upstream: HttpServerProcess = request.getfixturevalue(server)
    limits = [{"name": "echoes", "tools": ["echo"], "rate": 1, "per": "hour"}]
    gw = await start_gateway_for(
        {"name": "sdk", "route": ROUTE, "url": upstream.url, "scopes": ["mcp:tools"],
         "policy": {"limits": limits}},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )  # fmt: skip
    answers: list[httpx2.Response] = []

    async def record(response: httpx2.Response) -> None:
        answers.append(response)

    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token(issuer, gw)}"},
            timeout=httpx2.Timeout(30, read=300),
            event_hooks={"response": [record]},
        ) as http,
        connect(gw.url(ROUTE), http_client=http) as client,
    ):
        first = await client.call_tool("echo", {"text": "one"})
        assert not first.is_error
        with pytest.raises(MCPError) as raised:
            await client.call_tool("echo", {"text": "two"})
        listed = await client.list_tools()  # other calls do not count against the limit
    assert "echo" in {tool.name for tool in listed.tools}
    error = raised.value.error
    assert (error.code, error.message, error.data) == (
        -31059, "Rate limit 'echoes' for tools named 'echo': 1 per hour", {"reason": "rate_limited"}
    )  # fmt: skip
    [refused] = [answer for answer in answers if answer.status_code == 429]
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600  # one call an hour
    assert refused.headers["Content-Type"] == "application/json"


async def test_a_stdio_route_is_limited_too(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    limits = [{"tools": ["echo"], "rate": 2, "per": "hour"}]
    gw = await start_gateway_for(
        everything_upstream(scopes=["mcp:tools"], policy={"limits": limits}),
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )
    bearer = issuer.mint(issuer.claims(gw.url(EVERYTHING), sub="alice"))
    async with connect(gw.url(EVERYTHING), headers={"Authorization": f"Bearer {bearer}"}) as client:
        for n in range(2):
            await client.call_tool("echo", {"message": str(n)})
        with pytest.raises(MCPError) as raised:
            await client.call_tool("echo", {"message": "three"})
        assert (await client.call_tool("get-sum", {"a": 1, "b": 2})).is_error is False
    assert raised.value.error.message == "Rate limit for tools named 'echo': 2 per hour"
