"""The state store's contract: a few atomic key-value operations, nothing more.

Everything the authorization server keeps (clients, login transactions, codes, token families,
revocations, consent, rate-limit counters) is written through these operations, so the same
logic runs on one process (`gateway.store.memory.MemoryKV`) and across replicas
(`gateway.store.redis.RedisKV`). Each operation is atomic on its own; anything that must not
be split by a concurrent request is built from `take` or `compare_and_set`, never from a read
followed by a write.

Keys are `<namespace>:<rest>` strings (the namespace bounds memory use in `MemoryKV`); values
are opaque bytes. TTLs are seconds (> 0): an expired key reads as absent. A backend that cannot
answer raises `StoreUnavailableError`, so callers fail closed: no operation may answer "absent"
when it could not tell.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from gateway.errors import StoreUnavailableError

__all__ = ["KeyValueStore", "Script", "StoreUnavailableError", "namespace_of"]

Script = Callable[[Sequence[str], Sequence[str | int | float]], Awaitable[Any]]
"""A Lua script on a store that has scripting (Redis), called with its keys and arguments: one
atomic round trip. An optional capability (`RedisKV.script`), not part of `KeyValueStore`."""


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Write `value`, replacing any, to expire `ttl` seconds from now."""

    async def take(self, key: str) -> bytes | None:
        """The value, removed in the same step (GETDEL): of concurrent takers, one gets it."""

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        """Write `value` (expiring in `ttl`) only if the key currently holds exactly `expected`
        (None: only if absent). False, and nothing written, otherwise."""

    async def delete(self, key: str) -> None:
        """Remove the key if present."""

    async def increment(self, key: str, ttl: float) -> int:
        """Add one to a counter and return it; a new counter starts at 1 and expires `ttl`
        seconds after its creation (a fixed window), however often it is incremented."""

    async def ping(self) -> None:
        """Raise `StoreUnavailableError` unless the store answers (readiness)."""

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""


def namespace_of(key: str) -> str:
    """The part of `key` before the first `:`."""
    return key.partition(":")[0]
