"""What every part of the authorization server shares: its settings, state and collaborators.

The modules of each concern (`metadata`, `registration`, `clients`, `authorize`, `consent`,
`sign_in`, `token`, `revocation`) are functions over a `ServerContext`; `AuthorizationServer`
(`gateway.oauth.server`) is the context with one entry point per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from multidict import MultiMapping

from gateway.oauth.client_documents import ClientDocuments
from gateway.oauth.records import ClientRecord
from gateway.oauth.signing import SigningKeys
from gateway.oauth.store import AuthStore
from gateway.oauth.users import LocalUsers
from gateway.policy.grants import Grants

OFFLINE_ACCESS = "offline_access"
"""Asks for a refresh token (OpenID Connect Core section 11); never a resource scope."""


@dataclass(frozen=True, slots=True)
class Settings:
    issuer: str
    resources: Mapping[str, Sequence[str]]
    """Each route's resource URL -> its baseline scopes (the default request)."""
    access_token_lifetime: int
    refresh_token_lifetime: float
    code_lifetime: float
    login_lifetime: float
    dynamic_registration: bool = True
    session_idle: float = 1800.0
    """Sign-in sessions end after this many seconds unused; 0: no sign-in sessions."""
    session_lifetime: float = 43_200.0
    resource_names: Mapping[str, str] = field(default_factory=dict)
    """Resource URL -> the MCP server's name, for the pages."""
    scope_descriptions: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ServerContext:
    """The authorization server's parts. Mutable on purpose: the app wires `on_revoked` and
    `resource_scopes` after building it, and every step reads them at call time."""

    settings: Settings
    store: AuthStore
    keys: SigningKeys
    grants: Grants
    users: LocalUsers | None
    clients: Mapping[str, ClientRecord] = field(default_factory=dict)
    """Clients registered in the config (they win over dynamic ones of the same id)."""
    documents: ClientDocuments | None = None
    """Resolves `https://` client ids (Client ID Metadata Documents); None: not supported."""
    clock: Callable[[], float] = time.time
    on_revoked: Callable[[], None] = lambda: None
    """Called after something may have been revoked, so that it takes effect at once here
    (open streams included)."""
    resource_scopes: Callable[[str], frozenset[str] | None] = lambda resource: None
    """Every scope the route at a resource URL can require (None: unknown): the ceiling a
    token carries is cut to it."""


def single(query: MultiMapping[str], name: str) -> str | None:
    """The parameter's value when it is given exactly once, else None."""
    values = query.getall(name, ())
    return values[0] if len(values) == 1 else None
