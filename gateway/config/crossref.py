"""Checks across sections: unique upstream names and routes, servers named where they exist,
authentication configured where routes need it. Each problem is placed at the value at fault."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.auth import AuthSettings
from gateway.config.fields import GATEWAY_AS_NAME
from gateway.config.problems import YamlPath, did_you_mean
from gateway.config.upstreams import Upstream

Found = list[tuple[YamlPath, str]]


@dataclass(frozen=True, slots=True)
class UpstreamRefs:
    """What the checks across sections read of an upstream; None where it is not known."""

    name: str | None
    route: str | None
    allow_anonymous: bool | None
    authorization_servers: list[str] | None
    credential: str | None = None
    """The `upstream_auth` kind, if any."""

    @classmethod
    def of(cls, upstream: Upstream) -> UpstreamRefs:
        credential = getattr(upstream, "upstream_auth", None)
        return cls(
            upstream.name,
            upstream.route,
            upstream.allow_anonymous,
            upstream.authorization_servers,
            credential.kind if credential is not None else None,
        )

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], bad: Collection[str]) -> UpstreamRefs:
        """From an upstream that did not validate: the values whose own checks passed (`bad`:
        the keys that had a problem), so one problem does not hide another across sections."""

        def good(key: str, kind: type) -> Any:
            value = raw.get(key)
            return value if key not in bad and isinstance(value, kind) else None

        servers = good("authorization_servers", list)
        if servers is not None and not all(isinstance(name, str) for name in servers):
            servers = None
        anonymous = False if "allow_anonymous" not in raw else good("allow_anonymous", bool)
        credential = (good("upstream_auth", dict) or {}).get("kind")
        kind = credential if isinstance(credential, str) else None
        return cls(good("name", str), good("route", str), anonymous, servers, kind)


def cross_reference_problems(
    has_public_url: bool | None,
    auth: AuthSettings | None,
    upstreams: Mapping[int, UpstreamRefs],
) -> Found:
    """Problems between the sections given; a section that did not validate is None (or its
    upstreams absent), and the checks that need it are skipped rather than guessed."""
    found = _duplicates(upstreams)
    found += _credentials(auth, upstreams)
    if auth is not None:
        found += _trust(auth, upstreams)
        known = auth.resource_server is not None or auth.authorization_server is not None
        if known and has_public_url is False:
            found.append(
                (("server", "public_url"), "is required with auth: resource URLs derive from it")
            )
    return found


def _duplicates(upstreams: Mapping[int, UpstreamRefs]) -> Found:
    found: Found = []
    for attr in ("name", "route"):
        first: dict[str, int] = {}
        for index, upstream in sorted(upstreams.items()):
            value = getattr(upstream, attr)
            if value is None:
                continue
            if value in first:
                found.append(
                    (("upstreams", index, attr),
                     f"{value!r} is already the {attr} of upstreams[{first[value]}]")
                )  # fmt: skip
            first.setdefault(value, index)
    return found


def _credentials(auth: AuthSettings | None, upstreams: Mapping[int, UpstreamRefs]) -> Found:
    """An upstream credential is for a known caller, and `mint` needs the facade's key."""
    found: Found = []
    for index, upstream in sorted(upstreams.items()):
        if upstream.credential is None:
            continue
        path: YamlPath = ("upstreams", index, "upstream_auth")
        if upstream.allow_anonymous:
            found.append((path, "is for authenticated callers: not with allow_anonymous"))
        facade = auth is None or auth.authorization_server is not None
        if upstream.credential == "mint" and not facade:
            found.append(
                (path, "kind mint signs with the authorization server facade's key "
                       "(/oauth/jwks): configure auth.authorization_server")
            )  # fmt: skip
    return found


def _trust(auth: AuthSettings, upstreams: Mapping[int, UpstreamRefs]) -> Found:
    """Every route that needs tokens has servers to trust, and names only servers that exist."""
    found: Found = []
    servers = auth.resource_server.authorization_servers if auth.resource_server else []
    for index, server in enumerate(servers):
        if server.name == GATEWAY_AS_NAME:
            path: YamlPath = ("auth", "resource_server", "authorization_servers", index, "name")
            found.append((path, f"{GATEWAY_AS_NAME!r} is reserved for the gateway's own server"))
    known = {server.name for server in servers}
    if auth.authorization_server is not None:
        known.add(GATEWAY_AS_NAME)
    for index, upstream in sorted(upstreams.items()):
        if upstream.allow_anonymous is not False:  # anonymous, or not known
            continue
        if not known:
            found.append(
                (("upstreams", index),
                 "requires tokens, but neither auth.resource_server nor "
                 "auth.authorization_server is configured (or set allow_anonymous: true on it)")
            )  # fmt: skip
            continue
        for position, name in enumerate(upstream.authorization_servers or ()):
            if name not in known:
                message = f"no authorization server is named {name!r}" + did_you_mean(name, known)
                found.append((("upstreams", index, "authorization_servers", position), message))
    return found
