"""The credential of each route that has `upstream_auth`, of its kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never

from gateway.auth.authenticator import HttpSessionHolder
from gateway.config.upstream_auth import ExchangeAuth, MintAuth, UserOAuth
from gateway.config.upstreams import HttpUpstream
from gateway.oauth.server import AuthorizationServer
from gateway.observability.metrics import GatewayMetrics
from gateway.store.kv import KeyValueStore
from gateway.store.memory import MemoryKV
from gateway.upstream_auth.base import UpstreamCredential, outcome_counter
from gateway.upstream_auth.client_auth import ClientAuthentication, client_authentication
from gateway.upstream_auth.connect_flow import ConnectFlow, callback_path
from gateway.upstream_auth.exchange import ExchangedCredential
from gateway.upstream_auth.grants import GrantStore
from gateway.upstream_auth.keeper import GrantKeeper
from gateway.upstream_auth.mint import MintedCredential
from gateway.upstream_auth.provider import ThirdPartyProvider
from gateway.upstream_auth.sealing import GrantSealer
from gateway.upstream_auth.tickets import Tickets
from gateway.upstream_auth.user_oauth import UserOAuthCredential


@dataclass(frozen=True, slots=True)
class CredentialServices:
    """What the credentials of every route share."""

    metrics: GatewayMetrics
    http: HttpSessionHolder
    facade: AuthorizationServer | None
    store: KeyValueStore | None
    public_base: str


def build_credential(
    upstream: HttpUpstream,
    services: CredentialServices,
    route_scopes: Callable[[], frozenset[str]],
) -> UpstreamCredential | None:
    """The route's credential (None: the route has no `upstream_auth`)."""
    settings = upstream.upstream_auth
    if settings is None:
        return None
    count = outcome_counter(services.metrics, upstream.name, settings.kind)
    match settings:
        case MintAuth():
            facade = services.facade
            assert facade is not None  # the config refuses mint without the facade
            return MintedCredential(
                settings,
                upstream=upstream.name,
                issuer=facade.settings.issuer,
                keys=lambda: facade.keys,
                route_scopes=route_scopes,
                count=count,
            )
        case ExchangeAuth():
            return ExchangedCredential(
                settings,
                upstream=upstream.name,
                http=services.http,
                client=_client(settings),
                route_scopes=route_scopes,
                count=count,
            )
        case UserOAuth():
            return _user_oauth(upstream.name, settings, services, count)
        case _:
            assert_never(settings)


def _user_oauth(
    name: str, settings: UserOAuth, services: CredentialServices, count: Callable[[str], None]
) -> UserOAuthCredential:
    """The route's provider client, grant keeper and connect flow, over the shared store (or,
    without Redis, a store in this process: grants then live as long as the process)."""
    store = services.store if services.store is not None else MemoryKV()
    sealer = GrantSealer.from_keys([key.get_secret_value() for key in settings.encryption_keys])
    redirect_uri = services.public_base + callback_path(name)
    provider = ThirdPartyProvider(settings, redirect_uri, services.http)
    grants = GrantStore(store, sealer, name)
    keeper = GrantKeeper(provider, grants, store, settings, count, upstream=name)
    flow = ConnectFlow(name, provider, keeper, sealer, store)
    return UserOAuthCredential(
        settings, flow, Tickets(sealer, name), public_base=services.public_base, count=count
    )


def _client(settings: ExchangeAuth) -> ClientAuthentication:
    """How the gateway authenticates at the exchange's token endpoint."""
    secret, key = settings.client_secret, settings.private_key
    return client_authentication(
        settings.client_auth,
        settings.client_id,
        client_secret=secret.get_secret_value() if secret is not None else None,
        private_key=key.get_secret_value() if key is not None else None,
    )
