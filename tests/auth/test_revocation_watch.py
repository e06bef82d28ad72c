"""`RevocationWatch`: which streams it watches, when it checks, and what a failing store does.

The store here is an in-process set behind the same async interface the gateway's stores have
(end-to-end runs against the facade and a real Redis are in tests/security/test_streams.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.auth.principal import Principal
from gateway.auth.revocation_watch import RevocationWatch
from gateway.errors import StoreUnavailableError

ISSUER = "https://gateway.example"
WAIT = 10  # seconds: a bound on waiting for what must happen


class Store:
    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.down = False
        self.asked: list[str] = []

    async def is_revoked(self, jti: str) -> bool:
        self.asked.append(jti)
        if self.down:
            raise StoreUnavailableError("store down")
        return jti in self.revoked


def principal(jti: str | None, issuer: str = ISSUER) -> Principal:
    return Principal(issuer, "alice", "client", frozenset(), time.time() + 3600, jti)


class Stream:
    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.reasons: list[str] = []

    def close(self, reason: str) -> None:
        self.reasons.append(reason)
        self.ended.set()

    async def wait_ended(self) -> set[str]:
        async with asyncio.timeout(WAIT):
            await self.ended.wait()
        return set(self.reasons)  # a stream may be told more than once


def watch_tasks() -> int:
    current = asyncio.current_task()
    return sum(1 for task in asyncio.all_tasks() if task is not current and not task.done())


@pytest.mark.parametrize(
    "who",
    [principal("j1", issuer="https://elsewhere.example"), principal(None)],
    ids=["another-issuers-token", "token-without-jti"],
)
async def test_tokens_this_issuer_cannot_revoke_are_not_watched(who: Principal) -> None:
    store = Store()
    watch = RevocationWatch(ISSUER, store.is_revoked, interval=0.01)
    assert watch.watch(who, Stream().close) is None
    assert len(watch) == 0
    assert watch_tasks() == 0


async def test_nothing_runs_while_no_stream_is_watched() -> None:
    store = Store()
    watch = RevocationWatch(ISSUER, store.is_revoked, interval=0.01)
    watch.check_now()
    assert watch_tasks() == 0
    unwatch = watch.watch(principal("j1"), Stream().close)
    assert unwatch is not None
    assert watch_tasks() == 1  # the periodic check, while a stream is open
    async with asyncio.timeout(WAIT):
        while not store.asked:
            await asyncio.sleep(0.01)
    unwatch()
    async with asyncio.timeout(WAIT):  # the cancelled check unwinds, and nothing follows it
        while watch_tasks():
            await asyncio.sleep(0)
    assert len(watch) == 0


async def test_a_revocation_elsewhere_is_found_by_the_periodic_check() -> None:
    store = Store()
    watch = RevocationWatch(ISSUER, store.is_revoked, interval=0.01)
    revoked, kept = Stream(), Stream()
    unwatch = [
        watch.watch(principal("j1"), revoked.close),
        watch.watch(principal("j2"), kept.close),
    ]
    store.revoked.add("j1")  # written by another replica: no call to check_now here
    assert await revoked.wait_ended() == {"token_revoked"}
    assert kept.reasons == []
    for stop in unwatch:
        assert stop is not None
        stop()


async def test_a_revocation_here_is_checked_at_once_without_periodic_checks() -> None:
    store = Store()
    watch = RevocationWatch(ISSUER, store.is_revoked, interval=0)  # a store in this process
    stream = Stream()
    unwatch = watch.watch(principal("j1"), stream.close)
    assert unwatch is not None
    store.revoked.add("j1")
    watch.check_now()
    assert await stream.wait_ended() == {"token_revoked"}
    unwatch()


async def test_a_token_revoked_before_its_stream_was_watched_still_ends_it() -> None:
    store = Store()
    store.revoked.add("j1")  # revoked between the request's check and the stream's start
    watch = RevocationWatch(ISSUER, store.is_revoked, interval=0)
    stream = Stream()
    unwatch = watch.watch(principal("j1"), stream.close)
    assert await stream.wait_ended() == {"token_revoked"}
    assert unwatch is not None
    unwatch()


async def test_a_store_that_cannot_answer_ends_the_streams_fail_closed() -> None:
    store = Store()
    store.down = True
    watch = RevocationWatch(ISSUER, store.is_revoked, interval=0.01)
    stream = Stream()
    unwatch = watch.watch(principal("j1"), stream.close)
    assert await stream.wait_ended() == {"revocation_unavailable"}
    assert unwatch is not None
    unwatch()
