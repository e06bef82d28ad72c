"""The authorization server's state: clients, login transactions, authorization codes, token
families, revoked access tokens and consent, behind one async interface.

`AuthStore` is the contract; `KvAuthStore` keeps it once, over the small atomic operations of
`gateway.store.kv.KeyValueStore`, so the same code runs on one process (`MemoryStore`: a
`MemoryKV`) and across replicas (a `RedisKV`). The rules:

- **One method per atomic step.** Whatever must not be split by a concurrent request is a single
  method: `consume_code`, `rotate`, `take_login`, `revoke_family`, `record_jti`, `start_family`.
  Each is built from `take` (GETDEL) or an optimistic `compare_and_set` loop over one key,
  never from a read then a blind write, so two replicas racing on one code or refresh token
  cannot both win.
- **Secrets are kept only as SHA-256 digests.** Codes, refresh tokens and login `state` are
  looked up by the hex digest of the value; client secrets are stored as digests and compared
  in constant time. Looking up a digest in a map leaks nothing useful through timing: the values
  are long random strings, so an attacker cannot steer the digest. Two things are stored in
  clear because they must be used later: the upstream PKCE verifier and nonce of a login.
- **Times are absolute** (Unix seconds). Records carry their own `expires_at`; a method that
  decides whether something is still valid takes `now` (the caller's one reading of the clock
  for the request) and compares with it. Storage lifetimes are housekeeping only: Redis may use
  PEXPIREAT, and must still compare `expires_at` with `now`.
- **Unknown means refused.** An expired, evicted, revoked or never-issued item all read as
  absent, so losing state (eviction, restart) fails closed: a user signs in again.

A *token family* is everything issued from one authorization code: the access tokens (by `jti`)
and the refresh-token chain. It is created when the code is redeemed, so a replay of the code,
or reuse of a rotated refresh token, revokes all of it (RFC 6749 sections 4.1.2 and 10.4;
RFC 9700 section 4.14). A refresh token is `<handle>.<secret>`: the handle (fixed for the
family, stored as a digest) finds the family, and the whole token's digest must equal the
family's current one. So any token of the family that is not the newest, however old, is
recognised as reuse, with O(1) memory per family.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from types import MappingProxyType, UnionType
from typing import Any, Protocol, TypeVar, Union, get_args, get_origin, get_type_hints

from gateway.errors import StoreUnavailableError
from gateway.store.kv import KeyValueStore
from gateway.store.memory import MemoryKV

CODE_REPLAY_MEMORY = 600.0
"""Seconds a redeemed code is remembered after its expiry, so a late replay still revokes."""

REVOCATION_MARGIN = 300.0
"""Seconds a revoked `jti` is remembered after its token's `exp`: at least the validator's
largest allowed clock leeway, during which an expired token is still accepted."""

NO_CLIENT_AUTH = "none"
"""`token_endpoint_auth_method` of a public client (RFC 7591 section 2)."""


def digest(secret: str) -> str:
    """The SHA-256 hex digest under which a secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_digest: str) -> bool:
    """Whether `secret` hashes to `stored_digest`, compared in constant time."""
    return hmac.compare_digest(digest(secret), stored_digest)


def _frozen(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy, detached from the caller's (possibly nested) objects."""
    return MappingProxyType(copy.deepcopy(dict(claims)))


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A registered client (RFC 7591 section 2 metadata, as far as the gateway uses it)."""

    client_id: str
    redirect_uris: tuple[str, ...]
    created_at: float
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    token_endpoint_auth_method: str = NO_CLIENT_AUTH
    client_name: str | None = None
    scope: frozenset[str] | None = None
    """Scopes the client may request; None: not limited by registration."""
    secret_hash: str | None = None
    """`digest(client_secret)` for a confidential client; never the secret itself."""

    def __post_init__(self) -> None:
        public = self.token_endpoint_auth_method == NO_CLIENT_AUTH
        if public != (self.secret_hash is None):
            raise ValueError("a secret hash goes with, and only with, a secret-based auth method")
        if self.secret_hash is not None and not _is_digest(self.secret_hash):
            raise ValueError("secret_hash must be digest(secret), not the secret")

    def secret_matches(self, secret: str) -> bool:
        """Client authentication (RFC 6749 section 2.3.1), in constant time; False when public."""
        return self.secret_hash is not None and secret_matches(secret, self.secret_hash)


def _is_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked `/authorize` request waiting for the user to sign in and consent."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    """PKCE S256 challenge (RFC 7636 section 4.2); `plain` is never accepted."""
    resource: str
    scopes: frozenset[str]
    state: str | None = None
    """The client's `state`, returned unchanged."""
    prompt: frozenset[str] = frozenset()
    """OpenID Connect Core section 3.1.2.1 `prompt` values (`none`, `login`, `consent`)."""
    max_age: int | None = None
    """Seconds since the user's last sign-in beyond which they must sign in again."""


CONSENT_STAGE = "consent"
"""The user decides on the consent form (with `subject` set: already signed in)."""
SIGN_IN_STAGE = "sign_in"
"""The user approved and now signs in on the local form."""
UPSTREAM_STAGE = "upstream"
"""The user approved and now signs in at the upstream provider."""


@dataclass(frozen=True, slots=True)
class LoginTxn:
    """A pending authorization between `/authorize` and the code, found again by its `state`
    (single use): first the consent form, then the sign-in (at the upstream provider or the
    local form) unless the browser's sign-in session already names the user."""

    request: AuthorizationRequest
    expires_at: float
    stage: str = CONSENT_STAGE
    browser: str | None = None
    """Digest of the browser's flow cookie: the next step must come from the same browser."""
    code_verifier: str | None = None
    """Our PKCE verifier for the upstream provider's token endpoint (kept in clear: it is sent)."""
    nonce: str | None = None
    """Must come back in the upstream ID token (OpenID Connect Core section 3.1.2.1)."""
    subject: str | None = None
    """The signed-in user, once known."""
    claims: Mapping[str, Any] = field(default_factory=dict)
    auth_time: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", _frozen(self.claims))


@dataclass(frozen=True, slots=True)
class SignInSession:
    """A browser's sign-in at the gateway, found by the digest of its cookie. It holds what
    the grant rules and tokens need, never a password."""

    subject: str
    auth_time: float
    expires_at: float
    """Absolute end (the sign-in plus `max_lifetime`), however often it is used."""
    last_used: float
    """With the idle timeout: when it ends unless used again."""
    claims: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", _frozen(self.claims))


@dataclass(frozen=True, slots=True)
class CodeGrant:
    """What an authorization code stands for; checked at `/token` against the request."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    resource: str
    scopes: frozenset[str]
    subject: str
    auth_time: float
    expires_at: float
    claims: Mapping[str, Any] = field(default_factory=dict)
    """The user's upstream claims the token endpoint still needs (e.g. for identity headers)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", _frozen(self.claims))


@dataclass(frozen=True, slots=True)
class FamilyGrant:
    """What a token family may issue: its scopes are the ceiling for every refresh."""

    family_id: str
    client_id: str
    subject: str
    resource: str
    scopes: frozenset[str]
    auth_time: float
    expires_at: float
    """Absolute end of the family: no refresh after it, however often it rotated."""
    claims: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", _frozen(self.claims))


@dataclass(frozen=True, slots=True)
class CodeRedemption:
    """First use of a code: its grant, and the token family everything it issues belongs to."""

    grant: CodeGrant
    family_id: str

    def family(self, expires_at: float) -> FamilyGrant:
        """The grant for `start_family`, ending at `expires_at`."""
        grant = self.grant
        return FamilyGrant(
            family_id=self.family_id,
            client_id=grant.client_id,
            subject=grant.subject,
            resource=grant.resource,
            scopes=grant.scopes,
            auth_time=grant.auth_time,
            expires_at=expires_at,
            claims=grant.claims,
        )


@dataclass(frozen=True, slots=True)
class CodeReplay:
    """A code used again. The store has already revoked `family_id`; the caller refuses and
    logs it (`invalid_grant`)."""

    family_id: str


@dataclass(frozen=True, slots=True)
class Rotated:
    """A refresh succeeded: the client gets `refresh_token` (the old one is now spent) and an
    access token for `scopes`."""

    refresh_token: str
    grant: FamilyGrant
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Reused:
    """A refresh token that had already been rotated: the whole family is now revoked."""

    family_id: str


@dataclass(frozen=True, slots=True)
class ScopeNotGranted:
    """A refresh asked for scopes beyond the family's grant (`invalid_scope`, RFC 6749
    section 5.2). Nothing changed: the presented refresh token is still the current one."""

    extra: frozenset[str]


# -- the contract -------------------------------------------------------------------------------


class AuthStore(Protocol):
    """The authorization server's state. Each method is atomic with respect to the others.

    What a shared (Redis) implementation must guarantee, beyond the method contracts below:
    `consume_code` marks the code used, and on a replay revokes the family, in one step;
    `rotate` compares the presented digest with the family's current one and either swaps in
    the new digest or revokes the family, in one step; `record_jti` and `start_family` write
    only if the family still exists, in one step (so a concurrent revocation cannot be
    missed); `take_login` is a GETDEL; `revoke_family` deletes the family and its handle and
    adds its `jti`s to the revoked set together. A failing or unreachable store raises: no
    method may answer as if the item were valid when it could not tell.
    """

    async def save_client(self, client: ClientRecord) -> None:
        """Register or replace `client`."""

    async def get_client(self, client_id: str) -> ClientRecord | None: ...

    async def begin_login(self, txn: LoginTxn) -> str:
        """Store `txn` and return the `state` (256 random bits) to send upstream."""

    async def take_login(self, state: str, now: float) -> LoginTxn | None:
        """The transaction for `state`, removed: single use, whatever comes next. None when
        unknown, already taken or expired."""

    async def issue_code(self, grant: CodeGrant) -> str:
        """Store `grant` and return its authorization code (256 random bits)."""

    async def consume_code(self, code: str, now: float) -> CodeRedemption | CodeReplay | None:
        """Redeem `code` once. The first use returns the grant and a new family id; any later
        use revokes that family and returns `CodeReplay`; an expired or unknown code is None.
        The code counts as used even if the caller then refuses the request (wrong verifier,
        client or redirect URI)."""

    async def record_jti(self, family_id: str, jti: str, expires_at: float) -> bool:
        """Note an access token issued in the family, so revoking the family revokes it. In a
        family already revoked (a replay or reuse won the race) the `jti` is revoked at once:
        a replay revokes what the code issued, also what it issues after the replay. False: do
        not hand the token out (the family is unknown, or holds too many live tokens)."""

    async def start_family(self, grant: FamilyGrant) -> str | None:
        """Start the family's refresh-token chain; returns its first refresh token. None when
        the family is revoked (a code replay won the race), unknown, or already started."""

    async def rotate(
        self, refresh_token: str, now: float, *, client_id: str, scopes: frozenset[str] | None
    ) -> Rotated | Reused | ScopeNotGranted | None:
        """Use a refresh token (RFC 6749 section 6). Every use rotates it. A token of the family
        that is not its newest revokes the family (`Reused`). `scopes` None means the family's
        scopes; more than those is `ScopeNotGranted` and rotates nothing; fewer is granted for
        this access token only: the family keeps its original scopes as the ceiling. None:
        unknown, revoked, expired, or issued to another client (the token stays as it was)."""

    async def revoke(self, token: str, *, client_id: str) -> bool:
        """RFC 7009: revoke the family of a refresh token issued to `client_id`. Unknown tokens
        and other clients' tokens change nothing (the endpoint answers 200 either way)."""

    async def revoke_family(self, family_id: str) -> None:
        """Revoke every token of the family: refresh tokens stop working and its access tokens'
        `jti`s are revoked until they expire. Idempotent."""

    async def revoke_jti(self, jti: str, expires_at: float) -> None:
        """Revoke one access token (e.g. one presented to the revocation endpoint)."""

    async def is_revoked_jti(self, jti: str) -> bool: ...

    async def record_consent(
        self, subject: str, client_id: str, scopes: Iterable[str], expires_at: float
    ) -> None:
        """The user approved `scopes` for the client until `expires_at`; added to what they
        approved before (each scope keeps its own expiry, the latest decision wins)."""

    async def consented_scopes(self, subject: str, client_id: str, now: float) -> frozenset[str]:
        """Scopes the user has approved for the client and that have not expired."""

    async def start_session(self, session: SignInSession, idle_timeout: float) -> str:
        """Store a sign-in session; returns its cookie value (256 random bits)."""

    async def find_session(
        self, cookie: str, now: float, idle_timeout: float
    ) -> SignInSession | None:
        """The live session `cookie` names, marked used at `now`; None when unknown, ended,
        idle for `idle_timeout` seconds or past its absolute end."""

    async def end_session(self, cookie: str) -> None:
        """End the session `cookie` names (sign-out); idempotent."""


# -- over a key-value store ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """How many of each kind a `MemoryStore` keeps; past that, the least recently used goes
    first."""

    clients: int = 10_000
    logins: int = 10_000
    codes: int = 10_000
    families: int = 100_000
    revoked_jtis: int = 100_000
    """Size it above revocations per access-token lifetime: forgetting a revocation early
    makes that token valid again until its `exp` (counted in `MemoryStore.evicted`)."""
    consents: int = 100_000
    sessions: int = 100_000
    jtis_per_family: int = 100
    """Live access tokens one family may hold (also the limit of a `KvAuthStore`)."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            if getattr(self, spec.name) < 1:
                raise ValueError(f"{spec.name} must be at least 1")

    def namespaces(self) -> dict[str, int]:
        """The `MemoryKV` limits: one namespace per kind (a family's handle goes with it)."""
        return {
            "clients": self.clients,
            "logins": self.logins,
            "codes": self.codes,
            "families": self.families,
            "handles": self.families,
            "revoked_jtis": self.revoked_jtis,
            "consents": self.consents,
            "sessions": self.sessions,
        }


JTIS_PER_FAMILY = MemoryLimits().jtis_per_family
CLIENT_LIFETIME = 400 * 86_400.0
"""Seconds a dynamically registered client is kept after registering: longer than any refresh
token it can hold (`refresh_token_lifetime` is at most 365 days)."""
CAS_ATTEMPTS = 32
"""Optimistic retries of one step before it gives up (503): each failed attempt means another
request changed the same item, so this is reached only under pathological contention."""


def _encode(value: Any) -> Any:
    """JSON-ready form of a record: dataclasses as objects, sets sorted, mappings as dicts."""
    if is_dataclass(value) and not isinstance(value, type):
        return {spec.name: _encode(getattr(value, spec.name)) for spec in fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [_encode(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _dumps(value: Any) -> bytes:
    return json.dumps(_encode(value), separators=(",", ":"), sort_keys=True).encode()


R = TypeVar("R")


def _decode(cls: type[R], data: Mapping[str, Any]) -> R:
    """A record of type `cls` from its `_encode`d form (the field types say what to rebuild)."""
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for spec in fields(cls):  # type: ignore[arg-type]
        if spec.name not in data:
            continue
        raw, hint = data[spec.name], hints[spec.name]
        values[spec.name] = _rebuild(hint, raw)
    return cls(**values)


def _rebuild(hint: Any, raw: Any) -> Any:
    if raw is None:
        return None
    origin = get_origin(hint)
    if origin is frozenset:
        return frozenset(raw)
    if origin is tuple:
        return tuple(raw)
    if origin in (Union, UnionType):
        for option in get_args(hint):
            if option is not type(None):
                return _rebuild(option, raw)
    if isinstance(hint, type) and is_dataclass(hint):
        return _decode(hint, raw)
    return raw


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

    async def _read(self, cls: type[R], key: str) -> tuple[bytes, R] | None:
        raw = await self.kv.get(key)
        return None if raw is None else (raw, _decode(cls, json.loads(raw)))

    # -- clients --------------------------------------------------------------------------------

    async def save_client(self, client: ClientRecord) -> None:
        await self.kv.set(f"clients:{client.client_id}", _dumps(client), CLIENT_LIFETIME)

    async def get_client(self, client_id: str) -> ClientRecord | None:
        found = await self._read(ClientRecord, f"clients:{client_id}")
        return None if found is None else found[1]

    # -- login transactions ---------------------------------------------------------------------

    async def begin_login(self, txn: LoginTxn) -> str:
        state = secrets.token_urlsafe(32)
        ttl = _ttl(txn.expires_at, self._clock())
        await self.kv.set(f"logins:{digest(state)}", _dumps(txn), ttl)
        return state

    async def take_login(self, state: str, now: float) -> LoginTxn | None:
        raw = await self.kv.take(f"logins:{digest(state)}")
        if raw is None:
            return None
        txn = _decode(LoginTxn, json.loads(raw))
        return txn if txn.expires_at > now else None

    # -- authorization codes --------------------------------------------------------------------

    async def issue_code(self, grant: CodeGrant) -> str:
        code = secrets.token_urlsafe(32)
        entry = _Code(grant, family_id=secrets.token_urlsafe(16))
        ttl = _ttl(entry.expires_at, self._clock())
        await self.kv.set(f"codes:{digest(code)}", _dumps(entry), ttl)
        return code

    async def consume_code(self, code: str, now: float) -> CodeRedemption | CodeReplay | None:
        key = f"codes:{digest(code)}"
        for _ in range(CAS_ATTEMPTS):
            found = await self._read(_Code, key)
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
            if await self.kv.compare_and_set(key, raw, _dumps(used), ttl):
                # Only if absent: a replay that revoked the family first left a tombstone.
                await self.kv.compare_and_set(
                    f"families:{entry.family_id}", None, _dumps(_Family(used.expires_at)), ttl
                )
                return CodeRedemption(entry.grant, entry.family_id)
        raise StoreUnavailableError("authorization code: too much contention")

    # -- token families -------------------------------------------------------------------------

    async def record_jti(self, family_id: str, jti: str, expires_at: float) -> bool:
        key = f"families:{family_id}"
        for _ in range(CAS_ATTEMPTS):
            found = await self._read(_Family, key)
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
            if await self.kv.compare_and_set(key, raw, _dumps(grown), _ttl(grown.expires_at, now)):
                return True
        raise StoreUnavailableError("token family: too much contention")

    async def start_family(self, grant: FamilyGrant) -> str | None:
        key = f"families:{grant.family_id}"
        for _ in range(CAS_ATTEMPTS):
            found = await self._read(_Family, key)
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
            if await self.kv.compare_and_set(key, raw, _dumps(started), ttl):
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
        found = await self._read(_Family, f"families:{family_id.decode()}")
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
            if await self.kv.compare_and_set(f"families:{family_id}", raw, _dumps(rotated), ttl):
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
            found = await self._read(_Family, key)
            if found is None:
                tombstone = _Family(now + CODE_REPLAY_MEMORY, revoked=True)
                if await self.kv.compare_and_set(key, None, _dumps(tombstone), CODE_REPLAY_MEMORY):
                    return
                continue
            raw, family = found
            if family.revoked:
                return
            revoked = _Family(family.expires_at, handle=family.handle, revoked=True)
            if await self.kv.compare_and_set(
                key, raw, _dumps(revoked), _ttl(family.expires_at, now)
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
            approved: dict[str, float] = json.loads(raw) if raw is not None else {}
            approved.update(dict.fromkeys(scopes, expires_at))
            live = {s: exp for s, exp in approved.items() if exp > now}
            ttl = _ttl(max(live.values(), default=now), now)
            if await self.kv.compare_and_set(key, raw, _dumps(live), ttl):
                return
        raise StoreUnavailableError("consent: too much contention")

    async def consented_scopes(self, subject: str, client_id: str, now: float) -> frozenset[str]:
        raw = await self.kv.get(_consent_key(subject, client_id))
        approved: dict[str, float] = json.loads(raw) if raw is not None else {}
        return frozenset(scope for scope, expires_at in approved.items() if expires_at > now)

    # -- sign-in sessions -----------------------------------------------------------------------

    async def start_session(self, session: SignInSession, idle_timeout: float) -> str:
        cookie = secrets.token_urlsafe(32)
        ttl = _ttl(min(session.expires_at, session.last_used + idle_timeout), self._clock())
        await self.kv.set(f"sessions:{digest(cookie)}", _dumps(session), ttl)
        return cookie

    async def find_session(
        self, cookie: str, now: float, idle_timeout: float
    ) -> SignInSession | None:
        key = f"sessions:{digest(cookie)}"
        found = await self._read(SignInSession, key)
        if found is None:
            return None
        raw, session = found
        if session.expires_at <= now or session.last_used + idle_timeout <= now:
            return None
        used = replace(session, last_used=max(now, session.last_used))
        ttl = _ttl(min(used.expires_at, used.last_used + idle_timeout), self._clock())
        # A concurrent use or sign-out changed it: either way this use needs no write.
        await self.kv.compare_and_set(key, raw, _dumps(used), ttl)
        return used

    async def end_session(self, cookie: str) -> None:
        await self.kv.delete(f"sessions:{digest(cookie)}")


def _consent_key(subject: str, client_id: str) -> str:
    return "consents:" + digest(json.dumps([subject, client_id]))


class MemoryStore(KvAuthStore):
    """`AuthStore` for one process (the embedded default): a `KvAuthStore` over a bounded
    `MemoryKV`. Nothing in it awaits, so each method also runs whole on the event loop."""

    def __init__(
        self, limits: MemoryLimits | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits = limits or MemoryLimits()
        self.memory = MemoryKV(limits.namespaces(), clock=clock)
        super().__init__(self.memory, clock=clock, jtis_per_family=limits.jtis_per_family)

    @property
    def evicted(self) -> Counter[str]:
        """Entries dropped for room, by kind (expired ones are not counted)."""
        return self.memory.evicted
