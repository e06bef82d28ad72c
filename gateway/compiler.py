"""The second loading pass: a validated config compiled into what the running gateway uses.

`gateway.config` validates the document (the first pass) without knowing what policies, users
or keys are; here each validated section is compiled, and what only compiling can find is
reported into the same problem list: patterns that tie, scope implication cycles, signing keys
that do not load, a users file that cannot be read. A section that did not validate is not
compiled, so `check` reports every problem of both passes in one run without knock-ons.

`load` is what `serve`, `check`, `explain` and reloads call.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.config.auth import AuthorizationServerSettings
from gateway.config.loader import Validated, read_config_text, validate_document
from gateway.config.problems import Problems, YamlPath
from gateway.config.upstream_auth import ExchangeAuth, MintAuth
from gateway.oauth.signing import SigningKey, SigningKeyError, SigningKeys
from gateway.oauth.users import LocalUsers, UsersFileError
from gateway.policy.compiled import compile_policies, route_problems
from gateway.policy.decision import RoutePolicy
from gateway.policy.scopes import ScopeCycleError, ScopeImplications

_FACADE: YamlPath = ("auth", "authorization_server")


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    """A config with everything compiled from it that startup needs."""

    config: GatewayConfig
    policies: dict[str, RoutePolicy]
    signing_keys: SigningKeys | None
    """The facade's configured keys (None: no facade, or a key generated per process)."""
    users: LocalUsers | None
    """The facade's local users (None: no facade, or sign-in at an OpenID provider)."""
    audit_key: SigningKey | None = None
    """`audit.signing_key` (None: not configured; the facade's key signs checkpoints)."""


def load(path: str | os.PathLike[str], *, policy_only: bool = False) -> CompiledConfig:
    """Both passes over a config file; `ConfigError` lists every problem of both.

    `policy_only`: for `explain`, which needs only the policy: no secret or users file is read
    and no unset variable is a problem unless the policy needs what it leaves empty.
    """
    return load_text(read_config_text(path), source=str(path), policy_only=policy_only)


def load_text(
    text: str,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    policy_only: bool = False,
) -> CompiledConfig:
    validated = validate_document(text, source=source, env=env, policy_only=policy_only)
    return _compiled(validated, policy_only=policy_only)


def compile_config(config: GatewayConfig, *, source: str = "<config>") -> CompiledConfig:
    """The second pass over a config built in code (its problems have no lines)."""
    sections = {name: value for name, value in config if name != "upstreams"}
    validated = Validated({}, Problems(source), sections, dict(enumerate(config.upstreams)))
    validated.complete = True
    return _compiled(validated, policy_only=False)


def _compiled(validated: Validated, *, policy_only: bool) -> CompiledConfig:
    problems = validated.problems
    _check_policies(validated)
    _check_credentials(validated)
    _check_tracing(validated)
    facade = validated.sections.get("auth")
    settings = facade.authorization_server if facade is not None else None
    keys = users = None
    if settings is not None and not policy_only:
        keys = _signing_keys(settings, problems)
        users = _users(settings, problems)
    audit_key = _audit_key(validated, policy_only=policy_only)
    problems.found.sort(key=lambda problem: problem.line or 0)
    config = validated.whole()
    return CompiledConfig(config, compile_policies(config), keys, users, audit_key)


def _check_policies(validated: Validated) -> None:
    problems = validated.problems
    scopes = validated.sections.get("scopes")
    if scopes is not None:
        try:
            ScopeImplications(scopes.implies)
        except ScopeCycleError as exc:
            problems.add(("scopes", "implies"), str(exc))
    auth = validated.sections.get("auth")
    for index, upstream in sorted(validated.upstreams.items()):
        for path, message in route_problems(upstream, auth):
            problems.add(("upstreams", index, *path), message)


def _check_credentials(validated: Validated) -> None:
    """What only loading finds in `upstream_auth`: a `private_key` that does not load, and a
    minted audience that is one of the gateway's own resource URLs (the gateway would accept
    the minted token itself, so an upstream could replay it here)."""
    server = validated.sections.get("server")
    resources: set[str] = set()
    if server is not None and server.public_url is not None:
        base = str(server.public_url).rstrip("/")
        resources = {base + upstream.route for upstream in validated.upstreams.values()}
    for index, upstream in sorted(validated.upstreams.items()):
        settings = getattr(upstream, "upstream_auth", None)
        path: YamlPath = ("upstreams", index, "upstream_auth")
        if isinstance(settings, MintAuth) and settings.audience in resources:
            validated.problems.add(
                (*path, "audience"),
                "is one of the gateway's own resource URLs: the gateway would accept the "
                "minted token itself; use the upstream's own identifier",
            )
        if isinstance(settings, ExchangeAuth) and settings.private_key is not None:
            try:
                SigningKey.from_text(settings.private_key.get_secret_value())
            except SigningKeyError as exc:
                validated.problems.add((*path, "private_key"), str(exc))  # never the key


OTEL_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
"""What `tracing` needs: the `otel` extra (`pip install 'mcp-auth-gateway[otel]'`)."""


def _check_tracing(validated: Validated) -> None:
    """Tracing on needs the optional extra installed; say so rather than fail at start-up."""
    tracing = validated.sections.get("tracing")
    if tracing is None or not tracing.enabled:
        return
    if not all(_importable(name) for name in OTEL_MODULES):
        validated.problems.add(
            ("tracing", "enabled"),
            "tracing needs the OpenTelemetry packages of the optional extra `otel`: "
            "pip install 'mcp-auth-gateway[otel]'",
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def _signing_keys(settings: AuthorizationServerSettings, problems: Problems) -> SigningKeys | None:
    """The configured signing keys, each one that does not load a problem at its place."""
    if settings.signing_key is None:
        return None
    texts: list[tuple[YamlPath, str]] = [
        ((*_FACADE, "signing_key"), settings.signing_key.get_secret_value()),
        *(((*_FACADE, "previous_signing_keys", index), key.get_secret_value())
          for index, key in enumerate(settings.previous_signing_keys)),
    ]  # fmt: skip
    keys: list[SigningKey] = []
    for path, text in texts:
        try:
            keys.append(SigningKey.from_text(text))
        except SigningKeyError as exc:
            problems.add(path, str(exc))  # never the key itself
    kids = [key.kid for key in keys]
    if len(kids) != len(set(kids)):
        problems.add(_FACADE, "a signing key is listed twice (signing_key, previous_signing_keys)")
    if len(keys) != len(texts):
        return None
    return SigningKeys(keys[0], tuple(keys[1:]))


def _users(settings: AuthorizationServerSettings, problems: Problems) -> LocalUsers | None:
    if settings.login.local is None:
        return None
    try:
        return LocalUsers.load(Path(settings.login.local.users_file))
    except UsersFileError as exc:
        problems.add((*_FACADE, "login", "local", "users_file"), str(exc))
        return None


def _audit_key(validated: Validated, *, policy_only: bool) -> SigningKey | None:
    """`audit.signing_key`, loaded; without the facade (whose key signs otherwise) it is
    required."""
    audit, auth = validated.sections.get("audit"), validated.sections.get("auth")
    if audit is None or policy_only:
        return None
    if audit.signing_key is None:
        if auth is not None and auth.authorization_server is None:
            validated.problems.add(
                ("audit",),
                "checkpoints need a signing key: set signing_key (or signing_key_file), or "
                "configure auth.authorization_server, whose key then signs them",
            )
        return None
    try:
        return SigningKey.from_text(audit.signing_key.get_secret_value())
    except SigningKeyError as exc:
        validated.problems.add(("audit", "signing_key"), str(exc))  # never the key itself
        return None
