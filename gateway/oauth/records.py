"""What the authorization server keeps (clients, login transactions, sign-in sessions, the
grants behind codes and token families) and what its store answers, as frozen dataclasses.

The kept records are written to the key-value store as JSON through one pydantic
`TypeAdapter` each (`RecordCodec`), read back strictly: a stored value that does not validate
as its type raises `StoredRecordError`, it never reads as absent or as a valid record.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Generic, TypeVar

from pydantic import PlainSerializer, TypeAdapter, ValidationError

NO_CLIENT_AUTH = "none"
"""`token_endpoint_auth_method` of a public client (RFC 7591 section 2)."""


def digest(secret: str) -> str:
    """The SHA-256 hex digest under which a secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_digest: str) -> bool:
    """Whether `secret` hashes to `stored_digest`, compared in constant time."""
    return hmac.compare_digest(digest(secret), stored_digest)


def _is_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _frozen(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy, detached from the caller's (possibly nested) objects."""
    return MappingProxyType(copy.deepcopy(dict(claims)))


Claims = Annotated[Mapping[str, Any], PlainSerializer(dict, return_type=dict[str, Any])]
"""A user's claims: read-only once in a record (`_frozen`), written as a JSON object."""


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

PAGE_STATE_PREFIX = "p."
"""Starts the `state` of a page sign-in (never that of a client's login, which is base64url):
the sign-in form and the provider's callback tell the two kinds apart without a store read."""


def names_page_sign_in(state: str) -> bool:
    """Whether `state` would name a page sign-in (not whether one exists)."""
    return state.startswith(PAGE_STATE_PREFIX)


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
    claims: Claims = field(default_factory=dict)
    auth_time: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", _frozen(self.claims))


@dataclass(frozen=True, slots=True)
class PageSignIn:
    """A sign-in with no client behind it: one of the gateway's own pages (a connect page)
    found the browser signed in as nobody and gets it back once the user has signed in. Found
    again by its `state` (single use), only in the browser whose flow cookie began it."""

    return_to: str
    """The same-origin path (and query) to go back to; checked by `page_sign_in.returnable`."""
    purpose: str
    """What the sign-in is for, in words for the sign-in page (plain text)."""
    expires_at: float
    stage: str
    """`SIGN_IN_STAGE` (the local form) or `UPSTREAM_STAGE` (the OpenID provider)."""
    browser: str
    """Digest of the browser's flow cookie."""
    code_verifier: str | None = None
    nonce: str | None = None


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
    claims: Claims = field(default_factory=dict)

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
    claims: Claims = field(default_factory=dict)
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
    claims: Claims = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", _frozen(self.claims))


# -- what the store answers ---------------------------------------------------------------------


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


# -- how records are stored ---------------------------------------------------------------------

R = TypeVar("R")


class StoredRecordError(ValueError):
    """A stored value that does not read back as its record type: not JSON, a field missing or
    of the wrong type, or a record's own check refusing it (corruption, or another program
    writing under the key prefix). Deliberately not a `GatewayError`: like any unexpected
    failure it is logged with its traceback (`request_failed`) and answered 500, so the request
    fails closed. The message names the record type and the failing fields, never the stored
    value (it can hold a PKCE verifier, a nonce or a user's claims)."""

    def __init__(self, record_type: str, error: ValidationError) -> None:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '(value)'}: {problem['type']}"
            for problem in error.errors(
                include_url=False, include_context=False, include_input=False
            )
        )
        super().__init__(f"a stored {record_type} does not validate ({problems})")
        self.record_type = record_type


class RecordCodec(Generic[R]):
    """One record type's JSON form in the key-value store, through a pydantic `TypeAdapter`
    built once. Reading is strict (no coercion: we wrote the value, so anything off is
    corruption) and parses the bytes once."""

    def __init__(self, record_type: type[R], name: str | None = None) -> None:
        self._adapter = TypeAdapter(record_type)
        self._name = name or record_type.__name__

    def dump(self, record: R) -> bytes:
        return self._adapter.dump_json(record)

    def load(self, raw: bytes) -> R:
        """The record `raw` holds; `StoredRecordError` when it does not validate."""
        try:
            return self._adapter.validate_json(raw, strict=True)
        except ValidationError as error:
            raise StoredRecordError(self._name, error) from None


CLIENT_RECORDS = RecordCodec(ClientRecord)
LOGIN_TXNS = RecordCodec(LoginTxn)
SIGN_IN_SESSIONS = RecordCodec(SignInSession)
PAGE_SIGN_INS = RecordCodec(PageSignIn, "page sign-in")
