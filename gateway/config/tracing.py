"""`tracing`: OpenTelemetry traces of MCP requests, exported over OTLP/HTTP (off by default).

Enabling it needs the optional extra (`pip install 'mcp-auth-gateway[otel]'`); `check` says so
when it is missing. W3C trace context (`traceparent`, `tracestate`) is taken only from
`trusted_clients`: anyone else's request starts a new trace and its trace context goes nowhere.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.fields import FORBIDDEN_STATIC_HEADERS, TOKEN_CHARS, Model
from gateway.config.secrets import SecretFileMixin

TRACE_CONTEXT_HEADERS = frozenset({"traceparent", "tracestate"})


class TracingSettings(SecretFileMixin, Model):
    """Traces: a server span per MCP request, with child spans for authentication, the policy
    decision and the upstream exchange, sent in batches to an OTLP/HTTP collector."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"headers"})

    enabled: bool = Field(False, description="Record and export traces.")
    endpoint: str | None = Field(
        None,
        description="The collector's OTLP/HTTP traces URL, e.g. "
        "`http://otel-collector:4318/v1/traces` (required when enabled).",
    )
    service_name: str = Field(
        "mcp-auth-gateway",
        min_length=1,
        max_length=100,
        pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
        description="The `service.name` resource attribute of every span.",
    )
    sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded (parent-based: a trusted client's sampling "
        "decision in `traceparent` is followed).",
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Headers sent with every export (e.g. the collector's API key). "
        "`headers_file` maps header names to files holding the values.",
    )
    trusted_clients: list[IPv4Network | IPv6Network] | Literal["all"] = Field(
        default_factory=list,
        description="Clients (CIDRs of the client address, see `server.trusted_proxies`) whose "
        "`traceparent`/`tracestate` continue their trace, or `all`. Anyone else's request "
        "starts a new trace, and its trace context is not passed upstream.",
    )
    export_timeout: float = Field(
        10.0, gt=0, le=60, description="Seconds one export (retries included) may take."
    )
    schedule_delay: float = Field(
        5.0, gt=0, le=60, description="Seconds between exports of the spans that have ended."
    )
    max_queue_size: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="Ended spans held for export; when the collector is slow or down, more are "
        "dropped (requests never wait for the collector).",
    )
    max_export_batch_size: int = Field(
        512, ge=1, le=100_000, description="Most spans sent in one export."
    )
    shutdown_timeout: float = Field(
        5.0, gt=0, le=60, description="Seconds the last export may take at shutdown."
    )

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http or https URL")
        if parts.username or parts.password or parts.fragment:
            raise ValueError("must not carry credentials or a fragment (use headers)")
        try:
            parts.port  # noqa: B018 - a port out of range raises here
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not TOKEN_CHARS.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP field name")
            if name.lower() in FORBIDDEN_STATIC_HEADERS | {"content-type", "content-encoding"}:
                raise ValueError(f"header {name!r} is set by the exporter")
            text = secret.get_secret_value()
            if any(ch in text for ch in "\r\n\0") or text != text.strip():
                raise ValueError(f"header {name!r} has a control character or edge whitespace")
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> TracingSettings:
        if self.enabled and self.endpoint is None:
            raise ValueError("tracing enabled needs endpoint (the collector's traces URL)")
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError("max_export_batch_size must not exceed max_queue_size")
        return self

    def trusts_all(self) -> bool:
        return self.trusted_clients == "all"
