"""Users' grants at a third-party provider, sealed in the store: one record per (route, user).

The key is `upstream_grants:<route>:<user key>`, where the user key is a hash of the principal's
(issuer, subject): no user name appears in the store. The value is a `GrantSealer` record whose
associated data is the same route and user key, so a record copied to another user's key (or
another route's) does not open.

Reading, three cases:

- the record opens: the grant;
- it was sealed with a key this process does not have (`UnknownSealKeyError`): it reads as
  absent after a warning log (`upstream_grant_unreadable`, reason `unknown_key`), so the user is
  asked to connect again. The record is left alone: during a rolling key rotation another
  replica may already seal with a key this one does not know yet, and deleting would lose a
  grant that replica can still read. (Rotate in two steps: add the new key last everywhere,
  then move it first; drop the old key once records had time to be re-sealed.)
- it does not open with a configured key (altered, truncated, or not ours):
  `GrantUnreadableError` (the caller answers 503), logged as an error, and the record is kept for
  an operator to look at: a store that hands back bytes nobody wrote is not treated as "no grant".

A record sealed with an older configured key opens, and is re-sealed with the current key on
the next write; `get` also re-seals it at once (compare-and-set on the bytes it read, so a
concurrent refresh is never overwritten with the older grant).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from gateway.auth.principal import Principal
from gateway.errors import CredentialUnavailableError
from gateway.observability.logging import get_logger
from gateway.store.kv import KeyValueStore
from gateway.upstream_auth.sealing import GrantSealer, SealError, UnknownSealKeyError

__all__ = ["GrantStore", "GrantUnreadableError", "ProviderGrant", "StoredGrant", "user_key"]

log = get_logger("gateway.upstream_auth")

NAMESPACE: Final = "upstream_grants"
LONG_TTL: Final = 400 * 86400.0
"""Seconds a grant that can be refreshed (or never expires) is kept after its last write."""
REMOVED: Final = b"-"
"""A record that reads as absent and expires in a millisecond: the store's compare-and-set is
its only conditional write, so a conditional delete writes this."""
REMOVED_TTL: Final = 0.001
CAS_ATTEMPTS: Final = 3
"""Compare-and-set rounds of `replace_grant` lost to re-sealings before it gives up."""
EXPIRED_GRACE: Final = 60.0
"""Seconds a grant without a refresh token is kept past its expiry (then nothing can use it)."""


def user_key(principal: Principal) -> str | None:
    """A stable opaque id of the principal's (issuer, subject); None without a subject."""
    if principal.subject is None:
        return None
    pair = json.dumps([principal.issuer, principal.subject], separators=(",", ":"))
    return hashlib.sha256(pair.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProviderGrant:
    """What the provider's token endpoint granted a user (RFC 6749 section 5.1)."""

    access_token: str
    refresh_token: str | None
    expires_at: float | None
    """Epoch seconds; None when the provider did not say (`expires_in` absent)."""
    scope: str | None

    def __repr__(self) -> str:  # never the tokens
        return f"ProviderGrant(expires_at={self.expires_at!r}, scope={self.scope!r})"

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at,
                "scope": self.scope,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ProviderGrant:
        """ValueError if `data` is not what `to_bytes` writes."""
        value: Any = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError("not a grant")
        access, refresh = value.get("access_token"), value.get("refresh_token")
        expires, scope = value.get("expires_at"), value.get("scope")
        if (
            not isinstance(access, str)
            or not (refresh is None or isinstance(refresh, str))
            or not (expires is None or isinstance(expires, int | float))
            or not (scope is None or isinstance(scope, str))
        ):
            raise ValueError("not a grant")
        return cls(access, refresh, None if expires is None else float(expires), scope)


@dataclass(frozen=True, slots=True)
class StoredGrant:
    """A grant and the exact record it was read from (for `GrantStore.replace`)."""

    grant: ProviderGrant
    record: bytes


class GrantUnreadableError(CredentialUnavailableError):
    """A stored grant does not open although its key is configured: altered or corrupt.
    A `CredentialUnavailableError`, so it is a 503 with `Retry-After` wherever it surfaces;
    the detail carries nothing of the record."""

    def __init__(self) -> None:
        super().__init__("the stored grant does not open: altered or corrupt")


class GrantStore:
    """The sealed grants of one route (upstream)."""

    def __init__(
        self,
        store: KeyValueStore,
        sealer: GrantSealer,
        upstream: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._upstream = upstream
        self._clock = clock

    def key(self, user: str) -> str:
        return f"{NAMESPACE}:{self._upstream}:{user}"

    def _associated(self, user: str) -> bytes:
        return json.dumps([NAMESPACE, self._upstream, user], separators=(",", ":")).encode()

    def _ttl(self, grant: ProviderGrant) -> float:
        if grant.refresh_token is not None or grant.expires_at is None:
            return LONG_TTL
        return max(1.0, math.ceil(grant.expires_at - self._clock() + EXPIRED_GRACE))

    def _seal(self, user: str, grant: ProviderGrant) -> bytes:
        return self._sealer.seal(grant.to_bytes(), self._associated(user))

    async def get_stored(self, user: str) -> StoredGrant | None:
        """The grant with its record; None when absent (or sealed with a removed key)."""
        record = await self._store.get(self.key(user))
        if record is None or record == REMOVED:
            return None
        try:
            grant = ProviderGrant.from_bytes(self._sealer.open(record, self._associated(user)))
        except UnknownSealKeyError:
            log.warning("upstream_grant_unreadable", upstream=self._upstream, reason="unknown_key")
            return None
        except (SealError, ValueError):
            log.error("upstream_grant_unreadable", upstream=self._upstream, reason="altered")
            raise GrantUnreadableError() from None
        if not self._sealer.is_current(record):
            resealed = self._seal(user, grant)
            if await self._store.compare_and_set(
                self.key(user), record, resealed, self._ttl(grant)
            ):
                log.info("upstream_grant_resealed", upstream=self._upstream)
                record = resealed
        return StoredGrant(grant, record)

    async def get(self, user: str) -> ProviderGrant | None:
        stored = await self.get_stored(user)
        return None if stored is None else stored.grant

    async def put(self, user: str, grant: ProviderGrant) -> None:
        await self._store.set(self.key(user), self._seal(user, grant), self._ttl(grant))

    async def replace(self, user: str, record: bytes, grant: ProviderGrant) -> bool:
        """Write `grant` only if the stored record is still exactly `record` (nobody refreshed,
        disconnected or reconnected meanwhile); False, and nothing written, otherwise."""
        return await self._store.compare_and_set(
            self.key(user), record, self._seal(user, grant), self._ttl(grant)
        )

    async def remove_if(self, user: str, record: bytes) -> bool:
        """Delete the grant only if the stored record is still exactly `record`."""
        return await self._store.compare_and_set(self.key(user), record, REMOVED, REMOVED_TTL)

    async def replace_grant(
        self, user: str, expected: ProviderGrant, grant: ProviderGrant | None
    ) -> bool:
        """Write `grant` (None: delete it) only while the stored grant is still `expected`.
        Compared by content, not by record: a re-sealing in between (key rotation) is no
        change, a connect, disconnect or refresh in between is. False, nothing written, then."""
        for _ in range(CAS_ATTEMPTS):
            stored = await self.get_stored(user)
            if stored is None or stored.grant != expected:
                return False
            if grant is None:
                written = await self.remove_if(user, stored.record)
            else:
                written = await self.replace(user, stored.record, grant)
            if written:
                return True
        return False

    async def delete(self, user: str) -> ProviderGrant | None:
        """Remove the user's grant; the grant it held (None: none, or it did not open)."""
        record = await self._store.take(self.key(user))
        if record is None or record == REMOVED:
            return None
        try:
            return ProviderGrant.from_bytes(self._sealer.open(record, self._associated(user)))
        except (SealError, ValueError):
            log.warning("upstream_grant_unreadable", upstream=self._upstream, reason="deleted")
            return None
