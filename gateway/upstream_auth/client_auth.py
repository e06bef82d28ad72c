"""How the gateway authenticates itself as an OAuth client at another server's token endpoint.

Three methods (the `token_endpoint_auth_method` names of RFC 7591 section 2):
`client_secret_basic` (RFC 6749 section 2.3.1: id and secret each form-urlencoded, then
HTTP Basic), `client_secret_post` (the same section: both in the request body) and
`private_key_jwt` (RFC 7523 section 2.2, OpenID Connect Core section 9: a short-lived JWT
signed with the client's private key, `iss` = `sub` = the client id, `aud` = the token
endpoint, a unique `jti`). Each gives what one token request carries: form fields and an
`Authorization` header. Free of any web framework, so every kind of upstream credential that
talks to a token endpoint can reuse it.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import quote_plus

from joserfc import jwt

from gateway.oauth.signing import SigningKey

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""`client_assertion_type` of a JWT client assertion (RFC 7523 section 2.2)."""
ASSERTION_LIFETIME = 60
"""Seconds a client assertion is valid: it is made for one request and sent at once."""


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What one token request carries to authenticate the client."""

    form: dict[str, str] = field(repr=False)
    """Form fields to add to the request body."""
    authorization: str | None = field(default=None, repr=False)
    """The `Authorization` header's value, if the method uses one."""


class ClientAuthentication(Protocol):
    """One client's way of authenticating at token endpoints."""

    @property
    def method(self) -> ClientAuthMethod: ...

    @property
    def client_id(self) -> str: ...

    def credentials(self, endpoint: str) -> ClientCredentials:
        """What a request to `endpoint` (the token endpoint's URL) carries; fresh each time."""


@dataclass(frozen=True, slots=True)
class ClientSecretBasic:
    """RFC 6749 section 2.3.1: `Authorization: Basic` of the form-urlencoded id and secret."""

    client_id: str
    secret: str = field(repr=False)
    method: ClientAuthMethod = "client_secret_basic"

    def credentials(self, endpoint: str) -> ClientCredentials:
        # Each part is form-urlencoded first (section 2.3.1), so a ':' in the id stays apart.
        pair = f"{quote_plus(self.client_id, safe='')}:{quote_plus(self.secret, safe='')}"
        return ClientCredentials({}, "Basic " + base64.b64encode(pair.encode()).decode("ascii"))


@dataclass(frozen=True, slots=True)
class ClientSecretPost:
    """RFC 6749 section 2.3.1: `client_id` and `client_secret` in the request body."""

    client_id: str
    secret: str = field(repr=False)
    method: ClientAuthMethod = "client_secret_post"

    def credentials(self, endpoint: str) -> ClientCredentials:
        return ClientCredentials({"client_id": self.client_id, "client_secret": self.secret})


@dataclass(frozen=True, slots=True)
class PrivateKeyJwt:
    """RFC 7523 section 2.2 / OpenID Connect Core section 9: a signed client assertion.

    Claims: `iss` and `sub` the client id, `aud` the token endpoint, `jti` 128 random bits,
    `iat`, `exp` a minute later. Header: `alg` (ES256 or RS256, from the key) and `kid` (the
    key's RFC 7638 thumbprint, so the server can pick it from the client's JWKS).
    """

    client_id: str
    key: SigningKey = field(repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)
    method: ClientAuthMethod = "private_key_jwt"

    def credentials(self, endpoint: str) -> ClientCredentials:
        now = int(self.clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": endpoint,
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        header = {"alg": self.key.alg, "kid": self.key.kid, "typ": "JWT"}
        assertion = jwt.encode(header, claims, self.key.key, algorithms=[self.key.alg])
        return ClientCredentials(
            {
                "client_id": self.client_id,
                "client_assertion_type": JWT_BEARER_ASSERTION,
                "client_assertion": assertion,
            }
        )


def client_authentication(
    method: ClientAuthMethod,
    client_id: str,
    *,
    client_secret: str | None = None,
    private_key: str | None = None,
    clock: Callable[[], float] = time.time,
) -> ClientAuthentication:
    """The client authentication of `method`, from configured values (validated already: the
    secret for the secret methods, the key for `private_key_jwt`). A key that does not load
    raises `SigningKeyError`, whose message never holds the key."""
    match method:
        case "client_secret_basic" | "client_secret_post":
            if client_secret is None:
                raise ValueError(f"{method} needs a client secret")
            kind = ClientSecretBasic if method == "client_secret_basic" else ClientSecretPost
            return kind(client_id, client_secret)
        case "private_key_jwt":
            if private_key is None:
                raise ValueError("private_key_jwt needs a private key")
            return PrivateKeyJwt(client_id, SigningKey.from_text(private_key), clock)
