"""A fixed-window rate limit over the state store (registrations, sign-in attempts)."""

from __future__ import annotations

import time

from gateway.oauth.records import digest
from gateway.store.kv import KeyValueStore


class RateLimit:
    """At most `per_minute` events per key in each clock minute (a fixed window), counted in
    the state store, so replicas share the count."""

    def __init__(self, kv: KeyValueStore, kind: str, per_minute: int) -> None:
        self._kv = kv
        self._kind = kind
        self._per_minute = per_minute

    async def allow(self, key: str) -> bool:
        window = int(time.time() // 60)
        name = f"rate:{self._kind}:{window}:{digest(key)}"
        return await self._kv.increment(name, 60.0) <= self._per_minute
