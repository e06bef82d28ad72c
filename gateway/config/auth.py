"""`auth`: the authorization servers whose tokens the gateway accepts, and the gateway as one
(the facade: sign-in, grants, clients, signing keys)."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.config.fields import (
    ASYMMETRIC_ALGORITHMS,
    ExactUrl,
    GrantRuleSettings,
    Model,
    Name,
    PositiveSeconds,
    ScopeList,
)
from gateway.config.secrets import SecretFileMixin


class Introspection(SecretFileMixin, Model):
    """RFC 7662 token introspection, for authorization servers that issue opaque tokens."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"client_secret"})

    endpoint: ExactUrl
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    ttl_without_exp: float = Field(
        5.0,
        ge=0,
        le=300,
        description="Seconds an active answer without `exp` is trusted before the token is "
        "introspected again (0: ask on every request). Answers with `exp` are trusted until "
        "then.",
    )


class AuthorizationServer(Model):
    """An authorization server whose access tokens the gateway accepts."""

    name: Name = Field(description="Identifier that upstreams use to say they trust it.")
    issuer: ExactUrl = Field(description="Its issuer identifier, compared exactly with `iss`.")
    jwks_uri: ExactUrl | None = Field(
        None,
        description="Where its signing keys are. Default: `jwks_uri` from its RFC 8414 or OpenID "
        "discovery document, whose `issuer` must equal `issuer` exactly.",
    )
    introspection: Introspection | None = Field(
        None, description="Validate its tokens by RFC 7662 introspection instead of as JWTs."
    )
    algorithms: list[str] = Field(
        default_factory=lambda: list(ASYMMETRIC_ALGORITHMS),
        description="Accepted JWS algorithms; asymmetric only.",
    )
    require_at_jwt: bool = Field(
        False, description="Require the RFC 9068 `typ: at+jwt` header on JWT access tokens."
    )

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ASYMMETRIC_ALGORITHMS))
        if unknown or not value:
            raise ValueError(
                f"only asymmetric algorithms are accepted ({', '.join(ASYMMETRIC_ALGORITHMS)}); "
                f"not {unknown or 'an empty list'}"
            )
        return value


class ResourceServer(Model):
    """How the gateway validates bearer tokens, as an OAuth protected resource."""

    authorization_servers: list[AuthorizationServer] = Field(min_length=1)
    leeway: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    token_cache_size: int = Field(
        10_000, ge=0, description="Verified tokens remembered (each until its `exp`)."
    )
    jwks_cache_ttl: PositiveSeconds = Field(
        600.0, description="Seconds a fetched JWKS is used before it is fetched again."
    )
    jwks_refetch_cooldown: PositiveSeconds = Field(
        30.0, description="Least seconds between JWKS fetches triggered by an unknown `kid`."
    )
    fetch_timeout: PositiveSeconds = Field(
        5.0, description="Seconds for a JWKS, discovery or introspection request."
    )
    max_token_bytes: int = Field(8192, ge=256, le=65_536)

    @model_validator(mode="after")
    def _names_unique(self) -> ResourceServer:
        names = [server.name for server in self.authorization_servers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"authorization server names must be unique: {duplicates}")
        return self


class OidcLogin(SecretFileMixin, Model):
    """Sign users in at the company's OpenID provider (the gateway is its client)."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"client_secret"})

    issuer: ExactUrl = Field(description="The provider's issuer; discovery must match exactly.")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = Field(
        None, description="Omit for a public client (PKCE only)."
    )
    scopes: ScopeList = Field(
        default_factory=lambda: ["openid", "email", "profile"],
        description="Requested from the provider; `openid` is required.",
    )
    allow_unadvertised_pkce: bool = Field(
        False,
        description="Sign in even when the provider's discovery document does not list `S256` "
        "in `code_challenge_methods_supported` (PKCE S256 is sent either way). Only for a "
        "provider known to support it without saying so.",
    )
    claims_from: list[Literal["id_token", "userinfo"]] = Field(
        ["id_token", "userinfo"],
        description="Where the grant rules read the user's claims. `userinfo`: the provider's "
        "UserInfo endpoint (OpenID Connect Core 5.3), called once per sign-in with the "
        "provider's access token; claims requested by scope (`email`, `groups`, ...) usually "
        "come only from there. With both, UserInfo claims override the ID token's, except the "
        "sign-in claims (`iss`, `sub`, `aud`, `exp`, `iat`, `nonce`, ...), which stay the ID "
        "token's; a provider without a UserInfo endpoint is read from the ID token alone. "
        "`[userinfo]` alone: only UserInfo claims (and `sub`), and no sign-in at a provider "
        "without a UserInfo endpoint.",
    )
    fetch_timeout: PositiveSeconds = Field(
        10.0,
        description="Seconds for each request to the provider (discovery, JWKS, token, UserInfo).",
    )

    @field_validator("scopes")
    @classmethod
    def _openid(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("must include openid")
        return value

    @field_validator("claims_from")
    @classmethod
    def _claim_sources(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one of id_token, userinfo")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a source")
        return value


class LocalLogin(Model):
    """Sign users in against a file of salted password hashes (small teams, the demo)."""

    users_file: str = Field(description="YAML users file (see `mcp-auth-gateway hash-password`).")


class LoginSettings(Model):
    oidc: OidcLogin | None = None
    local: LocalLogin | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LoginSettings:
        if (self.oidc is None) == (self.local is None):
            raise ValueError("configure exactly one of oidc or local")
        return self


class RegisteredClient(SecretFileMixin, Model):
    """A client registered in the config rather than dynamically."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"client_secret"})

    client_id: str = Field(min_length=1, max_length=255)
    client_secret: SecretStr | None = Field(None, description="Omit for a public client.")
    client_name: str | None = None
    redirect_uris: list[str] = Field(min_length=1)


class ClientIdMetadataDocuments(Model):
    """Clients identified by an https URL whose JSON metadata document the gateway fetches
    (draft-ietf-oauth-client-id-metadata-document; MCP's preferred registration)."""

    enabled: bool = Field(True, description="Accept https URLs as client ids.")
    allow_loopback_for_testing: bool = Field(
        False,
        description="TESTS ONLY: also fetch documents from loopback addresses, over plain http "
        "too. Never in production: any client could make the gateway request its own "
        "loopback services.",
    )
    max_bytes: int = Field(
        5 * 1024, ge=1024, le=64 * 1024, description="Largest document read (the draft: 5 KiB)."
    )
    timeout: float = Field(
        5.0, gt=0, le=30, description="Seconds for a whole fetch, DNS resolution included."
    )


class SignInSessionSettings(Model):
    """The browser's sign-in at the gateway: a cookie naming a session in the state store, so
    a later authorization (another client, a step-up) needs no password while it lasts."""

    enabled: bool = Field(True, description="Off: every authorization signs the user in again.")
    idle_timeout: PositiveSeconds = Field(
        1800.0, le=30 * 86_400, description="Seconds without use after which it ends."
    )
    max_lifetime: PositiveSeconds = Field(
        43_200.0, le=90 * 86_400, description="Seconds after the sign-in at which it ends anyway."
    )


class AuthorizationServerSettings(SecretFileMixin, Model):
    """The gateway as the OAuth authorization server MCP clients use (the facade).

    Its issuer is `server.public_url`; every authenticated route trusts the tokens it mints.
    """

    secret_fields: ClassVar[frozenset[str]] = frozenset({"signing_key", "previous_signing_keys"})

    login: LoginSettings
    grants: list[GrantRuleSettings] = Field(
        default_factory=list, description="Which scopes users may be granted (none by default)."
    )
    clients: list[RegisteredClient] = Field(default_factory=list)
    dynamic_registration: bool = Field(True, description="Accept RFC 7591 registrations.")
    client_id_metadata_documents: ClientIdMetadataDocuments = Field(
        default_factory=ClientIdMetadataDocuments
    )
    registrations_per_minute: int = Field(
        10, ge=1, le=10_000, description="Per client address; more get 429."
    )
    sign_ins_per_minute: int = Field(
        10, ge=1, le=10_000, description="Local sign-in attempts per address and user name."
    )
    signing_key: SecretStr | None = Field(
        None,
        description="PEM private key (EC P-256 or RSA) for access tokens (or "
        "`signing_key_file`). Default: a new key per process (tokens end when the gateway "
        "restarts; replicas must share a key).",
    )
    previous_signing_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys that signed before `signing_key`: still published at `/oauth/jwks` "
        "and accepted, never used to sign, so tokens they signed stay valid until they expire "
        "(rotation with overlap). `previous_signing_keys_file`: PEM blocks one after another.",
    )
    access_token_lifetime: PositiveSeconds = Field(600.0)
    refresh_token_lifetime: float = Field(30 * 86_400.0, gt=0, le=365 * 86_400)
    code_lifetime: PositiveSeconds = Field(60.0, le=600)
    login_lifetime: PositiveSeconds = Field(
        600.0, le=3600, description="Seconds a user has to sign in and consent."
    )
    sign_in_session: SignInSessionSettings = Field(default_factory=SignInSessionSettings)
    scope_descriptions: dict[str, str] = Field(
        default_factory=dict,
        description="Scope -> what it allows, in words, shown on the consent page.",
    )

    @field_validator("previous_signing_keys", mode="before")
    @classmethod
    def _keys_from_pem_blocks(cls, value: Any) -> Any:
        if isinstance(value, str):  # from previous_signing_keys_file
            return _PEM_BLOCK.findall(value) or [value]
        return value

    @model_validator(mode="after")
    def _client_ids_unique(self) -> AuthorizationServerSettings:
        ids = [client.client_id for client in self.clients]
        if len(ids) != len(set(ids)):
            raise ValueError("client_id values must be unique")
        return self

    @model_validator(mode="after")
    def _previous_keys_need_a_current_one(self) -> AuthorizationServerSettings:
        if self.previous_signing_keys and self.signing_key is None:
            raise ValueError("previous_signing_keys needs signing_key (the key that signs now)")
        return self


_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.DOTALL)


class AuthSettings(Model):
    resource_server: ResourceServer | None = None
    authorization_server: AuthorizationServerSettings | None = None
