"""The `KeyValueStore` contract, run on both backends: `MemoryKV` and `RedisKV` on a real Redis.

The same assertions hold for one process and for replicas sharing Redis; the concurrency tests
are the single-use guarantees (one taker, one compare-and-set winner) that replicas rely on.
Expiry is observed, never timed: the memory store runs on a fake clock, and on Redis a test
waits (a bounded poll) until the key is gone. Then the Redis-only part: a stopped or paused
server is `StoreUnavailableError` (without the password in it), and the same `RedisKV` works
again once the server is back.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from gateway.errors import StoreUnavailableError
from gateway.store.kv import KeyValueStore
from gateway.store.memory import MemoryKV
from gateway.store.redis import RedisKV
from tests.support.redis import RedisServer
from tests.support.secrets import remember

CROWD = 50
"""Concurrent callers in the race tests."""

POLL = 0.05
POLL_LIMIT = 400
"""Polls (of `POLL` seconds) before a Redis key that should expire is declared immortal."""

LONG_TTL = 3600.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """One backend under test, and how to let time pass on it."""

    name: str
    store: KeyValueStore
    short_ttl: float
    peer: KeyValueStore
    """A second handle on the same state: another replica's `RedisKV` (the same `MemoryKV`)."""
    clock: FakeClock | None = None

    async def wait_absent(self, key: str) -> bool:
        """Let time pass until `key` reads as absent; False if it never does (bounded)."""
        if self.clock is not None:
            self.clock.now += self.short_ttl
            return await self.store.get(key) is None
        for _ in range(POLL_LIMIT):
            if await self.store.get(key) is None:
                return True
            await asyncio.sleep(POLL)
        return False


def _password() -> str:
    # Characters that need percent-encoding in a URL, so the quoting is exercised too.
    return remember(f"p@ss/{secrets.token_urlsafe(16)}")


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex}:"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password=_password()) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryKV(clock=clock)
        yield Harness("memory", memory, short_ttl=10.0, peer=memory, clock=clock)
        await memory.close()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = _prefix()
    # Two pools on one server: two replicas. A small pool, so the crowd also queues for it.
    store = RedisKV(server.url, prefix=prefix, timeout=5.0, max_connections=8)
    peer = RedisKV(server.url, prefix=prefix, timeout=5.0, max_connections=8)
    try:
        yield Harness("redis", store, short_ttl=0.2, peer=peer)
    finally:
        await store.close()
        await peer.close()


# -- get / set / delete / expiry -----------------------------------------------------------


async def test_get_of_absent_key_is_none(kv: Harness) -> None:
    assert await kv.store.get("codes:missing") is None


async def test_set_then_get_from_either_replica(kv: Harness) -> None:
    await kv.store.set("codes:a", b"\x00value\xff", LONG_TTL)
    assert await kv.store.get("codes:a") == b"\x00value\xff"
    assert await kv.peer.get("codes:a") == b"\x00value\xff"


async def test_set_replaces(kv: Harness) -> None:
    await kv.store.set("codes:a", b"one", LONG_TTL)
    await kv.store.set("codes:a", b"two", LONG_TTL)
    assert await kv.store.get("codes:a") == b"two"


async def test_set_expires(kv: Harness) -> None:
    await kv.store.set("codes:short", b"v", kv.short_ttl)
    await kv.store.set("codes:long", b"v", LONG_TTL)
    assert await kv.wait_absent("codes:short")
    assert await kv.store.get("codes:long") == b"v"
    assert await kv.store.take("codes:short") is None


async def test_delete(kv: Harness) -> None:
    await kv.store.set("codes:a", b"v", LONG_TTL)
    await kv.store.delete("codes:a")
    assert await kv.store.get("codes:a") is None
    await kv.store.delete("codes:a")  # absent: no error


async def test_keys_are_distinct(kv: Harness) -> None:
    await kv.store.set("codes:a", b"1", LONG_TTL)
    await kv.store.set("tokens:a", b"2", LONG_TTL)
    assert await kv.store.get("codes:a") == b"1"
    assert await kv.store.get("tokens:a") == b"2"


# -- take: single use ----------------------------------------------------------------------


async def test_take_is_single_use(kv: Harness) -> None:
    await kv.store.set("codes:a", b"v", LONG_TTL)
    assert await kv.store.take("codes:a") == b"v"
    assert await kv.store.take("codes:a") is None
    assert await kv.peer.take("codes:a") is None
    assert await kv.store.get("codes:a") is None


async def test_concurrent_takes_have_one_winner(kv: Harness) -> None:
    await kv.store.set("codes:race", b"the-code", LONG_TTL)
    takers = [kv.store if i % 2 else kv.peer for i in range(CROWD)]
    results = await asyncio.gather(*(taker.take("codes:race") for taker in takers))
    assert results.count(b"the-code") == 1
    assert results.count(None) == CROWD - 1


# -- compare_and_set -----------------------------------------------------------------------


async def test_compare_and_set_needs_the_expected_value(kv: Harness) -> None:
    await kv.store.set("families:f", b"gen-1", LONG_TTL)
    assert not await kv.store.compare_and_set("families:f", b"gen-0", b"gen-2", LONG_TTL)
    assert await kv.store.get("families:f") == b"gen-1"
    assert await kv.store.compare_and_set("families:f", b"gen-1", b"gen-2", LONG_TTL)
    assert await kv.store.get("families:f") == b"gen-2"


async def test_compare_and_set_with_a_value_fails_when_absent(kv: Harness) -> None:
    assert not await kv.store.compare_and_set("families:f", b"gen-1", b"gen-2", LONG_TTL)
    assert await kv.store.get("families:f") is None


async def test_compare_and_set_with_none_only_when_absent(kv: Harness) -> None:
    assert await kv.store.compare_and_set("families:f", None, b"first", LONG_TTL)
    assert not await kv.store.compare_and_set("families:f", None, b"second", LONG_TTL)
    assert await kv.store.get("families:f") == b"first"


async def test_compare_and_set_writes_with_the_ttl(kv: Harness) -> None:
    assert await kv.store.compare_and_set("families:f", None, b"v1", kv.short_ttl)
    assert await kv.wait_absent("families:f")
    assert await kv.store.compare_and_set("families:f", None, b"v2", LONG_TTL)
    await kv.store.set("families:g", b"v1", LONG_TTL)
    assert await kv.store.compare_and_set("families:g", b"v1", b"v2", kv.short_ttl)
    assert await kv.wait_absent("families:g")


async def test_concurrent_compare_and_sets_have_one_winner(kv: Harness) -> None:
    await kv.store.set("families:race", b"gen-1", LONG_TTL)
    stores = [kv.store if i % 2 else kv.peer for i in range(CROWD)]
    results = await asyncio.gather(
        *(
            store.compare_and_set("families:race", b"gen-1", f"gen-2/{i}".encode(), LONG_TTL)
            for i, store in enumerate(stores)
        )
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert await kv.store.get("families:race") == f"gen-2/{winner}".encode()


async def test_concurrent_creates_have_one_winner(kv: Harness) -> None:
    stores = [kv.store if i % 2 else kv.peer for i in range(CROWD)]
    results = await asyncio.gather(
        *(
            store.compare_and_set("families:new", None, f"owner-{i}".encode(), LONG_TTL)
            for i, store in enumerate(stores)
        )
    )
    assert results.count(True) == 1
    assert await kv.store.get("families:new") == f"owner-{results.index(True)}".encode()


# -- increment: fixed-window counters ------------------------------------------------------


async def test_increment_counts_from_one(kv: Harness) -> None:
    assert [await kv.store.increment("rate:ip", LONG_TTL) for _ in range(3)] == [1, 2, 3]
    assert await kv.peer.increment("rate:ip", LONG_TTL) == 4
    assert await kv.store.increment("rate:other", LONG_TTL) == 1


async def test_increment_window_is_fixed_by_the_first_call(kv: Harness) -> None:
    # The window starts with the first increment; later ones (even with a longer TTL) do not
    # move it, so the counter still expires and starts again at 1.
    assert await kv.store.increment("rate:ip", kv.short_ttl) == 1
    assert await kv.store.increment("rate:ip", LONG_TTL) == 2
    assert await kv.store.increment("rate:ip", LONG_TTL) == 3
    assert await kv.wait_absent("rate:ip")
    assert await kv.store.increment("rate:ip", LONG_TTL) == 1


async def test_concurrent_increments_are_all_counted(kv: Harness) -> None:
    stores = [kv.store if i % 2 else kv.peer for i in range(CROWD)]
    results = await asyncio.gather(*(store.increment("rate:ip", LONG_TTL) for store in stores))
    assert sorted(results) == list(range(1, CROWD + 1))


async def test_ping(kv: Harness) -> None:
    await kv.store.ping()


# -- memory: exact expiry on the fake clock ------------------------------------------------


async def test_memory_expires_exactly_at_the_ttl() -> None:
    clock = FakeClock()
    store = MemoryKV(clock=clock)
    await store.set("codes:a", b"v", 10.0)
    assert await store.increment("rate:a", 10.0) == 1
    clock.now += 9.5
    assert await store.get("codes:a") == b"v"
    assert await store.increment("rate:a", 10.0) == 2
    clock.now += 0.5
    assert await store.get("codes:a") is None
    assert await store.increment("rate:a", 10.0) == 1


# -- Redis only: failing closed and recovering ---------------------------------------------


async def _every_operation_fails(store: RedisKV, secret_texts: list[str]) -> None:
    """Each operation raises `StoreUnavailableError`, and no error text holds a secret."""
    calls: list[Any] = [
        store.get("codes:a"),
        store.set("codes:a", b"v", LONG_TTL),
        store.take("codes:a"),
        store.compare_and_set("codes:a", None, b"v", LONG_TTL),
        store.compare_and_set("codes:a", b"v", b"w", LONG_TTL),
        store.delete("codes:a"),
        store.increment("rate:a", LONG_TTL),
        store.ping(),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailableError) as caught:
            await call
        error = caught.value
        assert error.status == 503
        texts = [str(error), repr(error), error.detail, repr(store)]
        for secret in secret_texts:
            assert not any(secret in text for text in texts), error.detail


async def _every_operation_works(store: RedisKV) -> None:
    await store.ping()
    await store.set("codes:a", b"v", LONG_TTL)
    assert await store.get("codes:a") == b"v"
    assert await store.compare_and_set("codes:a", b"v", b"w", LONG_TTL)
    assert await store.take("codes:a") == b"w"
    assert await store.compare_and_set("codes:a", None, b"x", LONG_TTL)
    await store.delete("codes:a")
    assert await store.get("codes:a") is None
    assert await store.increment("rate:a", LONG_TTL) >= 1


async def test_redis_down_fails_closed_and_recovers() -> None:
    password = _password()
    with RedisServer(password=password) as server:
        store = RedisKV(server.url, prefix=_prefix(), timeout=2.0, max_connections=4)
        try:
            await _every_operation_works(store)
            # Several pooled connections, all of which go stale with the outage.
            await asyncio.gather(*(store.increment("rate:warm", LONG_TTL) for _ in range(8)))
            await store.set("codes:kept", b"v", LONG_TTL)

            server.stop()
            await _every_operation_fails(store, [password, quote(password, safe="")])

            server.start()  # same port, empty (no persistence), scripts not loaded
            await _every_operation_works(store)
            results = await asyncio.gather(*(store.increment("rate:b", LONG_TTL) for _ in range(8)))
            assert sorted(results) == list(range(1, 9))
            assert await store.get("codes:kept") is None  # the restarted server is empty
        finally:
            await store.close()


async def test_redis_paused_times_out_and_recovers() -> None:
    # A server that accepts but does not answer: a timeout, not a hang or an "absent".
    with RedisServer() as server:
        store = RedisKV(server.url, prefix=_prefix(), timeout=0.3, max_connections=2)
        try:
            await store.set("codes:a", b"v", LONG_TTL)
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailableError, match="TimeoutError"):
                    await store.get("codes:a")
                with pytest.raises(StoreUnavailableError):
                    await store.ping()
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            assert await store.get("codes:a") == b"v"
        finally:
            await store.close()


async def test_redis_wrong_password_is_unavailable(redis_server: RedisServer) -> None:
    wrong = remember(f"wrong-{secrets.token_urlsafe(12)}")
    store = RedisKV(
        f"redis://:{wrong}@127.0.0.1:{redis_server.port}/0", prefix=_prefix(), timeout=2.0
    )
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.ping()
        assert wrong not in str(caught.value)
        assert wrong not in repr(store)
    finally:
        await store.close()


async def test_redis_prefix_separates_stores(redis_server: RedisServer) -> None:
    one = RedisKV(redis_server.url, prefix=_prefix())
    two = RedisKV(redis_server.url, prefix=_prefix())
    try:
        await one.set("codes:a", b"one", LONG_TTL)
        assert await two.get("codes:a") is None
    finally:
        await one.close()
        await two.close()


def test_redis_url_must_be_redis() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisKV("http://user:secret@127.0.0.1:1/0")
