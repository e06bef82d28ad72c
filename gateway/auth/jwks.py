"""An authorization server's signing keys: fetched, cached, refreshed without storms.

- Keys are cached for `cache_ttl`; after that the next request refetches them.
- A `kid` not in the cache triggers a refetch (key rotation), at most once per `cooldown`;
  all requests waiting meanwhile share that one fetch (single-flight). A flood of tokens with
  random `kid`s therefore costs one fetch per cooldown, not one per token.
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


class KeysUnavailableError(Exception):
    """The key set cannot be fetched right now."""


class JwksCache:
    def __init__(
        self,
        fetch: Fetcher,
        *,
        cache_ttl: float,
        cooldown: float,
        on_fetch: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._fetch = fetch
        self._cache_ttl = cache_ttl
        self._cooldown = cooldown
        self._on_fetch = on_fetch
        self._keys: dict[str | None, list[Key]] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._last_failed = False
        self._inflight: asyncio.Future[None] | None = None

    async def keys_for(self, kid: str | None) -> list[Key]:
        """Candidate keys for a token's `kid` (all keys without a kid when it has none).

        An empty list means the key set is current and has no such key: the token is invalid.
        """
        now = asyncio.get_running_loop().time()
        fresh = self._fetched_at is not None and now - self._fetched_at < self._cache_ttl
        if fresh and kid in self._keys:
            return self._keys[kid]
        recently_tried = (
            self._attempted_at is not None and now - self._attempted_at < self._cooldown
        )
        if recently_tried and self._last_failed:
            raise KeysUnavailableError("key source failed recently")
        if recently_tried and fresh:
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
        loop = asyncio.get_running_loop()
        self._attempted_at = loop.time()
        try:
            document = await self._fetch()
            key_set = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (FetchError, JoseError, ValueError, TypeError, KeyError) as exc:
            self._last_failed = True
            self._on_fetch("error")
            raise KeysUnavailableError(type(exc).__name__) from None
        keys: dict[str | None, list[Key]] = {}
        for key in key_set.keys:
            if key.is_private:
                continue  # a JWKS must publish public keys only; never sign-verify with a leak
            keys.setdefault(key.kid, []).append(key)
        self._keys = keys
        self._fetched_at = loop.time()
        self._last_failed = False
        self._on_fetch("ok")
