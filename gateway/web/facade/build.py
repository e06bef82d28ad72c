"""Building the authorization server from the config: its settings, keys, grant rules, users,
configured clients and state store."""

from __future__ import annotations

import time

from gateway.compiler import CompiledConfig
from gateway.config.auth import AuthorizationServerSettings, ClientIdMetadataDocuments
from gateway.config.model import GatewayConfig
from gateway.oauth.client_documents import ClientDocuments
from gateway.oauth.context import Settings
from gateway.oauth.kv_store import KvAuthStore
from gateway.oauth.memory_store import MemoryStore
from gateway.oauth.records import NO_CLIENT_AUTH, ClientRecord, digest
from gateway.oauth.server import AuthorizationServer
from gateway.oauth.signing import SigningKeys
from gateway.observability.logging import get_logger
from gateway.policy.grants import Grants, rule
from gateway.policy.scopes import ScopeImplications
from gateway.store.kv import KeyValueStore

audit = get_logger("gateway.audit")


def build_authorization_server(
    compiled: CompiledConfig, shared: KeyValueStore | None = None
) -> AuthorizationServer:
    """The facade for `auth.authorization_server` (which must be set), with the signing keys
    and users the config compiled to (a new key when none is configured); its state in
    `shared` (Redis, every replica) or else in this process's memory."""
    config = compiled.config
    settings = config.auth.authorization_server
    assert settings is not None
    return AuthorizationServer(
        settings=_settings(config, settings),
        store=KvAuthStore(shared) if shared is not None else MemoryStore(),
        keys=compiled.signing_keys or SigningKeys.generate(),
        grants=Grants(
            [rule(grant.when, grant.scopes) for grant in settings.grants],
            ScopeImplications(config.scopes.implies),
        ),
        users=compiled.users,
        clients=_configured_clients(settings),
        documents=_client_documents(settings.client_id_metadata_documents),
    )


def _settings(config: GatewayConfig, settings: AuthorizationServerSettings) -> Settings:
    """The issuer is the public URL; each protected route is a resource with its scopes."""
    base = config.public_base()
    protected = [upstream for upstream in config.upstreams if not upstream.allow_anonymous]
    session = settings.sign_in_session
    return Settings(
        issuer=base,
        resources={base + upstream.route: tuple(upstream.scopes) for upstream in protected},
        access_token_lifetime=int(settings.access_token_lifetime),
        refresh_token_lifetime=settings.refresh_token_lifetime,
        code_lifetime=settings.code_lifetime,
        login_lifetime=settings.login_lifetime,
        dynamic_registration=settings.dynamic_registration,
        session_idle=session.idle_timeout if session.enabled else 0.0,
        session_lifetime=session.max_lifetime,
        resource_names={base + u.route: u.resource_name or u.name for u in protected},
        scope_descriptions=dict(settings.scope_descriptions),
    )


def _configured_clients(settings: AuthorizationServerSettings) -> dict[str, ClientRecord]:
    """The clients the config registers: public, or confidential with `client_secret_basic`."""
    now = time.time()
    return {
        client.client_id: ClientRecord(
            client_id=client.client_id,
            redirect_uris=tuple(client.redirect_uris),
            created_at=now,
            client_name=client.client_name,
            token_endpoint_auth_method=NO_CLIENT_AUTH
            if client.client_secret is None
            else "client_secret_basic",
            secret_hash=None
            if client.client_secret is None
            else digest(client.client_secret.get_secret_value()),
        )
        for client in settings.clients
    }


def _client_documents(settings: ClientIdMetadataDocuments) -> ClientDocuments | None:
    if not settings.enabled:
        return None
    if settings.allow_loopback_for_testing:
        audit.warning("client_documents_from_loopback_allowed", note="for tests only")
    return ClientDocuments(
        allow_loopback=settings.allow_loopback_for_testing,
        max_bytes=settings.max_bytes,
        timeout=settings.timeout,
    )
