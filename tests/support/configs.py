"""Gateway configs for tests: one document with the suite's defaults, validated for a gateway in
this process or written as YAML for a gateway subprocess, so the two cannot drift.

`gateway_document` builds the plain dict (what a user's YAML file holds); `validated` turns it
into a `GatewayConfig` through the YAML loader and is the one place the tests validate a config
in process;
`write_yaml` writes it for `serve`, `check` or `explain`. Tests of config loading itself
(`tests/config/`, the CLI tests) write their YAML by hand, as a user does.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from gateway.config import GatewayConfig, parse_config

HOST: Final = "127.0.0.1"
TEST_LOG: Final[Mapping[str, str]] = {"level": "debug", "format": "json"}
"""Every event, one JSON line each: what tests read with `gateway_log()`."""
PRODUCTION_LOG: Final[Mapping[str, str]] = {"level": "info", "format": "json"}
"""What a production gateway runs with (one JSON access line per request)."""


class PublicUrl(enum.Enum):
    """The marker for a `public_url` derived from the port."""

    FROM_PORT = "http://127.0.0.1:<port>"


FROM_PORT: Final = PublicUrl.FROM_PORT
"""`public_url` is the listener's own loopback URL (set only when a port other than 0 is)."""


def gateway_document(
    *upstreams: Mapping[str, Any],
    port: int | None = None,
    public_url: str | PublicUrl | None = FROM_PORT,
    server: Mapping[str, Any] | None = None,
    log: Mapping[str, Any] = TEST_LOG,
    auth: Mapping[str, Any] | None = None,
    scopes: Mapping[str, Any] | None = None,
    sessions: Mapping[str, Any] | None = None,
    store: Mapping[str, Any] | None = None,
    tracing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A gateway config listening on 127.0.0.1 at `port` (None: the gateway's default or the
    environment's) in front of `upstreams`.

    `public_url` None leaves it unset (the bound port is served). `server` adds or overrides
    server settings. Without `auth`, upstreams are anonymous unless they say otherwise (transport
    tests); with it, they require tokens unless they say otherwise. Sections left at None are
    not written: the gateway's defaults apply. Paths anywhere in the document become strings.
    """
    if public_url is FROM_PORT:
        public_url = f"http://{HOST}:{port}" if port else None
    listener: dict[str, Any] = {"host": HOST}
    if port is not None:
        listener["port"] = port
    if public_url is not None:
        listener["public_url"] = public_url
    routes = [u if auth is not None else {"allow_anonymous": True, **u} for u in upstreams]
    sections: dict[str, Mapping[str, Any] | None] = {
        "auth": auth,
        "scopes": scopes,
        "sessions": sessions,
        "store": store,
        "tracing": tracing,
    }
    document: dict[str, Any] = {
        "server": {**listener, **(server or {})},
        "log": log,
        **{name: section for name, section in sections.items() if section is not None},
        "upstreams": routes,
    }
    plain: dict[str, Any] = _plain(document)
    return plain


def validated(document: Mapping[str, Any]) -> GatewayConfig:
    """The config a gateway in this process runs with: the one place tests validate one, as
    YAML text through the loader a user's file goes through (`create_app` compiles it)."""
    return parse_config(yaml.safe_dump(dict(document), sort_keys=False), source="<test config>")


def write_yaml(path: Path, document: Mapping[str, Any]) -> Path:
    """Write `document` as a YAML config file for a gateway subprocess or the CLI; `path`."""
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False))
    return path


def _plain(value: Any) -> Any:
    """A copy with plain YAML types only: mappings as dicts, sequences as lists, paths as text."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
