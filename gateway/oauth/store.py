"""The authorization server's state: clients, login transactions, authorization codes, token
families, revoked access tokens and consent, behind one async interface.

`AuthStore` is the contract; `MemoryStore` keeps it for one process, and a Redis store (issue 7)
must keep the same semantics across replicas. The rules both follow:

- **One method per atomic step.** Whatever must not be split by a concurrent request is a single
  method: `consume_code`, `rotate`, `take_login`, `revoke_family`, `record_jti`, `start_family`.
  Redis implements each as one Lua script (or GETDEL), never as a read then a write.
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
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

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


@dataclass(frozen=True, slots=True)
class LoginTxn:
    """A pending authorization between `/authorize` and the code, found again by its `state`:
    while the user signs in (at the upstream provider or the local form) and, with `subject`
    set, while they decide on the consent form."""

    request: AuthorizationRequest
    expires_at: float
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
        """Note an access token issued in the family, so revoking the family revokes it. False:
        do not hand the token out (the family is revoked, unknown, or holds too many live
        tokens)."""

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


# -- one process --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """How many of each kind a `MemoryStore` keeps; past that, the oldest goes first."""

    clients: int = 10_000
    logins: int = 10_000
    codes: int = 10_000
    families: int = 100_000
    revoked_jtis: int = 100_000
    """Size it above revocations per access-token lifetime: forgetting a revocation early
    makes that token valid again until its `exp` (counted in `MemoryStore.evicted`)."""
    consents: int = 100_000
    jtis_per_family: int = 100

    def __post_init__(self) -> None:
        for spec in fields(self):
            if getattr(self, spec.name) < 1:
                raise ValueError(f"{spec.name} must be at least 1")


K = TypeVar("K")
V = TypeVar("V")


class _Bounded(Generic[K, V]):
    """An insertion-ordered map with a size limit and per-entry expiry, purged lazily: expired
    entries go when read, and from the oldest end on every write; past the limit the oldest
    entry is evicted."""

    def __init__(
        self,
        kind: str,
        limit: int,
        expiry: Callable[[V], float],
        evicted: Counter[str],
        on_drop: Callable[[V], None] = lambda value: None,
    ) -> None:
        self._kind = kind
        self._limit = limit
        self._expiry = expiry
        self._evicted = evicted
        self._on_drop = on_drop
        self.entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, now: float) -> V | None:
        value = self.entries.get(key)
        if value is not None and self._expiry(value) <= now:
            self.pop(key)
            return None
        return value

    def put(self, key: K, value: V, now: float) -> None:
        self.purge(now)
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self._limit:
            _, oldest = self.entries.popitem(last=False)
            self._on_drop(oldest)
            self._evicted[self._kind] += 1

    def pop(self, key: K) -> V | None:
        value = self.entries.pop(key, None)
        if value is not None:
            self._on_drop(value)
        return value

    def purge(self, now: float) -> None:
        entries = self.entries
        while entries:
            key, value = next(iter(entries.items()))
            if self._expiry(value) > now:
                return
            del entries[key]
            self._on_drop(value)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True, slots=True)
class _Code:
    grant: CodeGrant
    family_id: str
    used: bool = False

    @property
    def expires_at(self) -> float:
        return self.grant.expires_at + (CODE_REPLAY_MEMORY if self.used else 0.0)


@dataclass(slots=True)
class _Family:
    expires_at: float
    """The latest of: its grant's end, its last access token's `exp` (plus the revocation
    margin), and its code's replay memory."""
    grant: FamilyGrant | None = None
    handle: str | None = None
    """Digest of its refresh tokens' handle."""
    current: str | None = None
    """Digest of its newest refresh token."""
    jtis: dict[str, float] = field(default_factory=dict)
    """Access tokens issued in it -> their `exp`."""


def _expires_at(value: Any) -> float:
    return float(value.expires_at)


def _consent_expiry(scopes: Mapping[str, float]) -> float:
    return max(scopes.values(), default=0.0)


class MemoryStore:
    """`AuthStore` for one process. No method awaits anything, so each runs whole on the event
    loop: that is its atomicity. `clock` dates housekeeping (purging expired entries); validity
    decisions use the `now` the caller passes."""

    def __init__(
        self, limits: MemoryLimits | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits = limits or MemoryLimits()
        self._clock = clock
        self.evicted: Counter[str] = Counter()
        """Entries dropped for room, by kind (expired ones are not counted)."""
        self._clients: OrderedDict[str, ClientRecord] = OrderedDict()
        self._logins = _Bounded[str, LoginTxn]("logins", limits.logins, _expires_at, self.evicted)
        self._codes = _Bounded[str, _Code]("codes", limits.codes, _expires_at, self.evicted)
        self._handles: dict[str, str] = {}  # digest(handle) -> family id
        self._families = _Bounded[str, _Family](
            "families", limits.families, _expires_at, self.evicted, self._forget_handle
        )
        self._revoked_jtis = _Bounded[str, float](
            "revoked_jtis", limits.revoked_jtis, float, self.evicted
        )
        self._consents = _Bounded[tuple[str, str], dict[str, float]](
            "consents", limits.consents, _consent_expiry, self.evicted
        )

    def _forget_handle(self, family: _Family) -> None:
        if family.handle is not None:
            self._handles.pop(family.handle, None)

    # -- clients --------------------------------------------------------------------------------

    async def save_client(self, client: ClientRecord) -> None:
        self._clients[client.client_id] = client
        self._clients.move_to_end(client.client_id)
        while len(self._clients) > self.limits.clients:
            self._clients.popitem(last=False)
            self.evicted["clients"] += 1

    async def get_client(self, client_id: str) -> ClientRecord | None:
        """The client, if registered; a client in use is the last to be evicted."""
        client = self._clients.get(client_id)
        if client is not None:
            self._clients.move_to_end(client_id)
        return client

    # -- login transactions ---------------------------------------------------------------------

    async def begin_login(self, txn: LoginTxn) -> str:
        state = secrets.token_urlsafe(32)
        self._logins.put(digest(state), txn, self._clock())
        return state

    async def take_login(self, state: str, now: float) -> LoginTxn | None:
        txn = self._logins.pop(digest(state))
        if txn is None or txn.expires_at <= now:
            return None
        return txn

    # -- authorization codes --------------------------------------------------------------------

    async def issue_code(self, grant: CodeGrant) -> str:
        code = secrets.token_urlsafe(32)
        entry = _Code(grant, family_id=secrets.token_urlsafe(16))
        self._codes.put(digest(code), entry, self._clock())
        return code

    async def consume_code(self, code: str, now: float) -> CodeRedemption | CodeReplay | None:
        key = digest(code)
        entry = self._codes.get(key, now)
        if entry is None:
            return None
        if entry.used:
            await self.revoke_family(entry.family_id)
            return CodeReplay(entry.family_id)
        used = replace(entry, used=True)
        self._codes.entries[key] = used  # in place: keeps its age for eviction
        self._families.put(entry.family_id, _Family(expires_at=used.expires_at), now)
        return CodeRedemption(entry.grant, entry.family_id)

    # -- token families -------------------------------------------------------------------------

    async def record_jti(self, family_id: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        family = self._families.get(family_id, now)
        if family is None:
            return False
        live = {j: exp for j, exp in family.jtis.items() if exp + REVOCATION_MARGIN > now}
        if len(live) >= self.limits.jtis_per_family:
            family.jtis = live
            return False
        family.jtis = live | {jti: expires_at}
        family.expires_at = max(family.expires_at, expires_at + REVOCATION_MARGIN)
        return True

    async def start_family(self, grant: FamilyGrant) -> str | None:
        family = self._families.get(grant.family_id, self._clock())
        if family is None or family.grant is not None:
            return None
        handle = secrets.token_urlsafe(16)
        token = f"{handle}.{secrets.token_urlsafe(32)}"
        family.grant = grant
        family.handle = digest(handle)
        family.current = digest(token)
        family.expires_at = max(family.expires_at, grant.expires_at)
        self._handles[family.handle] = grant.family_id
        return token

    def _family_of(self, refresh_token: str, now: float) -> tuple[str, _Family] | None:
        handle, dot, secret = refresh_token.partition(".")
        if not (handle and dot and secret):
            return None
        family_id = self._handles.get(digest(handle))
        family = self._families.get(family_id, now) if family_id is not None else None
        if family_id is None or family is None or family.grant is None:
            return None
        return family_id, family

    async def rotate(
        self, refresh_token: str, now: float, *, client_id: str, scopes: frozenset[str] | None
    ) -> Rotated | Reused | ScopeNotGranted | None:
        found = self._family_of(refresh_token, now)
        if found is None:
            return None
        family_id, family = found
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
        family.current = digest(new_token)
        return Rotated(new_token, grant, granted)

    async def revoke(self, token: str, *, client_id: str) -> bool:
        found = self._family_of(token, self._clock())
        if found is None:
            return False
        family_id, family = found
        assert family.grant is not None
        if family.grant.client_id != client_id:
            return False
        await self.revoke_family(family_id)
        return True

    async def revoke_family(self, family_id: str) -> None:
        # Gone means revoked: every later use of the family id or its tokens finds nothing.
        family = self._families.pop(family_id)
        if family is None:
            return
        now = self._clock()
        for jti, expires_at in family.jtis.items():
            self._revoked_jtis.put(jti, expires_at + REVOCATION_MARGIN, now)

    async def revoke_jti(self, jti: str, expires_at: float) -> None:
        self._revoked_jtis.put(jti, expires_at + REVOCATION_MARGIN, self._clock())

    async def is_revoked_jti(self, jti: str) -> bool:
        return self._revoked_jtis.get(jti, self._clock()) is not None

    # -- consent --------------------------------------------------------------------------------

    async def record_consent(
        self, subject: str, client_id: str, scopes: Iterable[str], expires_at: float
    ) -> None:
        now = self._clock()
        key = (subject, client_id)
        approved = dict(self._consents.get(key, now) or {})
        approved.update(dict.fromkeys(scopes, expires_at))
        self._consents.put(key, {s: exp for s, exp in approved.items() if exp > now}, now)

    async def consented_scopes(self, subject: str, client_id: str, now: float) -> frozenset[str]:
        approved = self._consents.get((subject, client_id), now) or {}
        return frozenset(scope for scope, expires_at in approved.items() if expires_at > now)
