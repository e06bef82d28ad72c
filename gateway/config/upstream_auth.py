"""`upstream_auth`: the credential an HTTP upstream gets for each request, of three kinds.

`mint`: a short-lived JWT the gateway signs for the upstream; `exchange`: a token from an RFC 8693
token exchange at another authorization server; `user_oauth`: the user's own token at a
third-party OAuth provider, which the gateway obtains with the user's consent and keeps encrypted.
The client's own token never reaches an upstream, whatever the kind.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.config.fields import (
    FORBIDDEN_STATIC_HEADERS,
    TOKEN_CHARS,
    ExactUrl,
    Model,
    PositiveSeconds,
    check_scope_list,
    normalized_header,
)
from gateway.config.secrets import SecretFileMixin

AUTHORIZATION = "Authorization"


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def decode_sealing_key(text: str) -> bytes:
    """A base64url AES-256 key (padding optional) as bytes; ValueError, never quoting it."""
    value = text.strip()
    if not _BASE64URL.fullmatch(value):
        raise ValueError("not a base64url key")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not a base64url key") from None
    if len(raw) != 32:
        raise ValueError(f"decodes to {len(raw)} bytes; an AES-256 key is 32")
    return raw


def _check_sealing_key(value: SecretStr) -> SecretStr:
    decode_sealing_key(value.get_secret_value())
    return value


SealingKey = Annotated[SecretStr, AfterValidator(_check_sealing_key)]


class _Injected(Model):
    header: str = Field(
        AUTHORIZATION,
        description="The upstream request header that carries the credential: `Authorization` "
        "as `Bearer <token>`, any other header as the bare token. Whatever a client sends under "
        "this name is removed first.",
    )

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        if not TOKEN_CHARS.fullmatch(value):
            raise ValueError(f"header name {value!r} is not a valid HTTP field name")
        if normalized_header(value) in FORBIDDEN_STATIC_HEADERS | {"cookie"}:
            raise ValueError(f"header {value!r} is managed by the gateway")
        return value


class MintAuth(_Injected):
    """A JWT the gateway signs for each caller (RFC 9068 shape, `act` naming the gateway), with
    the authorization server facade's signing key; verifiers find the key at `/oauth/jwks`."""

    model_config = ConfigDict(title="mint")
    kind: Literal["mint"]
    audience: str = Field(
        min_length=1,
        description="The token's `aud`: the identifier the upstream expects (often its URL). "
        "Give each upstream its own, so a token minted for one is refused by the others.",
    )
    lifetime: int = Field(
        300,
        ge=30,
        le=3600,
        description="Seconds a minted token is valid; one is reused for the same caller until "
        "shortly before it expires.",
    )


class ExchangeAuth(SecretFileMixin, _Injected):
    """A token from an RFC 8693 token exchange: the caller's validated token as the
    `subject_token`, the upstream as `audience` and/or `resource`."""

    model_config = ConfigDict(title="exchange")
    secret_fields: ClassVar[frozenset[str]] = frozenset({"client_secret", "private_key"})
    kind: Literal["exchange"]
    token_endpoint: ExactUrl = Field(description="The authorization server's token endpoint.")
    audience: str | None = Field(None, description="`audience` of the exchange request.")
    resource: ExactUrl | None = Field(None, description="`resource` of the exchange (RFC 8707).")
    scopes: list[str] | None = Field(
        None,
        description="Scopes requested. Default: the caller's scopes that the route's policy knows.",
    )
    client_id: str = Field(min_length=1, description="The gateway's client id there.")
    client_auth: Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] = Field(
        "client_secret_basic", description="How the gateway authenticates at the token endpoint."
    )
    client_secret: SecretStr | None = None
    private_key: SecretStr | None = Field(
        None, description="For `private_key_jwt`: a PEM or JWK private key (EC P-256 or RSA)."
    )
    timeout: PositiveSeconds = Field(10.0, description="Seconds for each exchange request.")

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_scope_list(value)

    @model_validator(mode="after")
    def _complete(self) -> ExchangeAuth:
        if self.audience is None and self.resource is None:
            raise ValueError("give audience or resource (or both): who the token is for")
        if self.client_auth == "private_key_jwt":
            if self.private_key is None:
                raise ValueError("private_key_jwt needs private_key")
            if self.client_secret is not None:
                raise ValueError("private_key_jwt takes private_key, not client_secret")
        elif self.client_secret is None:
            raise ValueError(f"{self.client_auth} needs client_secret")
        return self


class UserOAuth(SecretFileMixin, _Injected):
    """The user's own token at a third-party OAuth provider (GitHub, Jira, Google Drive...).

    A user without a stored grant is sent, by URL elicitation, to a gateway page that starts the
    provider's authorization-code flow (PKCE S256, `state`, RFC 9207 `iss`); the tokens are kept
    in the store encrypted (AES-GCM) per user and upstream, refreshed single-flight."""

    model_config = ConfigDict(title="user_oauth")
    secret_fields: ClassVar[frozenset[str]] = frozenset({"client_secret", "encryption_keys"})
    kind: Literal["user_oauth"]
    issuer: ExactUrl = Field(description="The provider's issuer; discovery must match exactly.")
    client_id: str = Field(min_length=1, description="The gateway's client id at the provider.")
    client_secret: SecretStr | None = Field(None, description="Omit for a public client.")
    scopes: list[str] = Field(default_factory=list, description="Scopes asked of the provider.")
    encryption_keys: list[SealingKey] = Field(
        min_length=1,
        description="AES-256 keys (32 bytes, base64url) the stored grants are encrypted with: "
        "the first encrypts, every one decrypts (rotation: put the new key first). "
        "`encryption_keys_file`: one key per line.",
    )
    refresh_before: PositiveSeconds = Field(
        60.0, description="Refresh a provider token this many seconds before it expires."
    )
    fetch_timeout: PositiveSeconds = Field(
        10.0, description="Seconds for each request to the provider."
    )
    allow_unadvertised_pkce: bool = Field(
        False,
        description="Use the provider even when its metadata does not list `S256` in "
        "`code_challenge_methods_supported` (PKCE S256 is sent either way). Only for a "
        "provider known to support it without saying so.",
    )

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _keys_from_lines(cls, value: object) -> object:
        if isinstance(value, str):  # from encryption_keys_file
            return [line.strip() for line in value.splitlines() if line.strip()]
        return value

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        return check_scope_list(value)


UpstreamAuth = Annotated[MintAuth | ExchangeAuth | UserOAuth, Discriminator("kind")]
"""The credential kind of an HTTP upstream, told apart by `kind`."""
