"""`server` and `log`: how the process listens, whom it accepts, how it logs (the sections the
environment can override)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    field_validator,
)

from gateway.config.fields import (
    HOST_PATTERN,
    LogFormat,
    LogLevel,
    Model,
    PositiveSeconds,
    serialized_origin,
)


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
    data_plane: Literal["lean", "aiohttp"] = Field(
        "lean",
        description="What serves requests to HTTP upstream routes: `lean`, the gateway's own "
        "HTTP/1.1 server for plain MCP requests (llhttp-parsed; anything else on the port still "
        "goes to aiohttp), or `aiohttp` for every request. Both answer alike; `lean` costs a "
        "fraction of the CPU per request.",
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
        return [serialized_origin(entry) for entry in value]

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for entry in value:
                if not HOST_PATTERN.fullmatch(entry):
                    raise ValueError(f"{entry!r} is not a host or host:port")
            return [entry.lower() for entry in value]
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_origin(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is not None and (value.query or value.fragment or value.username):
            raise ValueError("public_url must not carry credentials, a query or a fragment")
        return value
