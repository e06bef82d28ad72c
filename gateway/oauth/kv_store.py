"""`AuthStore` kept once, over the small atomic operations of a `KeyValueStore`: the same code
runs in one process (`MemoryStore`, over a `MemoryKV`) and across replicas (over a `RedisKV`).
The rules it keeps are in `gateway.oauth.store`.

Keys, by namespace: `clients:<client_id>`, `logins:<digest(state)>`, `codes:<digest(code)>`,
`families:<family_id>`, `handles:<digest(refresh-token handle)>` (holds the family id),
`revoked_jtis:<jti>`, `consents:<digest of subject and client>`, `sessions:<digest(cookie)>`,
`page_sign_ins:<digest(state)>`.
Records are JSON (`gateway.oauth.records.RecordCodec`); a value that does not read back as its
record raises `StoredRecordError` (500), never reads as absent.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from gateway.errors import StoreUnavailableError
from gateway.oauth.records import (
    CLIENT_RECORDS,
    LOGIN_TXNS,
    PAGE_SIGN_INS,
    PAGE_STATE_PREFIX,
    SIGN_IN_SESSIONS,
    ClientRecord,
    CodeGrant,
    CodeRedemption,
    CodeReplay,
    FamilyGrant,
    LoginTxn,
    PageSignIn,
    RecordCodec,
    Reused,
    Rotated,
    ScopeNotGranted,
    SignInSession,
    digest,
    secret_matches,
)
from gateway.store.kv import KeyValueStore

CODE_REPLAY_MEMORY = 600.0
"""Seconds a redeemed code is remembered after its expiry, so a late replay still revokes."""

REVOCATION_MARGIN = 300.0
"""Seconds a revoked `jti` is remembered after its token's `exp`: at least the validator's
largest allowed clock leeway, during which an expired token is still accepted."""

JTIS_PER_FAMILY = 100
"""Live access tokens one family may hold, by default."""
CLIENT_LIFETIME = 400 * 86_400.0
"""Seconds a dynamically registered client is kept after registering: longer than any refresh
token it can hold (`refresh_token_lifetime` is at most 365 days)."""
CAS_ATTEMPTS = 32
"""Optimistic retries of one step before it gives up (503): each failed attempt means another
request changed the same item, so this is reached only under pathological contention."""


def _ttl(expires_at: float, now: float) -> float:
    """Seconds to keep an item that matters until `expires_at` (at least one)."""
    return max(expires_at - now, 1.0)


@dataclass(frozen=True, slots=True)
class _Code:
    grant: CodeGrant
    family_id: str
    used: bool = False

    @property
    def expires_at(self) -> float:
        return self.grant.expires_at + (CODE_REPLAY_MEMORY if self.used else 0.0)


@dataclass(frozen=True, slots=True)
class _Family:
    expires_at: float
    """The latest of: its grant's end, its last access token's `exp` (plus the revocation
    margin), and its code's replay memory."""
    grant: FamilyGrant | None = None
    handle: str | None = None
    """Digest of its refresh tokens' handle."""
    current: str | None = None
    """Digest of its newest refresh token."""
    jtis: Mapping[str, float] = field(default_factory=dict)
    """Access tokens issued in it -> their `exp`."""
    revoked: bool = False
    """A tombstone: kept so a late write (a code redeemed as its replay revokes) cannot revive
    the family."""


_CODES = RecordCodec(_Code, "authorization code")
_FAMILIES = RecordCodec(_Family, "token family")
_CONSENTS = RecordCodec[dict[str, float]](dict[str, float], "consent")
R = TypeVar("R")


class KvAuthStore:
    """`AuthStore` over a `KeyValueStore`. `clock` dates storage lifetimes (housekeeping);
    validity decisions use the `now` the caller passes. Store failures propagate as
    `StoreUnavailableError`: the caller answers 503, never as if the item were valid."""

    def __init__(
        self,
        kv: KeyValueStore,
        *,
        clock: Callable[[], float] = time.time,
        jtis_per_family: int = JTIS_PER_FAMILY,
    ) -> None:
        self.kv = kv
        self._clock = clock
        self._jtis_per_family = jtis_per_family

    async def _read(self, codec: RecordCodec[R], key: str) -> tuple[bytes, R] | None:
        raw = await self.kv.get(key)
        return None if raw is None else (raw, codec.load(raw))

    # -- clients --------------------------------------------------------------------------------

    async def save_client(self, client: ClientRecord) -> None:
        await self.kv.set(
            f"clients:{client.client_id}", CLIENT_RECORDS.dump(client), CLIENT_LIFETIME
        )

    async def get_client(self, client_id: str) -> ClientRecord | None:
        found = await self._read(CLIENT_RECORDS, f"clients:{client_id}")
        return None if found is None else found[1]

    # -- login transactions ---------------------------------------------------------------------

    async def begin_login(self, txn: LoginTxn) -> str:
        state = secrets.token_urlsafe(32)
        ttl = _ttl(txn.expires_at, self._clock())
        await self.kv.set(f"logins:{digest(state)}", LOGIN_TXNS.dump(txn), ttl)
        return state

    async def take_login(self, state: str, now: float) -> LoginTxn | None:
        raw = await self.kv.take(f"logins:{digest(state)}")
        if raw is None:
            return None
        txn = LOGIN_TXNS.load(raw)
        return txn if txn.expires_at > now else None

    async def begin_page_sign_in(self, txn: PageSignIn) -> str:
        state = PAGE_STATE_PREFIX + secrets.token_urlsafe(32)
        ttl = _ttl(txn.expires_at, self._clock())
        await self.kv.set(f"page_sign_ins:{digest(state)}", PAGE_SIGN_INS.dump(txn), ttl)
        return state

    async def take_page_sign_in(self, state: str, now: float) -> PageSignIn | None:
        raw = await self.kv.take(f"page_sign_ins:{digest(state)}")
        if raw is None:
            return None
        txn = PAGE_SIGN_INS.load(raw)
        return txn if txn.expires_at > now else None

    # -- authorization codes --------------------------------------------------------------------

    async def issue_code(self, grant: CodeGrant) -> str:
        code = secrets.token_urlsafe(32)
        entry = _Code(grant, family_id=secrets.token_urlsafe(16))
        ttl = _ttl(entry.expires_at, self._clock())
        await self.kv.set(f"codes:{digest(code)}", _CODES.dump(entry), ttl)
        return code

    async def consume_code(self, code: str, now: float) -> CodeRedemption | CodeReplay | None:
        key = f"codes:{digest(code)}"
        for _ in range(CAS_ATTEMPTS):
            found = await self._read(_CODES, key)
            if found is None:
                return None
            raw, entry = found
            if entry.expires_at <= now:  # storage lifetimes are housekeeping: `now` decides
                return None
            if entry.used:
                await self.revoke_family(entry.family_id)
                return CodeReplay(entry.family_id)
            if entry.grant.expires_at <= now:
                return None
            used = replace(entry, used=True)
            ttl = _ttl(used.expires_at, self._clock())
            if await self.kv.compare_and_set(key, raw, _CODES.dump(used), ttl):
                # Only if absent: a replay that revoked the family first left a tombstone.
                await self.kv.compare_and_set(
                    f"families:{entry.family_id}",
                    None,
                    _FAMILIES.dump(_Family(used.expires_at)),
                    ttl,
                )
                return CodeRedemption(entry.grant, entry.family_id)
        raise StoreUnavailableError("authorization code: too much contention")

    # -- token families -------------------------------------------------------------------------

    async def record_jti(self, family_id: str, jti: str, expires_at: float) -> bool:
        key = f"families:{family_id}"
        for _ in range(CAS_ATTEMPTS):
            found = await self._read(_FAMILIES, key)
            if found is None:
                return False
            if found[1].revoked:
                await self.revoke_jti(jti, expires_at)
                return True
            raw, family = found
            now = self._clock()
            live = {j: exp for j, exp in family.jtis.items() if exp + REVOCATION_MARGIN > now}
            if len(live) >= self._jtis_per_family:
                return False
            grown = replace(
                family,
                jtis=live | {jti: expires_at},
                expires_at=max(family.expires_at, expires_at + REVOCATION_MARGIN),
            )
            if await self.kv.compare_and_set(
                key, raw, _FAMILIES.dump(grown), _ttl(grown.expires_at, now)
            ):
                return True
        raise StoreUnavailableError("token family: too much contention")

    async def start_family(self, grant: FamilyGrant) -> str | None:
        key = f"families:{grant.family_id}"
        for _ in range(CAS_ATTEMPTS):
            found = await self._read(_FAMILIES, key)
            if found is None or found[1].revoked or found[1].grant is not None:
                return None
            raw, family = found
            handle = secrets.token_urlsafe(16)
            token = f"{handle}.{secrets.token_urlsafe(32)}"
            started = replace(
                family,
                grant=grant,
                handle=digest(handle),
                current=digest(token),
                expires_at=max(family.expires_at, grant.expires_at),
            )
            ttl = _ttl(started.expires_at, self._clock())
            if await self.kv.compare_and_set(key, raw, _FAMILIES.dump(started), ttl):
                await self.kv.set(f"handles:{started.handle}", grant.family_id.encode(), ttl)
                return token
        raise StoreUnavailableError("token family: too much contention")

    async def _family_of(self, refresh_token: str) -> tuple[str, bytes, _Family] | None:
        handle, dot, secret = refresh_token.partition(".")
        if not (handle and dot and secret):
            return None
        family_id = await self.kv.get(f"handles:{digest(handle)}")
        if family_id is None:
            return None
        found = await self._read(_FAMILIES, f"families:{family_id.decode()}")
        if found is None or found[1].revoked or found[1].grant is None:
            return None
        return family_id.decode(), found[0], found[1]

    async def rotate(
        self, refresh_token: str, now: float, *, client_id: str, scopes: frozenset[str] | None
    ) -> Rotated | Reused | ScopeNotGranted | None:
        for _ in range(CAS_ATTEMPTS):
            found = await self._family_of(refresh_token)
            if found is None:
                return None
            family_id, raw, family = found
            grant, current = family.grant, family.current
            assert grant is not None
            assert current is not None
            if grant.expires_at <= now:
                return None
            if not secret_matches(refresh_token, current):
                await self.revoke_family(family_id)
                return Reused(family_id)
            if grant.client_id != client_id:
                return None
            granted = grant.scopes if scopes is None else scopes
            if not granted <= grant.scopes:
                return ScopeNotGranted(granted - grant.scopes)
            handle = refresh_token.partition(".")[0]
            new_token = f"{handle}.{secrets.token_urlsafe(32)}"
            rotated = replace(family, current=digest(new_token))
            ttl = _ttl(rotated.expires_at, self._clock())
            if await self.kv.compare_and_set(
                f"families:{family_id}", raw, _FAMILIES.dump(rotated), ttl
            ):
                return Rotated(new_token, grant, granted)
            # Changed meanwhile: look again (a concurrent rotation makes this token a reuse).
        raise StoreUnavailableError("refresh token: too much contention")

    async def revoke(self, token: str, *, client_id: str) -> bool:
        found = await self._family_of(token)
        if found is None:
            return False
        family_id, _, family = found
        assert family.grant is not None
        if family.grant.client_id != client_id:
            return False
        await self.revoke_family(family_id)
        return True

    async def revoke_family(self, family_id: str) -> None:
        key = f"families:{family_id}"
        for _ in range(CAS_ATTEMPTS):
            now = self._clock()
            found = await self._read(_FAMILIES, key)
            if found is None:
                tombstone = _Family(now + CODE_REPLAY_MEMORY, revoked=True)
                if await self.kv.compare_and_set(
                    key, None, _FAMILIES.dump(tombstone), CODE_REPLAY_MEMORY
                ):
                    return
                continue
            raw, family = found
            if family.revoked:
                return
            revoked = _Family(family.expires_at, handle=family.handle, revoked=True)
            if await self.kv.compare_and_set(
                key, raw, _FAMILIES.dump(revoked), _ttl(family.expires_at, now)
            ):
                for jti, expires_at in family.jtis.items():
                    await self.revoke_jti(jti, expires_at)
                if family.handle is not None:
                    await self.kv.delete(f"handles:{family.handle}")
                return
        raise StoreUnavailableError("token family: too much contention")

    async def revoke_jti(self, jti: str, expires_at: float) -> None:
        ttl = _ttl(expires_at + REVOCATION_MARGIN, self._clock())
        await self.kv.set(f"revoked_jtis:{jti}", b"1", ttl)

    async def is_revoked_jti(self, jti: str) -> bool:
        return await self.kv.get(f"revoked_jtis:{jti}") is not None

    # -- consent --------------------------------------------------------------------------------

    async def record_consent(
        self, subject: str, client_id: str, scopes: Iterable[str], expires_at: float
    ) -> None:
        key = _consent_key(subject, client_id)
        scopes = list(scopes)
        for _ in range(CAS_ATTEMPTS):
            now = self._clock()
            raw = await self.kv.get(key)
            approved: dict[str, float] = _CONSENTS.load(raw) if raw is not None else {}
            approved.update(dict.fromkeys(scopes, expires_at))
            live = {s: exp for s, exp in approved.items() if exp > now}
            ttl = _ttl(max(live.values(), default=now), now)
            if await self.kv.compare_and_set(key, raw, _CONSENTS.dump(live), ttl):
                return
        raise StoreUnavailableError("consent: too much contention")

    async def consented_scopes(self, subject: str, client_id: str, now: float) -> frozenset[str]:
        raw = await self.kv.get(_consent_key(subject, client_id))
        approved: dict[str, float] = _CONSENTS.load(raw) if raw is not None else {}
        return frozenset(scope for scope, expires_at in approved.items() if expires_at > now)

    # -- sign-in sessions -----------------------------------------------------------------------

    async def start_session(self, session: SignInSession, idle_timeout: float) -> str:
        cookie = secrets.token_urlsafe(32)
        ttl = _ttl(min(session.expires_at, session.last_used + idle_timeout), self._clock())
        await self.kv.set(f"sessions:{digest(cookie)}", SIGN_IN_SESSIONS.dump(session), ttl)
        return cookie

    async def find_session(
        self, cookie: str, now: float, idle_timeout: float
    ) -> SignInSession | None:
        key = f"sessions:{digest(cookie)}"
        found = await self._read(SIGN_IN_SESSIONS, key)
        if found is None:
            return None
        raw, session = found
        if session.expires_at <= now or session.last_used + idle_timeout <= now:
            return None
        used = replace(session, last_used=max(now, session.last_used))
        ttl = _ttl(min(used.expires_at, used.last_used + idle_timeout), self._clock())
        # A concurrent use or sign-out changed it: either way this use needs no write.
        await self.kv.compare_and_set(key, raw, SIGN_IN_SESSIONS.dump(used), ttl)
        return used

    async def end_session(self, cookie: str) -> None:
        await self.kv.delete(f"sessions:{digest(cookie)}")


def _consent_key(subject: str, client_id: str) -> str:
    return "consents:" + digest(json.dumps([subject, client_id]))
