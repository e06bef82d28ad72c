"""`GrantKeeper`: a route's users' grants, used while fresh, refreshed exactly once when due
(in one process and across replicas sharing a real Redis), deleted when the provider answers
`invalid_grant`, kept when the provider is down, revoked and deleted on disconnect."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest

from gateway.auth.authenticator import HttpSessionHolder
from gateway.config.upstream_auth import UserOAuth
from gateway.store.kv import KeyValueStore
from gateway.store.memory import MemoryKV
from gateway.store.redis import RedisKV
from gateway.upstream_auth.grants import GrantStore, ProviderGrant
from gateway.upstream_auth.keeper import LOCK_NAMESPACE, GrantKeeper
from gateway.upstream_auth.provider import (
    ProviderUnavailableError,
    ThirdPartyProvider,
    parse_token_answer,
)
from gateway.upstream_auth.sealing import GrantSealer
from tests.conftest import gateway_log
from tests.support.oauth_provider import OAuthProvider
from tests.support.redis import RedisServer
from tests.upstream_auth.conftest import CALLBACK, new_key

ROUTE = "github"
USER = "user-1"
WAIT = 20.0
"""Seconds any wait in these tests may take before it fails."""


@dataclass
class Replica:
    keeper: GrantKeeper
    grants: GrantStore
    counts: Counter[str] = field(default_factory=Counter)


def replica(
    provider: OAuthProvider,
    http: HttpSessionHolder,
    store: KeyValueStore,
    settings: UserOAuth,
    *,
    clock: Callable[[], float] = time.time,
) -> Replica:
    sealer = GrantSealer.from_keys([key.get_secret_value() for key in settings.encryption_keys])
    grants = GrantStore(store, sealer, ROUTE)
    oauth = ThirdPartyProvider(settings, CALLBACK, http)
    counts: Counter[str] = Counter()
    keeper = GrantKeeper(
        oauth, grants, store, settings, lambda outcome: counts.update([outcome]),
        upstream=ROUTE, clock=clock,
    )  # fmt: skip
    return Replica(keeper, grants, counts)


def grant_for(provider: OAuthProvider, user: str, *, expires_in: float) -> ProviderGrant:
    """A real grant of the provider's for `user`, expiring `expires_in` seconds from now."""
    answer = provider.issue_grant(user)
    grant = parse_token_answer(answer, now=time.time())
    return dataclasses.replace(grant, expires_at=time.time() + expires_in)


@pytest.fixture
async def memory() -> AsyncIterator[MemoryKV]:
    store = MemoryKV()
    yield store
    await store.close()


@pytest.fixture
def settings(provider: OAuthProvider) -> UserOAuth:
    return provider.user_oauth(encryption_keys=[new_key()], refresh_before=60, fetch_timeout=5)


async def test_a_fresh_grant_is_used_without_asking_the_provider(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    one = replica(provider, http, memory, settings)
    grant = grant_for(provider, "alice", expires_in=3600)
    await one.keeper.connect(USER, grant)
    assert await one.keeper.current(USER) == grant
    assert await one.keeper.current("someone-else") is None
    assert provider.count("/token") == 0
    assert one.counts == Counter(connected=1, issued=1)


async def test_a_due_grant_is_refreshed_once_then_used(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    one = replica(provider, http, memory, settings)
    old = grant_for(provider, "alice", expires_in=30)  # within refresh_before
    await one.keeper.connect(USER, old)
    fresh = await one.keeper.current(USER)
    assert fresh is not None
    assert fresh.access_token != old.access_token
    assert fresh.refresh_token not in (None, old.refresh_token)
    assert provider.owner_of(fresh.access_token) == "alice"
    assert await one.grants.get(USER) == fresh
    assert await one.keeper.current(USER) == fresh
    assert provider.count("/token", grant_type="refresh_token") == 1
    assert one.counts == Counter(connected=1, issued=2, refreshed=1)
    assert '"upstream_grant_refreshed"' in gateway_log()


async def test_a_token_living_shorter_than_refresh_before_is_reported(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    provider.access_token_lifetime = 40  # refresh_before is 60: due as soon as issued
    one = replica(provider, http, memory, settings)
    await one.keeper.connect(USER, grant_for(provider, "alice", expires_in=10))
    assert await one.keeper.current(USER) is not None
    assert '"upstream_grant_lifetime_below_refresh_before"' in gateway_log()


async def test_concurrent_calls_in_one_process_share_one_refresh(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    one = replica(provider, http, memory, settings)
    await one.keeper.connect(USER, grant_for(provider, "alice", expires_in=30))
    results = await asyncio.gather(*(one.keeper.current(USER) for _ in range(50)))
    assert provider.count("/token", grant_type="refresh_token") == 1
    assert len({grant.access_token for grant in results if grant is not None}) == 1
    assert all(grant is not None and provider.owner_of(grant.access_token) for grant in results)


class WatchedKV:
    """A real store, watched: counts lock reads and lock-taking attempts (observing only)."""

    def __init__(self, inner: KeyValueStore, lock_read: asyncio.Event) -> None:
        self.inner = inner
        self.lock_read = lock_read
        self.lock_attempts = 0

    async def get(self, key: str) -> bytes | None:
        value = await self.inner.get(key)
        if key.startswith(LOCK_NAMESPACE + ":") and value is not None:
            self.lock_read.set()
        return value

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        if key.startswith(LOCK_NAMESPACE + ":") and expected is None:
            self.lock_attempts += 1
        return await self.inner.compare_and_set(key, expected, value, ttl)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.inner.set(key, value, ttl)

    async def take(self, key: str) -> bytes | None:
        return await self.inner.take(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def increment(self, key: str, ttl: float) -> int:
        return await self.inner.increment(key, ttl)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Replicas:
    a: Replica
    b: Replica
    watched: list[WatchedKV]
    lock_read: asyncio.Event

    def calls(self, per_replica: int) -> list[asyncio.Future[ProviderGrant | None]]:
        """`current(USER)` on both replicas, interleaved, all running at once."""
        keepers = (self.a.keeper, self.b.keeper)
        return [asyncio.ensure_future(k.current(USER)) for _ in range(per_replica) for k in keepers]

    def count(self, outcome: str) -> int:
        return self.a.counts[outcome] + self.b.counts[outcome]


@asynccontextmanager
async def two_replicas(
    provider: OAuthProvider, settings: UserOAuth, redis_server: RedisServer
) -> AsyncIterator[Replicas]:
    """Two replicas on one Redis: each its own connection pool, HTTP session and provider
    client; their stores watched for lock reads and lock-taking attempts."""
    prefix = f"test-{uuid.uuid4().hex}:"
    lock_read = asyncio.Event()
    stores = [RedisKV(redis_server.url, prefix=prefix, timeout=5.0) for _ in range(2)]
    watched = [WatchedKV(store, lock_read) for store in stores]
    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        holders = [HttpSessionHolder(), HttpSessionHolder()]
        holders[0].session, holders[1].session = first, second
        try:
            a, b = (replica(provider, holder, store, settings)
                    for holder, store in zip(holders, watched, strict=True))  # fmt: skip
            yield Replicas(a, b, watched, lock_read)
        finally:
            for store in stores:
                await store.close()


async def race_a_held_refresh(
    provider: OAuthProvider, replicas: Replicas
) -> list[ProviderGrant | None]:
    """50 `current` calls, 25 per replica, the refresh held at the provider until it has
    arrived and the other replica is waiting on the lock."""
    provider.hold_refresh = asyncio.Event()
    calls = replicas.calls(25)
    await asyncio.wait_for(provider.refresh_arrived.wait(), WAIT)
    await asyncio.wait_for(replicas.lock_read.wait(), WAIT)
    provider.hold_refresh.set()
    return await asyncio.wait_for(asyncio.gather(*calls), WAIT)


async def test_two_replicas_on_one_redis_refresh_a_rotating_token_exactly_once(
    provider: OAuthProvider, settings: UserOAuth, redis_server: RedisServer
) -> None:
    async with two_replicas(provider, settings, redis_server) as replicas:
        old = grant_for(provider, "alice", expires_in=30)
        await replicas.a.keeper.connect(USER, old)
        results = await race_a_held_refresh(provider, replicas)
        stored = await replicas.b.grants.get(USER)
    assert provider.count("/token", grant_type="refresh_token") == 1
    assert provider.count("/token", refresh_token=str(old.refresh_token)) == 1
    new_tokens = {grant.access_token for grant in results if grant is not None}
    assert len(results) == 50
    assert len(new_tokens) == 1
    assert None not in results
    (new_token,) = new_tokens
    assert new_token != old.access_token
    assert provider.owner_of(new_token) == "alice"  # the family was not revoked by a reuse
    assert [store.lock_attempts for store in replicas.watched] == [1, 1]  # a flight per replica
    assert replicas.count("refreshed") == 1
    assert replicas.count("issued") == 50
    assert stored is not None
    assert stored.access_token == new_token


async def test_two_replicas_share_an_invalid_grant(
    provider: OAuthProvider, http: HttpSessionHolder, settings: UserOAuth,
    redis_server: RedisServer,
) -> None:  # fmt: skip
    async with two_replicas(provider, settings, redis_server) as replicas:
        old = grant_for(provider, "alice", expires_in=30)
        await replicas.a.keeper.connect(USER, old)
        await ThirdPartyProvider(settings, CALLBACK, http).revoke(old)  # revoked elsewhere
        results = await race_a_held_refresh(provider, replicas)
        stored = await replicas.b.grants.get(USER)
    assert results == [None] * 50
    assert stored is None
    assert provider.count("/token", grant_type="refresh_token") == 1
    assert replicas.count("failed") == 1
    assert replicas.count("issued") == 0


async def test_two_replicas_when_the_refresh_fails_keep_the_still_valid_grant(
    provider: OAuthProvider, settings: UserOAuth, redis_server: RedisServer
) -> None:
    provider.refresh_failure = (503, "temporarily_unavailable")
    async with two_replicas(provider, settings, redis_server) as replicas:
        old = grant_for(provider, "alice", expires_in=30)
        await replicas.a.keeper.connect(USER, old)
        results = await race_a_held_refresh(provider, replicas)
        stored = await replicas.b.grants.get(USER)
    assert results == [old] * 50  # still valid for 30 s: used while the provider is failing
    assert stored == old
    assert provider.count("/token", grant_type="refresh_token") == 1
    assert replicas.count("refreshed") == 0


async def test_invalid_grant_deletes_the_grant(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    one = replica(provider, http, memory, settings)
    grant = grant_for(provider, "alice", expires_in=30)
    await one.keeper.connect(USER, grant)
    assert grant.refresh_token is not None
    await ThirdPartyProvider(settings, CALLBACK, http).revoke(grant)  # revoked elsewhere
    assert await one.keeper.current(USER) is None
    assert await one.grants.get(USER) is None
    assert provider.count("/token", grant_type="refresh_token") == 1
    assert one.counts == Counter(connected=1, failed=1)


async def test_a_grant_without_refresh_token_is_used_until_it_expires(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    one = replica(provider, http, memory, settings)
    due = dataclasses.replace(grant_for(provider, "alice", expires_in=30), refresh_token=None)
    await one.keeper.connect(USER, due)
    assert await one.keeper.current(USER) == due
    expired = dataclasses.replace(due, expires_at=time.time() - 1)
    await one.keeper.connect(USER, expired)
    assert await one.keeper.current(USER) is None
    assert await one.grants.get(USER) is None
    assert provider.count("/token") == 0
    assert one.counts == Counter(connected=2, issued=1)


async def test_provider_down_keeps_the_grant_and_fails_closed(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    one = replica(provider, http, memory, settings)
    expired = grant_for(provider, "alice", expires_in=-1)
    await one.keeper.connect(USER, expired)
    await provider.stop()
    with pytest.raises(ProviderUnavailableError):
        await one.keeper.current(USER)
    assert await one.grants.get(USER) == expired
    await provider.start()
    fresh = await one.keeper.current(USER)
    assert fresh is not None
    assert provider.owner_of(fresh.access_token) == "alice"


async def test_provider_down_while_the_token_is_still_valid_uses_it(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    one = replica(provider, http, memory, settings)
    due = grant_for(provider, "alice", expires_in=30)
    await one.keeper.connect(USER, due)
    await provider.stop()
    assert await one.keeper.current(USER) == due
    assert await one.grants.get(USER) == due
    assert '"upstream_grant_refresh_deferred"' in gateway_log()


async def test_disconnect_revokes_at_the_provider_and_deletes(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    one = replica(provider, http, memory, settings)
    grant = grant_for(provider, "alice", expires_in=3600)
    await one.keeper.connect(USER, grant)
    assert await one.keeper.disconnect(USER) is True
    assert grant.refresh_token is not None
    assert provider.count("/revoke", token=grant.refresh_token) == 1
    assert provider.is_revoked(grant.refresh_token)
    assert provider.owner_of(grant.access_token) is None
    assert await one.keeper.current(USER) is None
    assert await one.keeper.disconnect(USER) is False
    assert one.counts == Counter(connected=1, disconnected=1)


async def test_disconnect_without_revocation_support_still_deletes(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    provider.metadata_overrides["revocation_endpoint"] = None
    one = replica(provider, http, memory, settings)
    await one.keeper.connect(USER, grant_for(provider, "alice", expires_in=3600))
    assert await one.keeper.disconnect(USER) is True
    assert await one.grants.get(USER) is None
    assert provider.count("/revoke") == 0


async def test_a_refresh_finishing_after_disconnect_does_not_bring_the_grant_back(
    provider: OAuthProvider, http: HttpSessionHolder, memory: MemoryKV, settings: UserOAuth
) -> None:
    provider.metadata_overrides["revocation_endpoint"] = None  # so the refresh succeeds
    one = replica(provider, http, memory, settings)
    await one.keeper.connect(USER, grant_for(provider, "alice", expires_in=30))
    provider.hold_refresh = asyncio.Event()
    call = asyncio.ensure_future(one.keeper.current(USER))
    await asyncio.wait_for(provider.refresh_arrived.wait(), WAIT)
    assert await one.keeper.disconnect(USER) is True
    provider.hold_refresh.set()
    assert await asyncio.wait_for(call, WAIT) is None
    assert await one.grants.get(USER) is None
    assert provider.count("/token", grant_type="refresh_token") == 1
