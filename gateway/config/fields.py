"""Building blocks of the configuration models: the base model, names, URLs, scopes, header
names, and the limits every section shares."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 section 5.6.2
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 6749 section 3.3
ROUTE = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+$")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RESERVED_PREFIXES = ("/.well-known", "/healthz", "/readyz", "/metrics", "/oauth")
GATEWAY_AS_NAME = "gateway"
"""The name upstreams use for the gateway's own authorization server (facade mode)."""

METHOD_NAME = re.compile(r"^[\x21-\x7e]{1,200}$")
HOST_PATTERN = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")
DEFAULT_PORTS = {"http": 80, "https": 443}
PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


def serialized_origin(value: str) -> str:
    """A browser origin in its serialized form (RFC 6454): scheme://host[:port], lowercased,
    default port dropped. `null` and wildcards are never allowed."""
    parts = urlsplit(value)
    if value in ("null", "*") or parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin like https://app.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r} is not an origin: no path, query or credentials")
    if "*" in value:
        raise ValueError(f"{value!r}: wildcards are not allowed in origins")
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    suffix = "" if port in (None, DEFAULT_PORTS[parts.scheme]) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}"


def check_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 63)")
    return value


Name = Annotated[str, AfterValidator(check_name)]
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


ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                         "ES512", "EdDSA")  # fmt: skip


def exact_http_url(value: str) -> str:
    """An http(s) URL kept byte for byte (issuers are compared exactly, RFC 8414 section 3.3)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http or https URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry credentials, a query or a fragment")
    return value


ExactUrl = Annotated[str, AfterValidator(exact_http_url)]


def check_scope_list(scopes: list[str]) -> list[str]:
    for scope in scopes:
        if not SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"scope {scope!r} is not a valid scope token")
    return scopes


ScopeList = Annotated[list[str], AfterValidator(check_scope_list)]
Requirement = ScopeList | Literal["deny"]


def normalized_header(name: str) -> str:
    """A header name as upstream frameworks may see it: case-folded, `_` read as `-`."""
    return name.lower().replace("_", "-")


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


class GrantRuleSettings(Model):
    when: dict[str, list[str | bool | int]] = Field(
        default_factory=dict,
        description="Claim -> values; the rule applies when every named claim has one of them. "
        "Empty: every user who can sign in.",
    )
    scopes: ScopeList
