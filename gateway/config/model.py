"""The configuration as frozen pydantic models.

Unknown keys are errors everywhere (`extra="forbid"`). Secrets are `SecretStr` so they never show
in a repr or a log line; any secret field `x` may instead be given as `x_file: PATH` (see
`secrets.py`). Process settings (`server`, `log`) can be overridden from the environment with the
`MCP_GATEWAY_` prefix and `__` as the nesting delimiter, e.g. `MCP_GATEWAY_SERVER__PORT=9000`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
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

from gateway.config.audit import AuditSettings
from gateway.config.auth import AuthorizationServer, AuthSettings, ResourceServer
from gateway.config.crossref import UpstreamRefs, cross_reference_problems
from gateway.config.fields import (
    DEFAULT_PORTS,
    GATEWAY_AS_NAME,
    Model,
    PositiveSeconds,
    ScopeList,
    serialized_origin,
)
from gateway.config.problems import format_path
from gateway.config.secrets import SecretFileMixin
from gateway.config.server import LogSettings, ServerSettings
from gateway.config.tracing import TracingSettings
from gateway.config.upstreams import Upstream


class ScopeSettings(Model):
    implies: dict[str, ScopeList] = Field(
        default_factory=dict,
        description="Scope implication, e.g. files:admin: [files:write]; transitive, no cycles.",
    )


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
    limits_fallback: Literal["local", "refuse"] = Field(
        "refuse",
        description="What `policy.limits` do while the store (Redis) is down: `refuse` answers "
        "503 with Retry-After, `local` enforces the same limits per replica. A route's "
        "`policy.limits_fallback` overrides it.",
    )

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
    audit: AuditSettings | None = Field(
        None, description="The audit trail; without this section no audit records are written."
    )
    tracing: TracingSettings = Field(default_factory=TracingSettings)
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
    def _cross_references_hold(self) -> GatewayConfig:
        """For a config built in code; the loader runs the same checks section by section."""
        refs = {index: UpstreamRefs.of(upstream) for index, upstream in enumerate(self.upstreams)}
        found = cross_reference_problems(self.server.public_url is not None, self.auth, refs)
        if found:
            raise ValueError(
                "; ".join(f"{format_path(path)}: {message}" for path, message in found)
            )
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
            origins.add(serialized_origin(self.public_base()))
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
                hosts.add(f"{host}:{DEFAULT_PORTS[parts.scheme]}")
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


def process_overrides() -> dict[str, Any]:
    """The process settings the environment overrides (`MCP_GATEWAY_SERVER__PORT=9000` ->
    `{"server": {"port": "9000"}}`), to lay over the file's."""
    return _ProcessEnvSource(GatewayConfig)()
