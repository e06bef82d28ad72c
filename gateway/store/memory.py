"""`KeyValueStore` for one process: the embedded default (no Redis).

Nothing here awaits, so each operation runs whole on the event loop: that is its atomicity.
Memory is bounded per key namespace (`limits`, else `default_limit`): past the limit the entry
least recently read or written goes first, and `evicted` counts it. Expired entries are dropped
when read and from the oldest end on every write.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping

from gateway.store.kv import namespace_of


class MemoryKV:
    def __init__(
        self,
        limits: Mapping[str, int] | None = None,
        default_limit: int = 100_000,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = dict(limits or {})
        if min(self._limits.values(), default=1) < 1 or default_limit < 1:
            raise ValueError("limits must be at least 1")
        self._default_limit = default_limit
        self._clock = clock
        self._spaces: dict[str, OrderedDict[str, tuple[bytes, float]]] = {}
        self.evicted: Counter[str] = Counter()
        """Entries dropped for room, by namespace (expired ones are not counted)."""

    def _space(self, key: str) -> OrderedDict[str, tuple[bytes, float]]:
        name = namespace_of(key)
        space = self._spaces.get(name)
        if space is None:
            space = self._spaces[name] = OrderedDict()
        return space

    def _live(self, key: str) -> bytes | None:
        space = self._space(key)
        entry = space.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del space[key]
            return None
        space.move_to_end(key)  # least recently used goes first
        return entry[0]

    def _write(self, key: str, value: bytes, ttl: float) -> None:
        now = self._clock()
        space = self._space(key)
        while space:  # purge from the oldest end
            oldest, (_, expires_at) = next(iter(space.items()))
            if expires_at > now:
                break
            del space[oldest]
        space[key] = (value, now + ttl)
        space.move_to_end(key)
        name = namespace_of(key)
        limit = self._limits.get(name, self._default_limit)
        while len(space) > limit:
            space.popitem(last=False)
            self.evicted[name] += 1

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._write(key, value, ttl)

    async def take(self, key: str) -> bytes | None:
        value = self._live(key)
        if value is not None:
            del self._space(key)[key]
        return value

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        if self._live(key) != expected:
            return False
        self._write(key, value, ttl)
        return True

    async def delete(self, key: str) -> None:
        self._space(key).pop(key, None)

    async def increment(self, key: str, ttl: float) -> int:
        space = self._space(key)
        current = self._live(key)
        if current is None:
            self._write(key, b"1", ttl)
            return 1
        count = int(current) + 1
        space[key] = (str(count).encode(), space[key][1])  # the window keeps its end
        return count

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._spaces.clear()

    def count(self, namespace: str) -> int:
        """Entries held in `namespace`, expired ones not yet purged included."""
        return len(self._spaces.get(namespace, ()))
