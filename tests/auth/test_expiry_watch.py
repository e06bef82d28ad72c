"""Streams ended when their token expires, one loop timer per expiry time
(`gateway.auth.expiry_watch`). The end-to-end case, a real stream through the gateway closed
when its token expires, is in tests/web/test_sessions.py."""

from __future__ import annotations

import asyncio
import time

from gateway.auth.expiry_watch import ExpiryWatch

BOUND = 10  # seconds: an outcome that takes longer is a failure, not a hang


class Closer:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.closed = asyncio.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.closed.set()


async def test_streams_of_one_expiry_share_a_timer_and_all_end_at_it() -> None:
    watch = ExpiryWatch()
    expires_at = time.time() + 0.2
    first, second, later = Closer(), Closer(), Closer()
    watch.watch(expires_at, first)
    watch.watch(expires_at, second)
    watch.watch(expires_at + 3600, later)
    assert watch.timers == 2
    async with asyncio.timeout(BOUND):
        await first.closed.wait()
        await second.closed.wait()
    assert first.reasons == second.reasons == ["token_expired"]
    assert later.reasons == []
    assert watch.timers == 1
    watch.unwatch(expires_at + 3600, later)
    assert watch.timers == 0


async def test_a_stream_that_ends_first_is_not_closed_and_its_timer_goes_with_the_last() -> None:
    watch = ExpiryWatch()
    expires_at = time.time() + 0.2
    ended, open_ = Closer(), Closer()
    watch.watch(expires_at, ended)
    watch.watch(expires_at, open_)
    watch.unwatch(expires_at, ended)
    assert watch.timers == 1  # still waited for by the open one
    async with asyncio.timeout(BOUND):
        await open_.closed.wait()
    assert ended.reasons == []
    watch.watch(expires_at + 3600, ended)
    watch.unwatch(expires_at + 3600, ended)
    assert watch.timers == 0  # the last one gone: no timer left behind


async def test_a_token_already_expired_ends_its_stream_at_once() -> None:
    watch = ExpiryWatch()
    closer = Closer()
    watch.watch(time.time() - 5, closer)
    async with asyncio.timeout(BOUND):
        await closer.closed.wait()
    assert closer.reasons == ["token_expired"]
    assert watch.timers == 0
