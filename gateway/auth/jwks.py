"""An authorization server's signing keys: fetched, cached, refreshed without storms.

- Keys are cached for `cache_ttl`; after that the next request refetches them.
- While the key source answers, a `kid` not in the cache triggers a refetch (key rotation), at
  most once per `cooldown`; all requests waiting meanwhile share that one fetch (single-flight).
  A flood of tokens with random `kid`s therefore costs one fetch per cooldown, not one per token.
- While the key source fails, it is tried again after a short backoff (0.25 s, doubling up to
  2 s), not after the cooldown: once it is back, requests are served again within seconds.
  Requests arriving before the next try fail at once, without a fetch.
- Fail closed: if keys cannot be had (never fetched, expired, or a refetch for a new `kid`
  failed), `KeysUnavailableError` is raised and the request gets 503, never a pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from gateway.auth.fetch import FetchError

Fetcher = Callable[[], Awaitable[dict[str, Any]]]

FIRST_RETRY = 0.25
"""Seconds before the key source is tried again after one failed fetch."""
MAX_RETRY = 2.0
"""Longest wait between tries while the key source keeps failing."""


class KeysUnavailableError(Exception):
    """The key set cannot be fetched right now."""


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failed fetches (>= 1) before the next try:
    0.25, 0.5, 1, 2, 2, ..."""
    return min(FIRST_RETRY * 2.0 ** min(failures - 1, 16), MAX_RETRY)


class JwksCache:
    def __init__(
        self,
        fetch: Fetcher,
        *,
        cache_ttl: float,
        cooldown: float,
        on_fetch: Callable[[str], None] = lambda outcome: None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`clock`: monotonic seconds (default: the running loop's clock)."""
        self._fetch = fetch
        self._cache_ttl = cache_ttl
        self._cooldown = cooldown
        self._on_fetch = on_fetch
        self._clock = clock
        self._keys: dict[str | None, list[Key]] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._failures = 0  # consecutive failed fetches; 0 while the source is healthy
        self._inflight: asyncio.Future[None] | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def keys_for(self, kid: str | None) -> list[Key]:
        """Candidate keys for a token's `kid` (all keys without a kid when it has none).

        An empty list means the key set is current and has no such key: the token is invalid.
        """
        now = self._now()
        fresh = self._fetched_at is not None and now - self._fetched_at < self._cache_ttl
        if fresh and kid in self._keys:
            return self._keys[kid]
        if self._attempted_at is not None:
            since = now - self._attempted_at
            if self._failures and since < retry_delay(self._failures):
                raise KeysUnavailableError("key source failed recently")
            if not self._failures and fresh and since < self._cooldown:
                return []  # the key set is current and has no such key
        await self._refresh()
        return self._keys.get(kid, [])

    async def _refresh(self) -> None:
        """One fetch at a time, shared by every waiter; it runs as its own task so a waiter
        that is cancelled (its client went away) does not cancel it for the others."""
        if self._inflight is None:
            task = asyncio.ensure_future(self._fetch_now())
            task.add_done_callback(self._fetch_done)
            self._inflight = task
        await asyncio.shield(self._inflight)

    def _fetch_done(self, task: asyncio.Future[None]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: waiters, if any, get it from their own await

    async def _fetch_now(self) -> None:
        self._attempted_at = self._now()
        try:
            document = await self._fetch()
            key_set = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (FetchError, JoseError, ValueError, TypeError, KeyError) as exc:
            self._failures += 1
            self._attempted_at = self._now()  # the backoff counts from the failure's end
            self._on_fetch("error")
            raise KeysUnavailableError(type(exc).__name__) from None
        keys: dict[str | None, list[Key]] = {}
        for key in key_set.keys:
            if key.is_private:
                continue  # a JWKS must publish public keys only; never sign-verify with a leak
            keys.setdefault(key.kid, []).append(key)
        self._keys = keys
        self._fetched_at = self._now()
        self._failures = 0
        self._on_fetch("ok")
