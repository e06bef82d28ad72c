"""`user_oauth` across gateway replicas on one Redis, and a grant the provider no longer honours.

Two gateways share one store (and the route's keys): a user connects through one; then 50
concurrent calls through both, with the access token due for refresh, cause exactly one
refresh request at the provider (its refresh tokens rotate, so a second use would revoke the
grant) and all carry the new token. A refresh the provider answers with `invalid_grant`
deletes the grant, and the next call elicits again. A grant altered in the store fails closed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.auth.principal import Principal
from gateway.store.redis import RedisKV
from gateway.upstream_auth.grants import NAMESPACE, user_key
from tests.conftest import Gateway, StartGateway
from tests.support.connect_browser import ConnectBrowser, call_tool, elicitation_of
from tests.support.http_upstream import RecordingUpstream
from tests.support.local_issuer import LocalIssuer
from tests.support.oauth_provider import CLIENT_ID, OAuthProvider
from tests.support.processes import free_port
from tests.support.redis import RedisServer
from tests.upstream_auth.conftest import new_key

ROUTE = "/files/mcp"
CONCURRENT = 50


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
async def provider(ports: tuple[int, int]) -> AsyncIterator[OAuthProvider]:
    callback = f"http://127.0.0.1:{ports[0]}/oauth/connect/files/callback"
    # 30 s tokens against the default refresh_before of 60 s: due as soon as they are issued.
    async with OAuthProvider(redirect_uris=[callback], access_token_lifetime=30) as running:
        yield running


async def _replicas(
    start: StartGateway,
    issuer: LocalIssuer,
    provider: OAuthProvider,
    upstream: RecordingUpstream,
    redis: RedisServer | None,
    ports: tuple[int, int],
) -> list[Gateway]:
    """One config, one public URL, for each replica (only one without Redis)."""
    key = new_key()
    route = {
        "name": "files",
        "route": ROUTE,
        "url": upstream.url,
        "scopes": ["mcp:tools"],
        "upstream_auth": provider.upstream_auth(scopes=[], encryption_keys=[key]),
    }
    public_url = f"http://127.0.0.1:{ports[0]}"
    hosts = [f"127.0.0.1:{port}" for port in ports]
    store = None
    if redis is not None:
        store = {"backend": "redis", "url": redis.url, "key_prefix": f"uo-{ports[0]}:"}
    auth = {"resource_server": {"authorization_servers": [issuer.auth_server()]}}
    count = 2 if redis is not None else 1
    return [
        await start(route, port=port, public_url=public_url, server={"allowed_hosts": hosts},
                    store=store, auth=auth)
        for port in ports[:count]
    ]  # fmt: skip


def _token(issuer: LocalIssuer, gw: Gateway) -> str:
    return issuer.mint(issuer.claims(gw.config.public_base() + ROUTE))  # both replicas' resource


def _sent(upstream: RecordingUpstream) -> list[str]:
    return [
        r.headers.get("Authorization", "")
        for r in upstream.requests
        if json.loads(r.body).get("method") == "tools/call"
    ]


async def _connect(gw: Gateway, token: str) -> None:
    answer = await call_tool(gw.url(ROUTE), token)
    page = await ConnectBrowser().connect(elicitation_of(answer)["url"], user="octo-alice")
    assert "Account connected" in page.text


async def test_two_replicas_refresh_a_rotating_token_once_under_concurrent_calls(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    provider: OAuthProvider,
    upstream: RecordingUpstream,
    redis_server: RedisServer,
    ports: tuple[int, int],
) -> None:
    first, second = await _replicas(
        start_gateway_for, issuer, provider, upstream, redis_server, ports
    )
    token = _token(issuer, first)
    await _connect(first, token)
    provider.access_token_lifetime = 3600  # the refreshed token is not due again
    answers = await asyncio.gather(
        *(call_tool((first, second)[n % 2].url(ROUTE), token) for n in range(CONCURRENT))
    )
    assert all("result" in answer for answer in answers)
    assert provider.count("/token", grant_type="refresh_token") == 1
    sent = _sent(upstream)
    assert len(sent) == CONCURRENT
    assert len(set(sent)) == 1
    assert provider.owner_of(sent[0].removeprefix("Bearer ")) == "octo-alice"


async def test_a_grant_the_provider_revoked_is_deleted_and_the_user_elicited_again(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    provider: OAuthProvider,
    upstream: RecordingUpstream,
    ports: tuple[int, int],
) -> None:
    [gw] = await _replicas(start_gateway_for, issuer, provider, upstream, None, ports)
    token = _token(issuer, gw)
    await _connect(gw, token)
    refresh_token = _refresh_token_of(provider)
    await _revoke_at_provider(provider, refresh_token)
    elicitation_of(await call_tool(gw.url(ROUTE), token))  # refresh: invalid_grant
    assert provider.count("/token", grant_type="refresh_token") == 1
    assert _sent(upstream) == []
    elicitation_of(await call_tool(gw.url(ROUTE), token))  # the grant is gone: no refresh
    assert provider.count("/token", grant_type="refresh_token") == 1


def _refresh_token_of(provider: OAuthProvider) -> str:
    """The one refresh token the provider has issued (read from its own records)."""
    [refresh_token] = list(provider._families)
    return refresh_token


async def _revoke_at_provider(provider: OAuthProvider, refresh_token: str) -> None:
    """Revoke the grant at the provider itself (RFC 7009), as a user would on its site."""
    assert provider.client_secret is not None
    pair = f"{CLIENT_ID}:{provider.client_secret}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    form: dict[str, Any] = {"token": refresh_token, "token_type_hint": "refresh_token"}
    async with (
        aiohttp.ClientSession(trust_env=False) as http,
        http.post(provider.issuer + "/revoke", data=form, headers=headers) as response,
    ):
        assert response.status == 200
    assert provider.is_revoked(refresh_token)


async def test_a_stored_grant_altered_in_the_store_fails_closed(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    provider: OAuthProvider,
    upstream: RecordingUpstream,
    redis_server: RedisServer,
    ports: tuple[int, int],
) -> None:
    first, _ = await _replicas(start_gateway_for, issuer, provider, upstream, redis_server, ports)
    token = _token(issuer, first)
    await _connect(first, token)
    user = user_key(Principal(issuer.issuer, "alice", None, frozenset(), 0.0))
    assert user is not None
    store = RedisKV(redis_server.url, prefix=f"uo-{ports[0]}:")
    try:
        key = f"{NAMESPACE}:files:{user}"
        record = await store.get(key)
        assert record is not None
        altered = record[:-1] + bytes([record[-1] ^ 1])
        await store.set(key, altered, 600)
    finally:
        await store.close()
    answer = await call_tool(first.url(ROUTE), token, status=503)
    assert answer["error"]["code"] == -31057  # not an elicitation: nothing is taken as absent
    assert _sent(upstream) == []
