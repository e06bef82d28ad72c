"""The authorization server's state: clients, login transactions, authorization codes, token
families, revoked access tokens and consent, behind one async interface.

`AuthStore` is the contract (its records are in `gateway.oauth.records`); `KvAuthStore`
(`gateway.oauth.kv_store`) keeps it once, over the small atomic operations of
`gateway.store.kv.KeyValueStore`, so the same code runs on one process (`MemoryStore`, in
`gateway.oauth.memory_store`: a `MemoryKV`) and across replicas (a `RedisKV`). The rules:

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
  absent, so losing state (eviction, restart) fails closed: a user signs in again. A stored
  value that does not read back as its record (corruption) raises, never reads as absent.

A *token family* is everything issued from one authorization code: the access tokens (by `jti`)
and the refresh-token chain. It is created when the code is redeemed, so a replay of the code,
or reuse of a rotated refresh token, revokes all of it (RFC 6749 sections 4.1.2 and 10.4;
RFC 9700 section 4.14). A refresh token is `<handle>.<secret>`: the handle (fixed for the
family, stored as a digest) finds the family, and the whole token's digest must equal the
family's current one. So any token of the family that is not the newest, however old, is
recognised as reuse, with O(1) memory per family.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from gateway.oauth.records import (
    ClientRecord,
    CodeGrant,
    CodeRedemption,
    CodeReplay,
    FamilyGrant,
    LoginTxn,
    PageSignIn,
    Reused,
    Rotated,
    ScopeNotGranted,
    SignInSession,
)

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

    async def begin_page_sign_in(self, txn: PageSignIn) -> str:
        """Store `txn`; its `state` (`PAGE_STATE_PREFIX` and 256 random bits)."""

    async def take_page_sign_in(self, state: str, now: float) -> PageSignIn | None:
        """As `take_login`, for a page sign-in."""

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
