"""`Limiter` on Redis: limits shared by every replica, one atomic round trip per check.

Admission is one Lua script over every counter the request counts against, so it is all or
nothing however many replicas race, and the clock is Redis's own (`TIME`), so replicas whose
clocks differ still share one bucket fairly:

- a token bucket is a hash {t: tokens, at: milliseconds}, refilled on read and expiring once it
  would be full again (an idle caller costs nothing);
- a concurrency cap is a sorted set of in-flight call ids scored by when their lease ends.
  Entries past their lease are dropped before counting, so a replica that crashed mid-call
  frees its slots within `LEASE` seconds instead of holding them forever (INCR/DECR with a
  safety TTL would instead reset every in-flight count of the key at once, or leak forever
  without one). A call that lasts longer renews its lease every `LEASE / 3` seconds.

A Redis failure raises `StoreUnavailableError`; what to do then is `SharedLimiter`'s
(`gateway.store.shared_limits`). A release that fails leaves the slot to lapse with its lease. A
caller cancelled while its admission runs (its client gone) does not wait for the slots that
script takes to lapse: they are released as soon as its answer arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from gateway.errors import StoreUnavailableError
from gateway.observability.logging import get_logger
from gateway.policy.limits import Admission, Admitted, Check, Limited, LimitKind, seconds_until
from gateway.store.kv import Script

log = get_logger("gateway.limits")

LEASE: Final = 60.0
"""Seconds an in-flight call holds its slot without renewal (a crashed replica's slots lapse)."""

# KEYS: counters. ARGV[1] the call id, ARGV[2] the lease in ms; then four per key: kind ('r':
# bucket, 'c': cap), cost, then tokens per ms and burst ('r') or the cap and 0 ('c').
# Returns {1} admitted, or {0, index of the key over its limit, milliseconds to wait}.
ADMIT_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local tokens = {}
for i = 1, #KEYS do
  local at = 2 + (i - 1) * 4
  local kind, cost = ARGV[at + 1], tonumber(ARGV[at + 2])
  local a, b = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  if kind == 'r' then
    local saved = redis.call('HMGET', KEYS[i], 't', 'at')
    local left = tonumber(saved[1]) or b
    local since = tonumber(saved[2]) or now
    if now > since then left = math.min(b, left + (now - since) * a) end
    if left < cost then return {0, i, math.ceil((cost - left) / a)} end
    tokens[i] = left
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    if redis.call('ZCARD', KEYS[i]) + cost > a then return {0, i, 1000} end
  end
end
for i = 1, #KEYS do
  local at = 2 + (i - 1) * 4
  local kind, cost = ARGV[at + 1], tonumber(ARGV[at + 2])
  local a, b = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  if kind == 'r' then
    redis.call('HSET', KEYS[i], 't', tostring(tokens[i] - cost), 'at', now)
    redis.call('PEXPIRE', KEYS[i], math.ceil(b / a) + 1000)
  else
    for j = 1, cost do redis.call('ZADD', KEYS[i], now + lease, ARGV[1] .. ':' .. j) end
    redis.call('PEXPIRE', KEYS[i], lease + 1000)
  end
end
return {1}
"""

# KEYS: the caps a call holds slots in. ARGV[1] the call id, ARGV[2] 'release' or the lease in
# ms to renew it by; ARGV[2 + i] the slots it holds in KEYS[i].
SLOTS_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  for j = 1, tonumber(ARGV[2 + i]) do
    local member = ARGV[1] .. ':' .. j
    if ARGV[2] == 'release' then
      redis.call('ZREM', KEYS[i], member)
    else
      redis.call('ZADD', KEYS[i], 'XX', now + tonumber(ARGV[2]), member)
      redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2]) + 1000)
    end
  end
end
return 1
"""


class RedisLimiter:
    def __init__(
        self,
        admit: Script,
        slots: Script,
        *,
        lease: float = LEASE,
        renew_every: float | None = None,
    ) -> None:
        """`admit` and `slots`: this module's scripts on the store (`ObservedKV.script`);
        `renew_every`: seconds between lease renewals of a call in flight (`lease / 3`)."""
        self._admit = admit
        self._slots = slots
        self._lease_ms = int(lease * 1000)
        self._renew_every = renew_every if renew_every is not None else lease / 3
        self._background: set[asyncio.Task[None]] = set()
        """Lease renewals, and releases of slots taken for callers that had gone."""

    async def admit(self, checks: Sequence[Check], call_id: str) -> Admission:
        keys: list[str] = []
        args: list[str | int | float] = [call_id, self._lease_ms]
        entries: list[tuple[Check, LimitKind]] = []
        for check in checks:
            bucket, cap = check.rule.bucket, check.rule.concurrency
            if bucket is not None:
                keys.append(check.key + ":rate")
                args += ["r", check.cost, repr(bucket.per_second / 1000), bucket.burst]
                entries.append((check, "rate"))
            if cap is not None:
                keys.append(check.key + ":flight")
                args += ["c", check.cost, cap, 0]
                entries.append((check, "concurrency"))
        # Once sent, the script's answer is waited for even if the caller is cancelled (its
        # client gone): slots it took for nobody are given back at once, not left to lapse.
        script = asyncio.ensure_future(self._admit(keys, args))
        try:
            answer = await asyncio.shield(script)
        except asyncio.CancelledError:
            script.add_done_callback(functools.partial(self._abandoned, call_id, keys, entries))
            raise
        if int(answer[0]) == 0:
            check, kind = entries[int(answer[1]) - 1]
            return Limited(check.rule, kind, seconds_until(int(answer[2]) / 1000, 1.0))
        held = _held(keys, entries)
        if not held:
            return Admitted()
        return Admitted(self._holding(call_id, held))

    def _abandoned(
        self,
        call_id: str,
        keys: list[str],
        entries: list[tuple[Check, LimitKind]],
        script: asyncio.Future[list[Any]],
    ) -> None:
        """The admission of a caller that has gone: release whatever slots it took."""
        if script.cancelled() or script.exception() is not None or int(script.result()[0]) == 0:
            return
        held = _held(keys, entries)
        if held:
            release = asyncio.get_running_loop().create_task(self._release(call_id, held))
            self._background.add(release)
            release.add_done_callback(self._background.discard)

    def _holding(self, call_id: str, held: list[tuple[str, int]]) -> Callable[[], Awaitable[None]]:
        keys = [key for key, _ in held]
        costs = [cost for _, cost in held]
        renewal = asyncio.get_running_loop().create_task(self._renew(call_id, keys, costs))
        self._background.add(renewal)
        renewal.add_done_callback(self._background.discard)

        async def release() -> None:
            renewal.cancel()
            await self._release(call_id, held)

        return release

    async def _release(self, call_id: str, held: list[tuple[str, int]]) -> None:
        keys = [key for key, _ in held]
        costs = [cost for _, cost in held]
        try:
            await self._slots(keys, [call_id, "release", *costs])
        except StoreUnavailableError as error:
            log.warning("limit_release_failed", error=error.detail, lapses_in=LEASE)

    async def _renew(self, call_id: str, keys: list[str], costs: list[int]) -> None:
        """Keep a long call's slots from lapsing, until it is released."""
        while True:
            await asyncio.sleep(self._renew_every)
            with contextlib.suppress(StoreUnavailableError):  # it lapses; the outage is logged
                await self._slots(keys, [call_id, self._lease_ms, *costs])


def _held(keys: list[str], entries: list[tuple[Check, LimitKind]]) -> list[tuple[str, int]]:
    """The concurrency slots an admission took: (key, cost) each."""
    return [(key, check.cost) for key, (check, kind) in zip(keys, entries, strict=True)
            if kind == "concurrency"]  # fmt: skip
