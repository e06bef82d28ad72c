"""Two gateway processes sharing one real `redis-server`, as replicas behind a load balancer:
nothing depends on which replica a request lands on, codes and refresh tokens are single use
across replicas, and a Redis outage refuses (503) what needs the store, then heals by itself.

Both replicas serve the same public URL (the issuer and the resource URLs derive from it), as
they would behind one load balancer; each also accepts its own loopback port as `Host`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from gateway.oauth.records import digest
from gateway.oauth.upstream import pkce_pair
from gateway.oauth.users import hash_password
from gateway.session.seal import new_key
from gateway.store.redis import RedisKV
from gateway.web.facade import SESSION_COOKIE
from tests.support.configs import PRODUCTION_LOG, gateway_document, write_yaml
from tests.support.crowd import Exchange, RawMcpClient
from tests.support.oauth_client import (
    AuthorizationError,
    Browser,
    HttpExchange,
    SignIn,
    follow_authorization,
    loopback_redirect_uri,
)
from tests.support.processes import HttpServerProcess, ManagedProcess, free_port
from tests.support.redis import RedisServer
from tests.support.secrets import remember

ROUTE = "/everything/mcp"
IDLE = 2  # seconds: short, so that replicas reap idle sessions within a test
SIGN_IN_IDLE, SIGN_IN_LIFETIME = 3, 8
"""Seconds: the facade's sign-in sessions end within a test, idle or not."""
PASSWORD = remember("replicas share one store")
GATEWAY = Path(sys.executable).parent / "mcp-auth-gateway"


@dataclass
class Replicas:
    public: str
    """The URL clients know (the issuer); replica A's own address in this test."""
    a: str
    b: str
    processes: tuple[ManagedProcess, ManagedProcess]

    def logs(self) -> str:
        return "".join(p.stdout_text() + p.stderr_text() for p in self.processes)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer(password=remember(new_key())) as server:
        yield server


def _config(tmp: Path, redis: RedisServer, upstream: str, a: int, b: int) -> Path:
    """One config for both replicas (as one ConfigMap); each gets its port from the env."""
    secret_dir = tmp / "secrets"
    secret_dir.mkdir()
    (secret_dir / "redis-url").write_text(redis.url)
    (secret_dir / "session-keys").write_text(remember(new_key()) + "\n")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    (secret_dir / "signing-key.pem").write_text(remember(pem))
    users = tmp / "users.yaml"
    users.write_text(f'users:\n  alice: {{password_hash: "{hash_password(PASSWORD)}"}}\n')
    return write_yaml(
        tmp / "gateway.yaml",
        gateway_document(
            {"name": "everything", "route": ROUTE, "url": upstream, "scopes": ["mcp:tools"]},
            public_url=f"http://127.0.0.1:{a}",
            server={"allowed_hosts": [f"127.0.0.1:{a}", f"127.0.0.1:{b}"]},
            log=PRODUCTION_LOG,
            store={"backend": "redis", "url_file": secret_dir / "redis-url",
                   "key_prefix": f"replicas-{a}:", "timeout": 1},
            sessions={"keys_file": secret_dir / "session-keys", "idle_timeout": IDLE},
            auth={"authorization_server": {
                "login": {"local": {"users_file": users}},
                "grants": [{"scopes": ["mcp:tools"]}],
                "signing_key_file": secret_dir / "signing-key.pem",
                "sign_ins_per_minute": 10000,
                "sign_in_session": {"idle_timeout": SIGN_IN_IDLE, "max_lifetime": SIGN_IN_LIFETIME},
            }},
        ),
    )  # fmt: skip


@pytest.fixture
async def replicas(
    tmp_path: Path, redis: RedisServer, everything: HttpServerProcess
) -> AsyncIterator[Replicas]:
    ports = free_port(), free_port()
    config = _config(tmp_path, redis, everything.url, *ports)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY")}
    processes = tuple(
        ManagedProcess(
            [str(GATEWAY), "serve", "--config", str(config)],
            env={**environment, "MCP_GATEWAY_SERVER__PORT": str(port)},
            ready_url=f"http://127.0.0.1:{port}/healthz",
            name=f"gateway-{port}",
        )
        for port in ports
    )
    a, b = processes
    async with a, b:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        running = Replicas(urls[0], urls[0], urls[1], (a, b))
        yield running
    logs = running.logs()
    for secret in (PASSWORD, redis.password or ""):
        assert secret not in logs


async def register(http: httpx2.AsyncClient, replica: str, redirect_uri: str) -> str:
    answer = await http.post(
        replica + "/oauth/register",
        json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none",
              "grant_types": ["authorization_code", "refresh_token"]},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    client_id: str = answer.json()["client_id"]
    return client_id


@dataclass
class Code:
    client_id: str
    redirect_uri: str
    code: str
    verifier: str


async def authorize(replicas: Replicas, replica: str, client_id: str, redirect_uri: str) -> Code:
    verifier, challenge = pkce_pair()
    query = urlencode(
        {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
         "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
         "resource": replicas.public + ROUTE, "scope": "mcp:tools offline_access"}
    )  # fmt: skip
    result = await follow_authorization(  # the browser sees the public origin (one LB)
        f"{replica}/oauth/authorize?{query}", redirect_uri, sign_in=SignIn("alice", PASSWORD),
        origin=replicas.public,
    )  # fmt: skip
    assert result.iss == replicas.public  # the same issuer whichever replica answered
    return Code(client_id, redirect_uri, remember(result.code), verifier)


def redeem_form(code: Code) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code.code, "client_id": code.client_id,
            "redirect_uri": code.redirect_uri, "code_verifier": code.verifier}  # fmt: skip


def refresh_form(client_id: str, refresh_token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token}


async def token(http: httpx2.AsyncClient, replica: str, form: dict[str, str]) -> httpx2.Response:
    answer = await http.post(replica + "/oauth/token", data=form)
    if answer.status_code == 200:
        body: dict[str, Any] = answer.json()
        remember(body["access_token"])
        if "refresh_token" in body:
            remember(body["refresh_token"])
    return answer


def echoed(exchange: Exchange) -> list[object]:
    return [summary[2] for summary in exchange.summaries() if summary[0] == "result"]


async def test_a_client_moves_between_replicas_at_every_step(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    redirect_uri = loopback_redirect_uri()
    async with httpx2.AsyncClient(timeout=10) as http:
        client_id = await register(http, a, redirect_uri)  # registered at A...
        code = await authorize(replicas, b, client_id, redirect_uri)  # ...authorized at B
        redeemed = await token(http, a, redeem_form(code))  # redeemed at A
        assert redeemed.status_code == 200, redeemed.text
        first = redeemed.json()
        refreshed = await token(http, b, refresh_form(client_id, first["refresh_token"]))
        assert refreshed.status_code == 200, refreshed.text  # refreshed at B
        access = refreshed.json()["access_token"]

    async with RawMcpClient(a + ROUTE, access, era="stateful") as client:
        opened = await client.open(1)
        assert opened[0].status == 200
        assert client.session_id is not None
        for n, replica in enumerate([b, a, b, a], start=2):
            client.url = replica + ROUTE  # one session, alternately through A and B
            answer = await client.call_tool(n, "echo", {"message": f"hop {n}"})
            assert answer.status == 200
            assert echoed(answer) == [f"Echo: hop {n}"]
        client.url = b + ROUTE
        assert await client.end_session() in (200, 204)


async def test_codes_and_refresh_tokens_are_single_use_across_replicas(
    replicas: Replicas,
) -> None:
    a, b = replicas.a, replicas.b
    redirect_uri = loopback_redirect_uri()
    async with httpx2.AsyncClient(timeout=10) as http:
        client_id = await register(http, a, redirect_uri)
        for trial in range(100):
            # The same code at both replicas at once: exactly one answers with tokens, and the
            # other, a replay, revokes them.
            code = await authorize(replicas, (a, b)[trial % 2], client_id, redirect_uri)
            form = redeem_form(code)
            answers = await asyncio.gather(token(http, a, form), token(http, b, form))
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [200, 400], (trial, [answer.text for answer in answers])
            winner = next(answer for answer in answers if answer.status_code == 200).json()
            assert await mcp_status((a, b)[trial % 2], winner["access_token"]) == 401

            # The same refresh token at both replicas at once: exactly one rotation.
            code = await authorize(replicas, (b, a)[trial % 2], client_id, redirect_uri)
            tokens = (await token(http, a, redeem_form(code))).json()
            form = refresh_form(client_id, tokens["refresh_token"])
            answers = await asyncio.gather(token(http, a, form), token(http, b, form))
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [200, 400], (trial, [answer.text for answer in answers])


async def test_a_redis_outage_refuses_and_service_resumes_without_restarts(
    replicas: Replicas, redis: RedisServer
) -> None:
    a, b = replicas.a, replicas.b
    redirect_uri = loopback_redirect_uri()
    async with httpx2.AsyncClient(timeout=10) as http:
        client_id = await register(http, a, redirect_uri)
        code = await authorize(replicas, b, client_id, redirect_uri)
        tokens = (await token(http, a, redeem_form(code))).json()
        access = tokens["access_token"]  # not yet used: no replica has checked it

        redis.stop()
        try:
            for replica in (a, b):
                outage = [
                    await http.post(
                        replica + "/oauth/register",
                        json={
                            "redirect_uris": [redirect_uri],
                            "token_endpoint_auth_method": "none",
                        },
                    ),
                    await token(http, replica, refresh_form(client_id, tokens["refresh_token"])),
                    await http.get(
                        replica + "/oauth/authorize",
                        params={"client_id": client_id, "redirect_uri": redirect_uri},
                    ),
                    await http.get(replica + "/readyz"),
                ]
                assert [answer.status_code for answer in outage] == [503] * 4
                assert all(answer.headers.get("Retry-After") for answer in outage[:3])
                assert outage[1].json()["error"] == "temporarily_unavailable"
                assert outage[3].json()["store"] == "unavailable"
                # A gateway token cannot be checked against revocations: refused, not passed.
                assert await mcp_status(replica, access) == 503
        finally:
            redis.start()

        # Back without restarting either gateway. Redis came back empty (no persistence here),
        # so the old registration is gone: a client registers again and everything works.
        for replica in (a, b):
            assert (await http.get(replica + "/readyz")).status_code == 200
        client_id = await register(http, b, redirect_uri)
        code = await authorize(replicas, a, client_id, redirect_uri)
        answer = await token(http, b, redeem_form(code))
        assert answer.status_code == 200, answer.text
        assert await mcp_status(a, answer.json()["access_token"]) == 200
        assert await mcp_status(b, access) == 200  # checkable again (nothing revoked it)
    logs = replicas.logs()
    assert '"store_unavailable"' in logs
    assert '"store_recovered"' in logs


async def mcp_status(replica: str, access: str) -> int:
    async with RawMcpClient(replica + ROUTE, access, era="stateful") as client:
        return (await client.open(1))[0].status


async def new_access_token(replicas: Replicas) -> str:
    redirect_uri = loopback_redirect_uri()
    async with httpx2.AsyncClient(timeout=10) as http:
        client_id = await register(http, replicas.b, redirect_uri)
        code = await authorize(replicas, replicas.a, client_id, redirect_uri)
        answer = await token(http, replicas.b, redeem_form(code))
    access: str = answer.json()["access_token"]
    return access


async def test_a_session_ended_through_one_replica_is_refused_by_the_other(
    replicas: Replicas,
) -> None:
    access = await new_access_token(replicas)
    async with RawMcpClient(replicas.a + ROUTE, access, era="stateful") as client:
        await client.open(1)
        assert await client.end_session() in (200, 204)  # DELETE through A
        client.url = replicas.b + ROUTE  # B has never seen this session
        refused = await client.call_tool(2, "echo", {"message": "after the end"})
        assert refused.status == 404
    assert '"reason":"ended"' in replicas.logs()


async def test_a_session_in_use_through_one_replica_is_not_reaped_by_the_other(
    replicas: Replicas,
) -> None:
    access = await new_access_token(replicas)
    async with RawMcpClient(replicas.a + ROUTE, access, era="stateful") as client:
        await client.open(1)  # minted by A, then used only through B for a while
        client.url = replicas.b + ROUTE
        for n in range(2, 2 + 6 * IDLE * 2):  # about three idle timeouts of use through B
            answer = await client.call_tool(n, "echo", {"message": f"via B {n}"})
            assert echoed(answer) == [f"Echo: via B {n}"]
            await asyncio.sleep(0.25)
        client.url = replicas.a + ROUTE  # A has seen no request in all that time
        answer = await client.call_tool(99, "echo", {"message": "back at A"})
        assert echoed(answer) == ["Echo: back at A"]
    assert "session_reaped" not in replicas.logs()


# -- the facade's sign-in session, shared through Redis ------------------------------------------


async def authorize_in(
    browser: Browser, replicas: Replicas, replica: str, client_id: str, redirect_uri: str,
    **extra: str,
) -> list[HttpExchange]:  # fmt: skip
    """One authorization at `replica` in `browser` (alice's password typed if asked); the
    requests the browser made. Raises `AuthorizationError` when it ends in an error."""
    _, challenge = pkce_pair()
    query = urlencode(
        {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
         "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
         "resource": replicas.public + ROUTE, "scope": "mcp:tools", **extra}
    )  # fmt: skip
    exchanges: list[HttpExchange] = []
    result = await follow_authorization(
        f"{replica}/oauth/authorize?{query}", redirect_uri, sign_in=SignIn("alice", PASSWORD),
        origin=replicas.public, browser=browser, exchanges=exchanges,
    )  # fmt: skip
    remember(result.code)
    return exchanges


def signed_in_browser_cookie(browser: Browser) -> str:
    cookie = browser.cookie(SESSION_COOKIE)
    assert cookie is not None
    return remember(cookie)


async def test_a_sign_in_session_works_on_both_replicas_until_it_is_idle(
    replicas: Replicas, redis: RedisServer
) -> None:
    redirect_uri = loopback_redirect_uri()
    browser = Browser()
    async with httpx2.AsyncClient(timeout=10) as http:
        client_id = await register(http, replicas.a, redirect_uri)
    signed_in = await authorize_in(browser, replicas, replicas.a, client_id, redirect_uri)
    assert any(e.url.endswith("/oauth/sign-in") for e in signed_in)
    cookie = signed_in_browser_cookie(browser)
    # Through B: no page at all, the session (kept in Redis) names alice.
    through_b = await authorize_in(browser, replicas, replicas.b, client_id, redirect_uri,
                                   prompt="none")  # fmt: skip
    assert [e.method for e in through_b] == ["GET"]

    # Unused, it ends after its idle timeout: wait until Redis drops it (reading it with GET
    # does not count as a use), then neither replica knows it.
    port = replicas.a.rpartition(":")[2]
    store = RedisKV(redis.url, prefix=f"replicas-{port}:")
    key = f"sessions:{digest(cookie)}"
    try:
        deadline = asyncio.get_running_loop().time() + 10 * SIGN_IN_IDLE
        while await store.get(key) is not None:
            assert asyncio.get_running_loop().time() < deadline, "the session never ended"
            await asyncio.sleep(0.2)
    finally:
        await store.close()
    for replica in (replicas.a, replicas.b):
        with pytest.raises(AuthorizationError) as refused:
            await authorize_in(browser, replicas, replica, client_id, redirect_uri, prompt="none")
        assert refused.value.error == "login_required"


async def test_a_sign_in_session_in_use_ends_at_its_absolute_limit(replicas: Replicas) -> None:
    redirect_uri = loopback_redirect_uri()
    browser = Browser()
    async with httpx2.AsyncClient(timeout=10) as http:
        client_id = await register(http, replicas.a, redirect_uri)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await authorize_in(browser, replicas, replicas.a, client_id, redirect_uri)
    signed_in_browser_cookie(browser)
    uses = 0
    deadline = started + 10 * SIGN_IN_LIFETIME
    while True:  # used well within its idle timeout, alternately through B and A
        replica = (replicas.b, replicas.a)[uses % 2]
        try:
            await authorize_in(browser, replicas, replica, client_id, redirect_uri, prompt="none")
        except AuthorizationError as refused:
            ended = refused.error
            break
        uses += 1
        assert loop.time() < deadline, "the session outlived its absolute limit"
        await asyncio.sleep(0.3)
    assert ended == "login_required"
    assert uses >= 2
    # It ended at its limit, not before (the cookie's Max-Age, also the limit, is counted by
    # the cookie jar from a whole second: up to one second early).
    assert loop.time() - started >= SIGN_IN_LIFETIME - 1
