"""`RedisLimiter` on a real Redis: leased in-flight slots lapse when their holder stops renewing
them (a crashed replica), are kept while it renews them, and are given back at once when the
caller they were taken for has gone. Time is observed on Redis's own clock (`TIME`), never
slept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest

from gateway.config.limits import LimitRule
from gateway.policy.limits import Admitted, Caller, Limited, RouteLimits, compile_rule
from gateway.session.seal import new_key
from gateway.store.redis import RedisKV
from gateway.store.redis_limits import ADMIT_SCRIPT, SLOTS_SCRIPT, RedisLimiter
from tests.support.redis import RedisServer
from tests.support.secrets import remember

LEASE = 0.3
BOUND = 10.0
ALICE = Caller("https://id.example", "alice", None, None, None)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer(password=remember(new_key())) as server:
        yield server


@pytest.fixture
async def kv(redis: RedisServer) -> AsyncIterator[RedisKV]:
    store = RedisKV(redis.url, prefix="t:")
    yield store
    await store.close()


def limiter(kv: RedisKV, **options: float) -> RedisLimiter:
    return RedisLimiter(kv.script(ADMIT_SCRIPT), kv.script(SLOTS_SCRIPT), **options)


CAP = RouteLimits([compile_rule("files", 0, LimitRule(concurrency=1))], "refuse")


async def redis_ms(kv: RedisKV) -> float:
    seconds, micros = await kv._client.time()  # Redis's clock, which the scripts use
    return seconds * 1000 + micros / 1000


async def test_a_crashed_holders_slot_lapses_with_its_lease(kv: RedisKV) -> None:
    checks = CAP.checks([("ping", None)], ALICE)
    crashed = limiter(kv, lease=LEASE, renew_every=3600)  # never renews in this test
    other = limiter(kv)
    lost = await crashed.admit(checks, "call-1")
    assert isinstance(lost, Admitted)
    assert isinstance(await other.admit(checks, "call-2"), Limited)
    async with asyncio.timeout(BOUND):
        while not isinstance(admitted := await other.admit(checks, "call-3"), Admitted):
            await asyncio.sleep(0.05)
    for done in (admitted, lost):  # end the renewals
        assert done.release is not None
        await done.release()


async def test_a_slot_in_use_is_renewed_past_its_first_lease_then_released(kv: RedisKV) -> None:
    checks = CAP.checks([("ping", None)], ALICE)
    holder = limiter(kv, lease=LEASE)
    other = limiter(kv)
    started = await redis_ms(kv)
    held = await holder.admit(checks, "call-1")
    assert isinstance(held, Admitted)
    assert held.release is not None
    async with asyncio.timeout(BOUND):
        while await redis_ms(kv) <= started + 3 * LEASE * 1000:  # three first leases later
            await asyncio.sleep(0.05)
    assert isinstance(await other.admit(checks, "call-2"), Limited)  # still held: renewed
    await held.release()
    after = await other.admit(checks, "call-3")
    assert isinstance(after, Admitted)
    assert after.release is not None
    await after.release()


async def test_a_caller_gone_while_its_admission_ran_gives_its_slot_back(kv: RedisKV) -> None:
    """The client leaves (its request task is cancelled) after Redis has run the admission
    script but before the answer arrives: the slot taken for nobody is given back at once,
    not held for its 60 s lease. The real script runs; only its answer is held back."""
    checks = CAP.checks([("ping", None)], ALICE)
    ran, answer_back = asyncio.Event(), asyncio.Event()
    script = kv.script(ADMIT_SCRIPT)
    assert script is not None

    async def slow_answer(keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        answer = await script(keys, args)
        ran.set()
        await answer_back.wait()
        return answer

    gone = RedisLimiter(slow_answer, kv.script(SLOTS_SCRIPT))
    other = limiter(kv)
    caller = asyncio.create_task(gone.admit(checks, "call-1"))
    async with asyncio.timeout(BOUND):
        await ran.wait()
    assert isinstance(await other.admit(checks, "call-2"), Limited)  # the slot was taken
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    answer_back.set()
    async with asyncio.timeout(BOUND):
        while not isinstance(admitted := await other.admit(checks, "call-3"), Admitted):
            await asyncio.sleep(0.05)
    assert admitted.release is not None
    await admitted.release()
