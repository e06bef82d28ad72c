"""Limits shared through the store, and what applies while it is down: never "no limit".

`SharedLimiter` asks Redis (`RedisLimiter`); when Redis fails it applies the route's fallback:
`local` counts in this replica (`MemoryLimiter`: the same limits, per replica), `refuse`
answers 503 (`StoreUnavailableError`, with Retry-After). After a failure it does not ask Redis
again for `RETRY_STORE_AFTER` seconds, so an outage does not add a store timeout to every call;
then the next call tries again, and recovery needs no restart. A warning is logged when the
limits lose the store, and an info line when they have it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

from gateway.config.limits import LimitFallback
from gateway.errors import StoreUnavailableError
from gateway.observability.logging import get_logger
from gateway.policy.limits import Admission, Check
from gateway.store.kv import KeyValueStore
from gateway.store.memory_limits import MemoryLimiter
from gateway.store.observed import ObservedKV
from gateway.store.redis_limits import ADMIT_SCRIPT, SLOTS_SCRIPT, RedisLimiter

log = get_logger("gateway.limits")

RETRY_STORE_AFTER: Final = 1.0
"""Seconds after a store failure during which limits use their fallback without asking."""


class SharedLimiter:
    def __init__(
        self,
        shared: RedisLimiter,
        *,
        local: MemoryLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shared = shared
        self._local = local or MemoryLimiter(fallback="local")
        self._clock = clock
        self._retry_at = 0.0
        self._down = False

    async def admit(
        self, checks: Sequence[Check], call_id: str, fallback: LimitFallback = "refuse"
    ) -> Admission:
        if self._clock() >= self._retry_at:
            try:
                admission = await self._shared.admit(checks, call_id)
            except StoreUnavailableError as error:
                self._lost(error)
            else:
                if self._down:
                    self._down = False
                    log.info("limits_store_recovered")
                return admission
        if fallback == "refuse":
            raise StoreUnavailableError("limits unchecked: store down (fallback: refuse)")
        return self._local.admit_now(checks)

    def _lost(self, error: StoreUnavailableError) -> None:
        self._retry_at = self._clock() + RETRY_STORE_AFTER
        if not self._down:
            self._down = True
            log.warning("limits_store_unavailable", error=error.detail)


def open_limiter(shared: KeyValueStore | None) -> MemoryLimiter | SharedLimiter:
    """The limiter of a gateway: shared through the store when it has scripting (Redis), else
    this process's own."""
    if isinstance(shared, ObservedKV):
        admit, slots = shared.script(ADMIT_SCRIPT), shared.script(SLOTS_SCRIPT)
        if admit is not None and slots is not None:
            return SharedLimiter(RedisLimiter(admit, slots))
    return MemoryLimiter()
