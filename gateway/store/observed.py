"""A `KeyValueStore` wrapper that makes outages visible: every failure is counted and logged,
and the first success after a failure is logged as recovery. The operation still fails (the
caller answers 503): observing never turns an error into an answer."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from gateway.config.model import StoreSettings
from gateway.observability.logging import get_logger
from gateway.observability.metrics import GatewayMetrics
from gateway.store.kv import KeyValueStore, Script, StoreUnavailableError
from gateway.store.redis import RedisKV

log = get_logger("gateway.store")
T = TypeVar("T")


class ObservedKV:
    def __init__(self, inner: KeyValueStore, metrics: GatewayMetrics) -> None:
        self.inner = inner
        self._metrics = metrics
        self._healthy = True

    async def _run(self, operation: str, call: Awaitable[T]) -> T:
        try:
            result = await call
        except StoreUnavailableError as error:
            self._metrics.store_errors.labels(operation).inc()
            self._metrics.store_up.set(0)
            log.error("store_unavailable", operation=operation, error=error.detail)
            self._healthy = False
            raise
        if not self._healthy:
            self._healthy = True
            self._metrics.store_up.set(1)
            log.info("store_recovered", operation=operation)
        return result

    async def get(self, key: str) -> bytes | None:
        return await self._run("get", self.inner.get(key))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._run("set", self.inner.set(key, value, ttl))

    async def take(self, key: str) -> bytes | None:
        return await self._run("take", self.inner.take(key))

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        return await self._run(
            "compare_and_set", self.inner.compare_and_set(key, expected, value, ttl)
        )

    async def delete(self, key: str) -> None:
        await self._run("delete", self.inner.delete(key))

    async def increment(self, key: str, ttl: float) -> int:
        return await self._run("increment", self.inner.increment(key, ttl))

    def script(self, text: str) -> Script | None:
        """A Lua script on the store, observed like its other operations; None when the store
        has no scripting."""
        if not isinstance(self.inner, RedisKV):
            return None
        run = self.inner.script(text)

        async def observed(keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
            return await self._run("script", run(keys, args))

        return observed

    async def ping(self) -> None:
        await self._run("ping", self.inner.ping())

    async def close(self) -> None:
        await self.inner.close()


def open_shared_store(settings: StoreSettings, metrics: GatewayMetrics) -> KeyValueStore | None:
    """The configured shared store, observed; None for the `memory` backend, whose users keep
    their own state in this process."""
    if settings.backend != "redis":
        return None
    assert settings.url is not None  # the config requires it
    redis = RedisKV(
        settings.url.get_secret_value(),
        prefix=settings.key_prefix,
        timeout=settings.timeout,
        max_connections=settings.max_connections,
    )
    return ObservedKV(redis, metrics)
