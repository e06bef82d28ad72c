"""A route's users' provider grants, kept usable: read, refreshed in time, single-flight.

A grant within `refresh_before` seconds of its `expires_at` is refreshed before use. Providers
that rotate refresh tokens (each refresh returns a new one and invalidates the old; reuse of an
old one may revoke the whole grant) make a refresh token single-use, so exactly one refresh may
run per (route, user), however many requests and replicas want one:

- in one process, the first caller starts the refresh as a task and every other caller awaits
  that same task (a cancelled caller does not cancel it);
- across replicas sharing the store, the task first takes a lock key with
  `compare_and_set(lock, None, <random owner>, ttl)`, `ttl` = `fetch_timeout` + `LOCK_MARGIN`,
  so a crashed holder's lock lapses. The holder reads the grant again (another replica may
  have refreshed it just before), refreshes, writes the new grant only while the stored grant is
  still the one it refreshed (so a grant disconnected or reconnected meanwhile is not
  overwritten; `GrantStore.replace_grant`), then
  releases the lock. A replica that finds the lock taken re-reads the store, with a growing
  pause (`POLL_FIRST` to `POLL_MAX`), until the grant changes (it uses the new one) or the lock
  is gone with the grant unchanged (the holder failed: it answers 503 rather than race), at
  most `fetch_timeout` + `LOCK_MARGIN`.

Releasing is `compare_and_set(lock, owner, RELEASED, ttl=1 ms)` rather than a delete: the store
has no compare-and-delete, and a plain delete by a holder whose lock had already lapsed would
remove the next holder's lock and let a third replica refresh with the same refresh token.
The released value lives a millisecond and is read as "no lock".

`invalid_grant` at refresh deletes the grant and reads as "no grant" (the user connects again).
A provider that cannot be reached while the access token is still valid leaves the grant in
use until it expires; past expiry, `ProviderUnavailableError` (503), and the grant is kept.
A grant without a refresh token is used until it expires, then deleted (no provider request).

Outcomes counted: `issued` (a grant handed out), `refreshed` (one refresh at the provider),
`failed` (a refresh answered `invalid_grant`), `connected`, `disconnected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Final

from gateway.config.upstream_auth import UserOAuth
from gateway.observability.logging import get_logger
from gateway.store.kv import KeyValueStore, StoreUnavailableError
from gateway.upstream_auth.grants import GrantStore, ProviderGrant, StoredGrant
from gateway.upstream_auth.provider import (
    GrantRevokedError,
    ProviderUnavailableError,
    ThirdPartyProvider,
)

__all__ = ["GrantKeeper"]

log = get_logger("gateway.upstream_auth")

LOCK_NAMESPACE: Final = "upstream_grant_locks"
LOCK_MARGIN: Final = 5.0
"""Seconds a refresh lock outlives the longest refresh request (`fetch_timeout`)."""
RELEASED: Final = b"released"
RELEASED_TTL: Final = 0.001
POLL_FIRST: Final = 0.02
POLL_MAX: Final = 0.25
STILL_VALID: Final = 5.0
"""Seconds of life an access token must have left to be used when its refresh cannot be had."""


class GrantKeeper:
    """The grants of one route: `current` for the forwarder, `connect` and `disconnect`
    for the gateway's pages."""

    def __init__(
        self,
        provider: ThirdPartyProvider,
        grants: GrantStore,
        store: KeyValueStore,
        settings: UserOAuth,
        count: Callable[[str], None],
        *,
        upstream: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
        self._grants = grants
        self._store = store
        self._settings = settings
        self._count = count
        self._upstream = upstream
        self._clock = clock
        self._lock_ttl = settings.fetch_timeout + LOCK_MARGIN
        self._refreshing: dict[str, asyncio.Task[ProviderGrant | None]] = {}

    def _due(self, grant: ProviderGrant) -> bool:
        return (
            grant.expires_at is not None
            and grant.expires_at - self._settings.refresh_before <= self._clock()
        )

    def _usable(self, grant: ProviderGrant) -> bool:
        return grant.expires_at is None or grant.expires_at - STILL_VALID > self._clock()

    async def current(self, user: str) -> ProviderGrant | None:
        """The user's grant, refreshed first when it is due; None when there is none (or its
        refresh answered `invalid_grant`: then it is deleted). `ProviderUnavailableError` when a
        due grant could not be refreshed and is no longer usable (503)."""
        stored = await self._grants.get_stored(user)
        if stored is None:
            return None
        grant: ProviderGrant | None = stored.grant
        if self._due(stored.grant) and stored.grant.refresh_token is None:
            # Nothing to refresh with: used while it lasts, then gone (the user connects again).
            if not self._usable(stored.grant):
                await self._grants.remove_if(user, stored.record)
                log.info("upstream_grant_expired", upstream=self._upstream)
                grant = None
        elif self._due(stored.grant):
            try:
                grant = await self._refreshed(user, stored)
            except ProviderUnavailableError:
                if not self._usable(stored.grant):
                    raise
                log.warning("upstream_grant_refresh_deferred", upstream=self._upstream)
                grant = stored.grant
        if grant is not None:
            self._count("issued")
        return grant

    async def _refreshed(self, user: str, stored: StoredGrant) -> ProviderGrant | None:
        """The in-process single flight: one task per user, awaited by every caller."""
        task = self._refreshing.get(user)
        if task is None:
            task = asyncio.ensure_future(self._refresh_across_replicas(user, stored))
            self._refreshing[user] = task
            task.add_done_callback(lambda done: self._settled(user, done))
        return await asyncio.shield(task)

    def _settled(self, user: str, task: asyncio.Task[ProviderGrant | None]) -> None:
        if self._refreshing.get(user) is task:
            del self._refreshing[user]
        if not task.cancelled():
            task.exception()  # retrieved, so a task whose callers all left logs no warning

    async def _refresh_across_replicas(self, user: str, seen: StoredGrant) -> ProviderGrant | None:
        await self._provider.metadata()  # first, so the lock covers the token request only
        lock = f"{LOCK_NAMESPACE}:{self._grants.key(user)}"
        owner = secrets.token_hex(16).encode()
        if await self._take_lock(lock, owner):
            try:
                return await self._refresh_holding_lock(user, seen)
            finally:
                await self._release(lock, owner)
        return await self._await_other_replica(user, lock, seen)

    async def _release(self, lock: str, owner: bytes) -> None:
        # If the store is down now, the lock lapses on its own; the refresh's outcome matters.
        with contextlib.suppress(StoreUnavailableError):
            await self._store.compare_and_set(lock, owner, RELEASED, RELEASED_TTL)

    async def _take_lock(self, lock: str, owner: bytes) -> bool:
        if await self._store.compare_and_set(lock, None, owner, self._lock_ttl):
            return True
        return await self._store.compare_and_set(lock, RELEASED, owner, self._lock_ttl)

    async def _refresh_holding_lock(self, user: str, seen: StoredGrant) -> ProviderGrant | None:
        latest = await self._grants.get_stored(user)
        if latest is None:
            return None
        if latest.grant != seen.grant and not self._due(latest.grant):
            return latest.grant  # another replica refreshed it before we took the lock
        try:
            fresh = await self._provider.refresh(latest.grant)
        except GrantRevokedError:
            self._count("failed")
            log.info("upstream_grant_refresh_refused", upstream=self._upstream)
            if await self._grants.replace_grant(user, latest.grant, None):
                return None
            return await self._grants.get(user)  # replaced meanwhile: that one is current
        self._count("refreshed")
        if not await self._grants.replace_grant(user, latest.grant, fresh):
            # Disconnected or reconnected meanwhile: this refresh is not the user's grant now.
            log.info("upstream_grant_refresh_superseded", upstream=self._upstream)
            return await self._grants.get(user)
        log.info("upstream_grant_refreshed", upstream=self._upstream)
        if self._due(fresh):  # every use would refresh: the operator should lower it
            log.warning("upstream_grant_lifetime_below_refresh_before", upstream=self._upstream,
                        refresh_before=self._settings.refresh_before)  # fmt: skip
        return fresh

    async def _await_other_replica(
        self, user: str, lock: str, seen: StoredGrant
    ) -> ProviderGrant | None:
        """Another replica holds the lock: its grant once written, None if it deleted the
        grant, `ProviderUnavailableError` if it gave up (or never finished in time)."""
        deadline = self._clock() + self._lock_ttl
        pause = POLL_FIRST
        while True:
            latest = await self._grants.get_stored(user)
            if latest is None or latest.grant != seen.grant:
                return None if latest is None else latest.grant
            holder = await self._store.get(lock)
            if holder is None or holder == RELEASED:
                # The holder writes before it releases: read once more, then it failed.
                latest = await self._grants.get_stored(user)
                if latest is None or latest.grant != seen.grant:
                    return None if latest is None else latest.grant
                raise ProviderUnavailableError("the refresh by another replica failed")
            if self._clock() >= deadline:
                raise ProviderUnavailableError("the refresh by another replica did not finish")
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def connect(self, user: str, grant: ProviderGrant) -> None:
        """Store the grant the user just gave (replacing any earlier one)."""
        await self._grants.put(user, grant)
        self._count("connected")
        log.info("upstream_grant_connected", upstream=self._upstream)

    async def disconnect(self, user: str) -> bool:
        """Delete the user's grant, then revoke it at the provider when it supports RFC 7009
        (a failed revocation is logged; the grant is gone here either way). True if there
        was one."""
        grant = await self._grants.delete(user)
        if grant is None:
            return False
        self._count("disconnected")
        try:
            revoked = await self._provider.revoke(grant)
        except ProviderUnavailableError:
            revoked = False
            log.warning("upstream_grant_revocation_failed", upstream=self._upstream)
        log.info("upstream_grant_disconnected", upstream=self._upstream, revoked=revoked)
        return True

    async def close(self) -> None:
        """Cancel refreshes still running (at shutdown)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
