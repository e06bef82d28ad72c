"""`upstreams`: the MCP servers behind the gateway, of two kinds (`url`: HTTP, `command`: stdio),
and the policy of each route."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AnyHttpUrl,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from gateway.config.fields import (
    FORBIDDEN_STATIC_HEADERS,
    NEVER_PASSED_HEADERS,
    RESERVED_PREFIXES,
    ROUTE,
    SCOPE_TOKEN,
    TOKEN_CHARS,
    Model,
    Name,
    PositiveSeconds,
    normalized_header,
)
from gateway.config.policy import Policy
from gateway.config.secrets import SecretFileMixin
from gateway.config.upstream_auth import UpstreamAuth


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
            if not TOKEN_CHARS.fullmatch(name):
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


SESSION_DIR = "{session_dir}"
"""In `env` values and `cwd` of a stdio upstream: the process's private directory."""


HTTP_ONLY_KEYS = frozenset(
    {
        "headers",
        "headers_file",
        "identity_headers",
        "pass_headers",
        "max_idle_connections",
        "upstream_auth",
    }
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
        if not ROUTE.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
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
            if not SCOPE_TOKEN.fullmatch(scope):
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
    upstream_auth: UpstreamAuth | None = Field(
        None,
        description="A credential of the upstream's own for each request: `kind: mint` (a JWT "
        "the gateway signs), `exchange` (RFC 8693 token exchange) or `user_oauth` (the user's "
        "own token at a third-party provider). The client's token is never passed on.",
    )

    @model_validator(mode="after")
    def _identity_headers_distinct(self) -> HttpUpstream:
        static = {normalized_header(name) for name in self.headers}
        clash = sorted(n for n in self.identity_headers.names().values()
                       if normalized_header(n) in static)  # fmt: skip
        if clash:
            raise ValueError(f"identity headers {clash} are also static headers")
        own = static | {normalized_header(n) for n in self.identity_headers.names().values()}
        if self.upstream_auth is not None:
            header = normalized_header(self.upstream_auth.header)
            if header in own:
                raise ValueError(
                    f"upstream_auth sets {self.upstream_auth.header!r}, which is also a static "
                    "or identity header"
                )
            own.add(header)
        passed = sorted(name for name in self.pass_headers if normalized_header(name) in own)
        if passed:
            raise ValueError(f"pass_headers {passed} are set by the gateway on this route")
        return self

    @field_validator("pass_headers")
    @classmethod
    def _check_pass_headers(cls, value: list[str]) -> list[str]:
        for name in value:
            if not TOKEN_CHARS.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP field name")
            if normalized_header(name) in NEVER_PASSED_HEADERS:
                raise ValueError(f"header {name!r} is never passed from a client")
        return [name.lower() for name in value]

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not TOKEN_CHARS.fullmatch(name):
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
