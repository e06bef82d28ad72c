"""The configuration as frozen pydantic models.

Unknown keys are errors everywhere (`extra="forbid"`). Secrets are `SecretStr` so they never show
in a repr or a log line; any secret field `x` may instead be given as `x_file: PATH` (see
`secrets.py`). Process settings (`server`, `log`) can be overridden from the environment with the
`MCP_GATEWAY_` prefix and `__` as the nesting delimiter, e.g. `MCP_GATEWAY_SERVER__PORT=9000`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.config.secrets import SecretFileMixin
from gateway.oauth.signing import SigningKey, SigningKeyError
from gateway.oauth.users import LocalUsers, UsersFileError
from gateway.policy.patterns import Pattern, is_pattern, overlap
from gateway.policy.scopes import ScopeCycleError, ScopeImplications

_TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 section 5.6.2
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 6749 section 3.3
_ROUTE = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RESERVED_PREFIXES = ("/.well-known", "/healthz", "/readyz", "/metrics", "/oauth")
GATEWAY_AS_NAME = "gateway"
"""The name upstreams use for the gateway's own authorization server (facade mode)."""

_METHOD_NAME = re.compile(r"^[\x21-\x7e]{1,200}$")
_HOST = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


def _origin(value: str) -> str:
    """A browser origin in its serialized form (RFC 6454): scheme://host[:port], lowercased,
    default port dropped. `null` and wildcards are never allowed."""
    parts = urlsplit(value)
    if value in ("null", "*") or parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin like https://app.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r} is not an origin: no path, query or credentials")
    if "*" in value:
        raise ValueError(f"{value!r}: wildcards are not allowed in origins")
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    suffix = "" if port in (None, _DEFAULT_PORTS[parts.scheme]) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}"


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 63)")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
"""An identifier used in logs, metric labels and cross-references."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogSettings(Model):
    level: LogLevel = LogLevel.INFO
    format: LogFormat = Field(
        LogFormat.AUTO, description="`auto`: console when stderr is a terminal, else JSON."
    )


class ServerSettings(Model):
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65_535)
    public_url: AnyHttpUrl | None = Field(
        None,
        description="The URL clients use to reach the gateway; resource URLs derive from it. "
        "Defaults to http://<host>:<port>.",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65_535, description="Serve /metrics on its own port instead of the main one."
    )
    max_request_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest accepted request body; larger gets 413."
    )
    shutdown_timeout: PositiveSeconds = Field(
        10.0, description="Seconds open streams get to finish on shutdown."
    )
    reload_interval: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Seconds between checks of the config file for policy changes (0: only "
        "on SIGHUP).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (scheme://host[:port]) allowed to call the gateway, with "
        "CORS. The origin of `public_url` is always allowed; any other `Origin` (including "
        "`null`) gets 403.",
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="`Host` header values accepted (host or host:port), against DNS "
        "rebinding; others get 421. Default: the authority of `public_url` (without it: "
        "`host`, localhost and 127.0.0.1 at `port`). Health and metrics paths are exempt.",
    )
    header_timeout: PositiveSeconds = Field(
        10.0, description="Seconds a client has to send a request's headers, from its first byte."
    )
    body_timeout: PositiveSeconds = Field(
        30.0, description="Seconds a client has to send a request body; then 408."
    )
    keepalive_timeout: PositiveSeconds = Field(
        60.0, description="Seconds an idle keep-alive client connection is kept open."
    )
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(
        default_factory=list,
        description="Addresses (CIDRs) of reverse proxies in front of the gateway. Only from "
        "these peers are `Forwarded` / `X-Forwarded-For` read, and only for the client "
        "address (rate limits, logs); URLs and resources never come from request headers.",
    )

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        return [_origin(entry) for entry in value]

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for entry in value:
                if not _HOST.fullmatch(entry):
                    raise ValueError(f"{entry!r} is not a host or host:port")
            return [entry.lower() for entry in value]
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_origin(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is not None and (value.query or value.fragment or value.username):
            raise ValueError("public_url must not carry credentials, a query or a fragment")
        return value


class UpstreamTimeouts(Model):
    connect: PositiveSeconds = Field(5.0, description="Seconds to open a TCP/TLS connection.")
    response: PositiveSeconds = Field(
        300.0,
        description="Seconds to wait for the upstream's response headers; then 504. An SSE body "
        "may stream for longer.",
    )
    idle_connection: PositiveSeconds = Field(
        4.0,
        description="Seconds a pooled keep-alive connection may sit unused before it is dropped. "
        "Keep it below the upstream's own keep-alive timeout (uvicorn: 5 s).",
    )


ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                         "ES512", "EdDSA")  # fmt: skip


def _exact_http_url(value: str) -> str:
    """An http(s) URL kept byte for byte (issuers are compared exactly, RFC 8414 section 3.3)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http or https URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry credentials, a query or a fragment")
    return value


ExactUrl = Annotated[str, AfterValidator(_exact_http_url)]


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

    @field_validator("users_file")
    @classmethod
    def _readable(cls, value: str) -> str:
        try:
            LocalUsers.load(Path(value))  # read again at start: checked here so `check` tells
        except UsersFileError as exc:
            raise ValueError(str(exc)) from None
        return value


class LoginSettings(Model):
    oidc: OidcLogin | None = None
    local: LocalLogin | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LoginSettings:
        if (self.oidc is None) == (self.local is None):
            raise ValueError("configure exactly one of oidc or local")
        return self


class GrantRuleSettings(Model):
    when: dict[str, list[str | bool | int]] = Field(
        default_factory=dict,
        description="Claim -> values; the rule applies when every named claim has one of them. "
        "Empty: every user who can sign in.",
    )
    scopes: ScopeList


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

    @field_validator("signing_key")
    @classmethod
    def _usable_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_signing_key(value, "signing key")
        return value

    @field_validator("previous_signing_keys", mode="before")
    @classmethod
    def _keys_from_pem_blocks(cls, value: Any) -> Any:
        if isinstance(value, str):  # from previous_signing_keys_file
            return _PEM_BLOCK.findall(value) or [value]
        return value

    @field_validator("previous_signing_keys")
    @classmethod
    def _usable_previous_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(value):
            _check_signing_key(key, f"previous signing key {index}")
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
        keys = [self.signing_key, *self.previous_signing_keys] if self.signing_key else []
        kids = [SigningKey.from_text(key.get_secret_value()).kid for key in keys]
        if len(kids) != len(set(kids)):
            raise ValueError("a signing key is listed twice (signing_key, previous_signing_keys)")
        return self


_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.DOTALL)


def _check_signing_key(value: SecretStr, what: str) -> None:
    try:
        SigningKey.from_text(value.get_secret_value())
    except SigningKeyError as exc:
        raise ValueError(f"{what}: {exc}") from None  # never the key itself


class AuthSettings(Model):
    resource_server: ResourceServer | None = None
    authorization_server: AuthorizationServerSettings | None = None


def _check_scope_list(scopes: list[str]) -> list[str]:
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"scope {scope!r} is not a valid scope token")
    return scopes


ScopeList = Annotated[list[str], AfterValidator(_check_scope_list)]
Requirement = ScopeList | Literal["deny"]


class DefaultRule(Model):
    scopes: ScopeList


class Policy(Model):
    """Which scopes each tool, resource (by URI) and prompt needs on this route.

    Keys are exact names or patterns (`*` any run of characters, `?` one character); values
    are the scopes required (all of them; `[]`: any authenticated caller) or `deny`. An exact
    name beats every pattern; among patterns, more literal characters win; patterns that tie
    and can match the same name are refused. Anything unlisted falls to `default`.
    """

    default: DefaultRule | Literal["deny"] | None = Field(
        None, description="Rule for names no entry matches. Default: the route's `scopes`."
    )
    tools: dict[str, Requirement] = Field(default_factory=dict)
    resources: dict[str, Requirement] = Field(default_factory=dict)
    prompts: dict[str, Requirement] = Field(default_factory=dict)
    list_visibility: Literal["attainable", "held", "all"] = Field(
        "attainable",
        description="What lists (tools/list, resources/list, prompts/list) show: `held`, what "
        "the caller's token may use; `attainable`, that and what the caller could be granted "
        "(facade: its grant rules for this user; other authorization servers: everything, or "
        "what `attainable` gives the token's claims); `all`, everything. Entries shown but not "
        "held carry the scopes they need in `_meta` (`io.mcp-auth-gateway/requiredScopes`). "
        "What `deny` rules cover is never shown.",
    )
    attainable: list[GrantRuleSettings] | None = Field(
        None,
        description="For tokens of other authorization servers (not the gateway's own): the "
        "scopes a caller could be granted, by rules over the token's claims, e.g. `{when: "
        "{groups: [eng]}, scopes: [files:write]}`. Omitted: every scope is attainable. A list "
        "(even empty): only what the rules whose claims match give, plus implied scopes.",
    )
    methods: dict[str, Requirement] = Field(
        default_factory=dict,
        description="Rules for JSON-RPC methods the gateway does not know as MCP methods "
        "(e.g. a vendor extension). Any other unknown method is decided by `default`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hide_unauthorized" in data:
            raise ValueError(
                "hide_unauthorized was replaced by list_visibility: `held` shows only what the "
                "token may use (hide_unauthorized: true), `attainable` (the default) also what "
                "the caller could be granted, `all` everything but what deny rules cover"
            )
        return data

    @model_validator(mode="after")
    def _patterns_are_unambiguous(self) -> Policy:
        problems = []
        for kind in ("tools", "resources", "prompts"):
            names = list(getattr(self, kind))
            if any(not name for name in names):
                problems.append(f"{kind}: empty names are not allowed")
            patterns = [Pattern(n) for n in names if n and is_pattern(n)]
            for i, a in enumerate(patterns):
                for b in patterns[i + 1 :]:
                    if a.specificity == b.specificity and overlap(a.text, b.text):
                        problems.append(
                            f"{kind}: patterns {a.text!r} and {b.text!r} are equally specific "
                            "and can match the same name; list that name exactly or make one "
                            "pattern more specific"
                        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, value: dict[str, Requirement]) -> dict[str, Requirement]:
        for method in value:
            if not _METHOD_NAME.fullmatch(method):
                raise ValueError(f"method {method!r} must be visible ASCII without spaces")
        return value

    def default_requirement(self) -> Requirement | None:
        if isinstance(self.default, DefaultRule):
            return self.default.scopes
        return self.default


class ScopeSettings(Model):
    implies: dict[str, ScopeList] = Field(
        default_factory=dict,
        description="Scope implication, e.g. files:admin: [files:write]; transitive, no cycles.",
    )

    @model_validator(mode="after")
    def _no_cycles(self) -> ScopeSettings:
        try:
            ScopeImplications(self.implies)
        except ScopeCycleError as exc:
            raise ValueError(str(exc)) from None
        return self


class IdentityHeaders(Model):
    """Headers the gateway sets on upstream requests from the caller's validated token.

    Values are sent as they are when they are visible ASCII (spaces allowed) without `%`,
    otherwise percent-encoded UTF-8. Whatever a client sends under these names, in any
    spelling (case, `_` for `-`), is removed first.
    """

    subject: str | None = Field(None, description="Header for the token's `sub`.")
    client_id: str | None = Field(None, description="Header for the token's `client_id`.")
    issuer: str | None = Field(None, description="Header for the token's issuer.")
    scopes: str | None = Field(None, description="Header for the granted scopes, space-separated.")

    @model_validator(mode="after")
    def _names_valid(self) -> IdentityHeaders:
        names = [name for name in self.names().values()]
        for name in names:
            if not _TOKEN_CHARS.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP field name")
            if normalized_header(name) in FORBIDDEN_STATIC_HEADERS | {"authorization", "cookie"}:
                raise ValueError(f"header {name!r} is managed by the gateway")
        spelled = [normalized_header(name) for name in names]
        if len(set(spelled)) != len(spelled):
            raise ValueError("identity headers must have distinct names")
        return self

    def names(self) -> dict[str, str]:
        """Claim -> header name, for the claims that have a header."""
        fields = ("subject", "client_id", "issuer", "scopes")
        return {f: name for f in fields if (name := getattr(self, f)) is not None}


def normalized_header(name: str) -> str:
    """A header name as upstream frameworks may see it: case-folded, `_` read as `-`."""
    return name.lower().replace("_", "-")


SESSION_DIR = "{session_dir}"
"""In `env` values and `cwd` of a stdio upstream: the process's private directory."""


HTTP_ONLY_KEYS = frozenset(
    {"headers", "headers_file", "identity_headers", "pass_headers", "max_idle_connections"}
)
STDIO_ONLY_KEYS = frozenset(
    {"env", "env_file", "cwd", "private_dir", "max_processes", "max_processes_per_principal"}
)


class _Mounted(Model):
    """Which upstream, and where the gateway serves it (first in every upstream's keys)."""

    name: Name = Field(description="Short identifier, used in logs and metrics labels.")
    route: str = Field(description="Path the gateway serves this upstream at, e.g. /files/mcp.")

    @field_validator("route")
    @classmethod
    def _check_route(cls, value: str) -> str:
        if not _ROUTE.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
            raise ValueError("must be an absolute path like /files/mcp, without a trailing slash")
        if any(value == p or value.startswith(p + "/") for p in RESERVED_PREFIXES):
            raise ValueError(f"must not be under a reserved path {RESERVED_PREFIXES}")
        return value


class _HttpEndpoint(Model):
    url: AnyHttpUrl = Field(description="The MCP endpoint (http or https).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.username or value.password or value.fragment:
            raise ValueError("must not carry credentials or a fragment; use `headers`")
        return value


class _StdioCommand(Model):
    command: list[str] = Field(
        min_length=1,
        description="The program and its arguments (no shell). One process per session; the "
        "program is looked up on the gateway's PATH.",
    )


class _UpstreamBase(SecretFileMixin, Model):
    """What every upstream has, whatever its kind (its keys come after name, route and the
    key that gives its kind)."""

    kind: ClassVar[Literal["http", "stdio"]]
    _foreign_keys: ClassVar[frozenset[str]] = frozenset()
    _foreign_kind: ClassVar[str] = ""

    timeouts: UpstreamTimeouts = Field(default_factory=UpstreamTimeouts)
    authorization_servers: list[str] | None = Field(
        None, description="Names of the authorization servers trusted here. Default: all."
    )
    scopes: list[str] = Field(
        default_factory=list,
        description="Scopes for basic use of this route: advertised as `scopes_supported` in "
        "its protected resource metadata and in 401 challenges.",
    )
    resource_name: str | None = Field(None, description="Human-readable name for clients.")
    allow_anonymous: bool = Field(
        False,
        description="Serve this route WITHOUT authentication. Only for trusted networks and "
        "demos: every client may then call every tool.",
    )
    policy: Policy = Field(default_factory=Policy)

    @model_validator(mode="before")
    @classmethod
    def _no_keys_of_the_other_kind(cls, data: Any) -> Any:
        """A key of the other kind gets a message naming the kind, not just "extra input"."""
        if isinstance(data, dict):
            foreign = sorted(key for key in data if key in cls._foreign_keys)
            if foreign:
                keys = ", ".join(foreign)
                raise ValueError(
                    f"{keys} {'is' if len(foreign) == 1 else 'are'} for {cls._foreign_kind}"
                )
        return data

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not _SCOPE_TOKEN.fullmatch(scope):
                raise ValueError(f"scope {scope!r} is not a valid scope token")
            if scope == "offline_access":
                raise ValueError("offline_access is a client's choice, never a route's baseline")
        return value


class HttpUpstream(_UpstreamBase, _HttpEndpoint, _Mounted):
    """An MCP server reached over HTTP (`url`): the gateway is its reverse proxy."""

    model_config = ConfigDict(title="HTTP upstream")
    kind: ClassVar[Literal["http", "stdio"]] = "http"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"headers"})
    _foreign_keys: ClassVar[frozenset[str]] = STDIO_ONLY_KEYS
    _foreign_kind: ClassVar[str] = "stdio upstreams (command)"

    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Static headers added to every upstream request (e.g. an API key). "
        "`headers_file` maps header names to files holding the values.",
    )
    max_idle_connections: int = Field(64, ge=0, le=10_000)
    identity_headers: IdentityHeaders = Field(
        default_factory=IdentityHeaders,
        description="Tell the upstream who is calling, in headers set from the validated token.",
    )
    pass_headers: list[str] = Field(
        default_factory=list,
        description="Client request headers passed to the upstream besides the built-in "
        "allowlist (Content-Type, Accept, MCP-Protocol-Version, Mcp-Method, Mcp-Name, "
        "Mcp-Param-*, traceparent, tracestate); every other client header is dropped.",
    )

    @model_validator(mode="after")
    def _identity_headers_distinct(self) -> HttpUpstream:
        static = {normalized_header(name) for name in self.headers}
        clash = sorted(n for n in self.identity_headers.names().values()
                       if normalized_header(n) in static)  # fmt: skip
        if clash:
            raise ValueError(f"identity headers {clash} are also static headers")
        own = static | {normalized_header(n) for n in self.identity_headers.names().values()}
        passed = sorted(name for name in self.pass_headers if normalized_header(name) in own)
        if passed:
            raise ValueError(f"pass_headers {passed} are set by the gateway on this route")
        return self

    @field_validator("pass_headers")
    @classmethod
    def _check_pass_headers(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _TOKEN_CHARS.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP field name")
            if normalized_header(name) in NEVER_PASSED_HEADERS:
                raise ValueError(f"header {name!r} is never passed from a client")
        return [name.lower() for name in value]

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _TOKEN_CHARS.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP field name")
            if name.lower() in FORBIDDEN_STATIC_HEADERS:
                raise ValueError(f"header {name!r} is managed by the gateway")
            text = secret.get_secret_value()
            if any(ch in text for ch in "\r\n\0"):
                raise ValueError(f"header {name!r} has a control character in its value")
        return value


class StdioUpstream(_UpstreamBase, _StdioCommand, _Mounted):
    """A stdio MCP server (`command`) the gateway starts itself, one process per session, and
    serves as Streamable HTTP."""

    model_config = ConfigDict(title="stdio upstream")
    kind: ClassVar[Literal["http", "stdio"]] = "stdio"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"env"})
    _foreign_keys: ClassVar[frozenset[str]] = HTTP_ONLY_KEYS
    _foreign_kind: ClassVar[str] = "HTTP upstreams (url)"

    env: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="The stdio server's whole environment (the gateway's own is never passed "
        f"on). `{SESSION_DIR}` in a value is replaced by the process's private directory. "
        "`env_file` maps names to files holding the values.",
    )
    cwd: str | None = Field(
        None, description=f"The stdio server's working directory (may be `{SESSION_DIR}`)."
    )
    private_dir: bool = Field(
        False,
        description="Give each stdio process a fresh private directory (mode 0700), removed "
        f"when it ends; `{SESSION_DIR}` names it. Default working directory: it.",
    )
    max_processes: int = Field(
        50, ge=1, le=10_000, description="Stdio processes of this upstream in all; more: 503."
    )
    max_processes_per_principal: int = Field(
        4, ge=1, le=1_000, description="Stdio processes one principal may hold; more: 429."
    )

    @model_validator(mode="after")
    def _session_dir_needs_private_dir(self) -> StdioUpstream:
        if not self.private_dir and (
            SESSION_DIR in (self.cwd or "")
            or any(SESSION_DIR in v.get_secret_value() for v in self.env.values())
        ):
            raise ValueError(f"{SESSION_DIR} needs private_dir: true")
        return self


def _upstream_kind(value: Any) -> str | None:
    """`url` makes an HTTP upstream, `command` a stdio one; both or neither: no kind (None)."""
    if not isinstance(value, dict):
        return getattr(value, "kind", "http")
    if ("url" in value) == ("command" in value):
        return None
    return "http" if "url" in value else "stdio"


Upstream = Annotated[
    Annotated[HttpUpstream, Tag("http")] | Annotated[StdioUpstream, Tag("stdio")],
    Discriminator(
        _upstream_kind,
        custom_error_type="upstream_kind",
        custom_error_message="give exactly one of url (an HTTP server) or command (a stdio one)",
    ),
]
"""An upstream of either kind, told apart by its key: `url` or `command`."""
UPSTREAM_KINDS = ("http", "stdio")
"""The tags of `Upstream`: pydantic puts them in an error's location, which YAML paths leave out."""


FORBIDDEN_STATIC_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
)
NEVER_PASSED_HEADERS = FORBIDDEN_STATIC_HEADERS | {
    "authorization",
    "cookie",
    "proxy-authorization",
    "proxy-connection",
    "trailer",
    "expect",
    "mcp-session-id",
    "last-event-id",
    "x-request-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
}
"""Headers the gateway owns or that carry credentials or forwarding claims: a route cannot
pass them from clients."""


class SessionSettings(SecretFileMixin, Model):
    """Gateway-minted sessions of the stateful protocol era (2025-03-26 ... 2025-11-25).

    A session id is sealed (AES-256-GCM) around the upstream's session id and the principal
    that opened it, so any replica holding the keys can check it with no shared store.
    """

    secret_fields: ClassVar[frozenset[str]] = frozenset({"keys"})

    keys: list[SecretStr] = Field(
        default_factory=list,
        description="Session sealing keys (from `mcp-auth-gateway keygen`), newest first: the "
        "first seals new sessions, all open existing ones (rotation). `keys_file`: one key per "
        "line. Default: a random key per process (sessions end when it restarts; replicas "
        "must share keys).",
    )
    idle_timeout: PositiveSeconds = Field(
        1800.0, description="Seconds without a request or open stream after which a session ends."
    )
    max_lifetime: PositiveSeconds = Field(
        86_400.0, description="Seconds after which a session ends regardless of use."
    )
    max_per_principal: int = Field(
        32, ge=1, description="Open sessions one principal may hold; more get 429."
    )
    max_total: int = Field(10_000, ge=1, description="Open sessions in all; more get 503.")
    max_streams_per_principal: int = Field(
        64,
        ge=1,
        description="Response streams (GET, or SSE answering a POST) one principal may have "
        "open or awaiting headers at once; more get 429. It also bounds a principal's "
        "concurrent requests.",
    )
    max_streams: int = Field(
        10_000, ge=1, description="Open response streams (GET or POST) in all; more get 503."
    )
    stalled_stream_timeout: PositiveSeconds = Field(
        30.0,
        description="Seconds a response stream may wait on a client that does not read; then "
        "it is closed and its upstream connection released.",
    )

    @field_validator("keys", mode="before")
    @classmethod
    def _keys_from_lines(cls, value: Any) -> Any:
        if isinstance(value, str):  # from keys_file: one key per line
            return [line.strip() for line in value.splitlines() if line.strip()]
        return value

    @field_validator("keys")
    @classmethod
    def _check_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(value):
            if not _SESSION_KEY.fullmatch(key.get_secret_value()):
                raise ValueError(
                    f"key {index} is not 32 bytes in unpadded base64url (use "
                    "`mcp-auth-gateway keygen`)"
                )
        return value


_SESSION_KEY = re.compile(r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")  # 32 bytes, base64url


class _ProcessEnvSource(EnvSettingsSource):
    """Environment overrides, limited to process settings: upstreams come from the file only."""

    overridable = frozenset({"server", "log"})

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in self.overridable:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class StoreSettings(SecretFileMixin, Model):
    """Where the authorization server keeps its state (clients, logins, codes, token families,
    revocations, consent, rate-limit counters). `memory`: this process only (one replica).
    `redis`: shared by every replica; an outage refuses what needs the store (503)."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"url"})

    backend: Literal["memory", "redis"] = "memory"
    url: SecretStr | None = Field(
        None,
        description="`redis://[:password@]host:port/db` (or `rediss://` for TLS); `url_file` "
        "to read it (and its password) from a Secret.",
    )
    key_prefix: str = Field(
        "mcp-gateway:", pattern=r"^[A-Za-z0-9._:-]{0,64}$", description="Prefix of every key."
    )
    timeout: float = Field(
        1.0, gt=0, le=30, description="Seconds for one store operation (connect included)."
    )
    max_connections: int = Field(50, ge=1, le=10_000, description="Connection pool size.")

    @model_validator(mode="after")
    def _url_for_redis_only(self) -> StoreSettings:
        if self.backend == "redis":
            if self.url is None:
                raise ValueError("backend redis needs url (or url_file)")
            scheme = urlsplit(self.url.get_secret_value()).scheme
            if scheme not in ("redis", "rediss"):
                raise ValueError("url must be redis:// or rediss://")  # never the url itself
        elif self.url is not None:
            raise ValueError("url is for backend redis")
        return self


class GatewayConfig(BaseSettings):
    """The whole gateway configuration (one YAML file)."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="MCP_GATEWAY_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    scopes: ScopeSettings = Field(default_factory=ScopeSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    upstreams: list[Upstream] = Field(
        min_length=1,
        description="The MCP servers behind the gateway, each at its own route: an HTTP "
        "upstream has `url`, a stdio upstream `command` (exactly one of the two).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: the environment overrides the YAML file (passed as init kwargs).
        return (_ProcessEnvSource(settings_cls), init_settings)

    @model_validator(mode="after")
    def _routes_and_names_unique(self) -> GatewayConfig:
        problems = []
        for attr in ("name", "route"):
            seen: set[str] = set()
            for upstream in self.upstreams:
                value = getattr(upstream, attr)
                if value in seen:
                    problems.append(f"two upstreams have {attr} {value!r}")
                seen.add(value)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _auth_is_configured_where_needed(self) -> GatewayConfig:
        resource_server = self.auth.resource_server
        facade = self.auth.authorization_server is not None
        known = (
            {s.name for s in resource_server.authorization_servers} if resource_server else set()
        )
        if facade:
            known.add(GATEWAY_AS_NAME)
        problems = []
        if resource_server is not None and GATEWAY_AS_NAME in {
            s.name for s in resource_server.authorization_servers
        }:
            problems.append(f"authorization server name {GATEWAY_AS_NAME!r} is reserved")
        for upstream in self.upstreams:
            if upstream.allow_anonymous:
                continue
            if not known:
                problems.append(
                    f"upstream {upstream.name!r} requires tokens but neither "
                    "auth.resource_server nor auth.authorization_server is configured (or set "
                    "allow_anonymous: true on it)"
                )
            unknown = sorted(set(upstream.authorization_servers or ()) - known)
            if known and unknown:
                problems.append(f"upstream {upstream.name!r} names unknown servers {unknown}")
        if known and self.server.public_url is None:
            problems.append("server.public_url is required with auth: resource URLs derive from it")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def token_validation(self) -> ResourceServer | None:
        """How tokens are validated: `auth.resource_server`, plus the gateway's own issuer
        when it is the authorization server (facade mode), named `gateway`."""
        configured = self.auth.resource_server
        if self.auth.authorization_server is None:
            return configured
        own = AuthorizationServer(
            name=GATEWAY_AS_NAME,
            issuer=self.public_base(),
            jwks_uri=self.public_base() + "/oauth/jwks",
            algorithms=["ES256", "RS256"],
            require_at_jwt=True,
        )
        if configured is None:
            return ResourceServer(authorization_servers=[own])
        servers = [*configured.authorization_servers, own]
        return configured.model_copy(update={"authorization_servers": servers})

    def allowed_origins(self) -> frozenset[str]:
        """Browser origins accepted: the configured ones and that of `public_url`."""
        origins = set(self.server.allowed_origins)
        if self.server.public_url is not None:
            origins.add(_origin(self.public_base()))
        return frozenset(origins)

    def allowed_hosts(self, bound_port: int | None = None) -> frozenset[str]:
        """`Host` values accepted (lowercase), see `server.allowed_hosts`."""
        if self.server.allowed_hosts is not None:
            return frozenset(self.server.allowed_hosts)
        if self.server.public_url is not None:
            parts = urlsplit(self.public_base())
            host = parts.netloc.lower()
            hosts = {host}
            if parts.port is None:  # a client may also spell out the default port
                hosts.add(f"{host}:{_DEFAULT_PORTS[parts.scheme]}")
            return frozenset(hosts)
        port = bound_port or self.server.port
        names = {self.server.host, "localhost", "127.0.0.1"}
        return frozenset(f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name in names)

    def public_base(self, bound_port: int | None = None) -> str:
        """The gateway's public URL without a trailing slash: `server.public_url`, else
        http://host:port (with the port actually bound, when the config says 0)."""
        if self.server.public_url is not None:
            return str(self.server.public_url).rstrip("/")
        host = self.server.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{bound_port or self.server.port}"
