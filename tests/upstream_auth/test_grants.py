"""`GrantStore`: users' provider grants sealed in the store, per route and user, on both
backends; on Redis the raw bytes are read back to show that no token is stored in the clear."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from gateway.auth.principal import Principal
from gateway.errors import CredentialUnavailableError
from gateway.store.kv import KeyValueStore
from gateway.store.memory import MemoryKV
from gateway.store.redis import RedisKV
from gateway.upstream_auth.grants import (
    GrantStore,
    GrantUnreadableError,
    ProviderGrant,
    user_key,
)
from gateway.upstream_auth.sealing import GrantSealer, UnknownSealKeyError
from tests.conftest import gateway_log
from tests.support.redis import RedisServer
from tests.support.secrets import remember
from tests.upstream_auth.conftest import new_key

ROUTE = "github"
USER = "u-1"


def a_grant(tag: str = "1") -> ProviderGrant:
    return ProviderGrant(
        access_token=remember(f"gho_access_{tag}_{uuid.uuid4().hex}"),
        refresh_token=remember(f"ghr_refresh_{tag}_{uuid.uuid4().hex}"),
        expires_at=2_000_000_000.0,
        scope="repo",
    )


@dataclass
class Backend:
    store: KeyValueStore
    raw: Redis | None
    prefix: str

    async def raw_record(self, key: str) -> bytes | None:
        """The bytes as the backend holds them (on Redis: read with a client of its own)."""
        if self.raw is None:
            return await self.store.get(key)
        value = await self.raw.get(self.prefix + key)
        return value.encode() if isinstance(value, str) else value

    async def write_raw(self, key: str, value: bytes) -> None:
        if self.raw is None:
            await self.store.set(key, value, 3600)
        else:
            await self.raw.set(self.prefix + key, value)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        memory = MemoryKV()
        yield Backend(memory, None, "")
        await memory.close()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"test-{uuid.uuid4().hex}:"
    store = RedisKV(server.url, prefix=prefix, timeout=5.0)
    raw = Redis.from_url(server.url)
    try:
        yield Backend(store, raw, prefix)
    finally:
        await store.close()
        await raw.aclose()


def grants_of(backend: Backend, *keys: str) -> GrantStore:
    return GrantStore(backend.store, GrantSealer.from_keys(list(keys)), ROUTE)


async def test_put_get_delete(backend: Backend) -> None:
    grants = grants_of(backend, new_key())
    grant = a_grant()
    assert await grants.get(USER) is None
    await grants.put(USER, grant)
    assert await grants.get(USER) == grant
    assert await grants.get("u-2") is None
    assert await GrantStore(backend.store, grants._sealer, "jira").get(USER) is None
    assert await grants.delete(USER) == grant
    assert await grants.get(USER) is None
    assert await grants.delete(USER) is None


async def test_the_stored_record_holds_no_token(backend: Backend) -> None:
    grants = grants_of(backend, new_key())
    grant = a_grant()
    await grants.put(USER, grant)
    raw = await backend.raw_record(grants.key(USER))
    assert raw is not None
    assert grant.refresh_token is not None
    for secret in (grant.access_token, grant.refresh_token, "gho_access", "ghr_refresh", "repo"):
        assert secret.encode() not in raw
    assert USER.encode() not in raw


async def test_another_key_cannot_read_the_grant(backend: Backend) -> None:
    grants = grants_of(backend, new_key())
    await grants.put(USER, a_grant())
    raw = await backend.raw_record(grants.key(USER))
    assert raw is not None
    with pytest.raises(UnknownSealKeyError):
        GrantSealer.from_keys([new_key()]).open(raw, b"anything")
    # Through the store: a grant sealed with a key that is not configured reads as absent
    # (the user connects again), with a warning; the record stays for replicas that have
    # the key (a rolling rotation).
    assert await grants_of(backend, new_key()).get(USER) is None
    assert '"upstream_grant_unreadable"' in gateway_log()
    assert '"unknown_key"' in gateway_log()
    assert await backend.raw_record(grants.key(USER)) == raw
    assert await grants.get(USER) is not None


async def test_an_altered_record_is_an_error_not_an_absence(backend: Backend) -> None:
    grants = grants_of(backend, new_key())
    await grants.put(USER, a_grant())
    raw = await backend.raw_record(grants.key(USER))
    assert raw is not None
    altered = raw[:-1] + bytes([raw[-1] ^ 1])
    await backend.write_raw(grants.key(USER), altered)
    with pytest.raises(GrantUnreadableError):
        await grants.get(USER)
    assert await backend.raw_record(grants.key(USER)) == altered  # kept for an operator


async def test_a_record_copied_to_another_user_does_not_open(backend: Backend) -> None:
    grants = grants_of(backend, new_key())
    await grants.put(USER, a_grant())
    raw = await backend.raw_record(grants.key(USER))
    assert raw is not None
    await backend.write_raw(grants.key("u-2"), raw)
    with pytest.raises(GrantUnreadableError):
        await grants.get("u-2")


async def test_key_rotation_opens_old_records_and_reseals_them(backend: Backend) -> None:
    old, new = new_key(), new_key()
    grant = a_grant()
    await grants_of(backend, old).put(USER, grant)
    await grants_of(backend, old).put("u-2", grant)
    rotated = grants_of(backend, new, old)
    sealer = rotated._sealer
    before = await backend.raw_record(rotated.key(USER))
    assert before is not None
    assert not sealer.is_current(before)
    # Read: opens with the old key, and is re-sealed with the new one at once.
    assert await rotated.get(USER) == grant
    after = await backend.raw_record(rotated.key(USER))
    assert after is not None
    assert sealer.is_current(after)
    assert await grants_of(backend, new).get(USER) == grant  # the old key can now go
    # Write: the next put seals with the new key.
    await rotated.put("u-2", a_grant("2"))
    written = await backend.raw_record(rotated.key("u-2"))
    assert written is not None
    assert sealer.is_current(written)


async def test_replace_grant_compares_content_not_record(backend: Backend) -> None:
    old, new = new_key(), new_key()
    grant = a_grant()
    await grants_of(backend, old).put(USER, grant)
    before = await grants_of(backend, old).get_stored(USER)
    assert before is not None
    rotated = grants_of(backend, new, old)
    assert await rotated.get(USER) == grant  # re-sealed: the record changed, the grant not
    assert await backend.raw_record(rotated.key(USER)) != before.record
    newer = a_grant("2")
    assert await grants_of(backend, old, new).replace_grant(USER, grant, newer)
    assert await rotated.get(USER) == newer
    assert not await rotated.replace_grant(USER, grant, a_grant("3"))  # not the same grant
    assert not await rotated.replace_grant(USER, grant, None)
    assert await rotated.replace_grant(USER, newer, None)
    assert await rotated.get(USER) is None
    assert not await rotated.replace_grant(USER, newer, grant)  # absent: nothing written
    assert await rotated.get(USER) is None


async def test_replace_and_remove_only_if_unchanged(backend: Backend) -> None:
    grants = grants_of(backend, new_key())
    await grants.put(USER, a_grant())
    stored = await grants.get_stored(USER)
    assert stored is not None
    newer = a_grant("2")
    assert await grants.replace(USER, stored.record, newer)
    assert not await grants.replace(USER, stored.record, a_grant("3"))
    assert await grants.get(USER) == newer
    assert not await grants.remove_if(USER, stored.record)
    current = await grants.get_stored(USER)
    assert current is not None
    assert await grants.remove_if(USER, current.record)
    assert await grants.get(USER) is None


def test_grant_bytes_round_trip_and_repr_hides_tokens() -> None:
    grant = a_grant()
    assert ProviderGrant.from_bytes(grant.to_bytes()) == grant
    assert grant.access_token not in repr(grant)
    assert str(grant.refresh_token) not in repr(grant)
    bare = ProviderGrant("at", None, None, None)
    assert ProviderGrant.from_bytes(bare.to_bytes()) == bare
    with pytest.raises(ValueError, match="not a grant"):
        ProviderGrant.from_bytes(json.dumps({"access_token": 1}).encode())


def principal(issuer: str, subject: str | None) -> Principal:
    return Principal(issuer, subject, "client", frozenset(), 0.0)


def test_user_key() -> None:
    alice = user_key(principal("https://idp.example", "alice"))
    assert alice is not None
    assert alice == user_key(principal("https://idp.example", "alice"))
    assert "alice" not in alice
    assert alice != user_key(principal("https://other.example", "alice"))
    assert alice != user_key(principal("https://idp.example", "bob"))
    # No ambiguity from concatenation.
    assert user_key(principal("https://a", "b:c")) != user_key(principal("https://a:b", "c"))
    assert user_key(principal("https://idp.example", None)) is None


def test_an_unreadable_grant_is_a_503() -> None:
    error = GrantUnreadableError()
    assert isinstance(error, CredentialUnavailableError)
    assert error.status == 503
    assert error.retry_after is not None
