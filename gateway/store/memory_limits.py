"""`Limiter` in this process: token buckets and in-flight counts in memory, for a gateway
without a shared store and as the `local` fallback while the store is down.

Nothing here awaits, so each admission runs whole on the event loop: that is its atomicity.
Memory is bounded: buckets are kept least recently used first and at most `max_keys` of them
(dropping one forgets a caller that has been quiet longest, i.e. gives it a full bucket back);
in-flight counts exist only while calls are in flight.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from gateway.config.limits import LimitFallback
from gateway.policy.limits import Admission, Admitted, Check, Limited, seconds_until

MAX_KEYS = 100_000


class MemoryLimiter:
    def __init__(
        self,
        max_keys: int = MAX_KEYS,
        *,
        clock: Callable[[], float] = time.monotonic,
        fallback: LimitFallback | None = None,
    ) -> None:
        """`fallback`: what admissions say decided them (`local` when standing in for the
        store)."""
        self._max_keys = max_keys
        self._clock = clock
        self._fallback = fallback
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """Counter name -> (tokens, when they were counted)."""
        self._in_flight: dict[str, int] = {}

    async def admit(
        self, checks: Sequence[Check], call_id: str, fallback: LimitFallback = "refuse"
    ) -> Admission:
        """Without a shared store there is no fallback to apply."""
        return self.admit_now(checks)

    def admit_now(self, checks: Sequence[Check]) -> Admission:
        """`admit`, synchronously: nothing here waits."""
        now = self._clock()
        tokens: list[float] = []
        for check in checks:
            rule = check.rule
            if rule.bucket is not None:
                available = self._tokens(check.key, rule.bucket.burst, rule.bucket.per_second, now)
                if available < check.cost:
                    wait = seconds_until(check.cost - available, rule.bucket.per_second)
                    return Limited(rule, "rate", wait, self._fallback)
                tokens.append(available)
            cap = rule.concurrency
            if cap is not None and self._in_flight.get(check.key, 0) + check.cost > cap:
                return Limited(rule, "concurrency", 1, self._fallback)
        taken = iter(tokens)
        held: list[Check] = []
        for check in checks:
            if check.rule.bucket is not None:
                self._store(check.key, next(taken) - check.cost, now)
            if check.rule.concurrency is not None:
                self._in_flight[check.key] = self._in_flight.get(check.key, 0) + check.cost
                held.append(check)
        if not held:
            return Admitted(fallback=self._fallback)

        async def release() -> None:
            self.release_now(held)

        return Admitted(release, self._fallback)

    def release_now(self, held: Sequence[Check]) -> None:
        for check in held:
            remaining = self._in_flight.get(check.key, 0) - check.cost
            if remaining > 0:
                self._in_flight[check.key] = remaining
            else:
                self._in_flight.pop(check.key, None)

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    def _tokens(self, key: str, burst: int, per_second: float, now: float) -> float:
        saved = self._buckets.get(key)
        if saved is None:
            return float(burst)
        tokens, at = saved
        return min(float(burst), tokens + max(0.0, now - at) * per_second)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
