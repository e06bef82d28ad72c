"""Smoke tests for the test OpenID provider and the headless OAuth clients, with no gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from .oauth_client import (
    AuthorizationError,
    InMemoryTokenStorage,
    authorize,
    authorize_token,
    oauth_list_and_call,
    refresh,
    register_public_client,
)
from .oidc import (
    CC_CLIENT_ID,
    DEFAULT_SCOPE,
    RESOURCE_SCOPES,
    OidcProviderProcess,
    client_credentials_token,
    oidc_provider,
)
from .processes import free_port
from .sdk_protected_server import PROTECTED_TOOLS, sdk_protected_server

RESOURCE = f"http://127.0.0.1:{free_port()}/mcp"
OTHER_RESOURCE = f"http://127.0.0.1:{free_port()}/other"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProviderProcess]:
    with oidc_provider() as handle:
        yield handle


async def fetch_jwks(provider: OidcProviderProcess) -> KeySet:
    async with httpx2.AsyncClient(trust_env=False) as http:
        response = await http.get(provider.jwks_uri)
    response.raise_for_status()
    return KeySet.import_key_set(response.json())


def header_of(token: str) -> dict[str, Any]:
    return dict(jws.extract_compact(token.encode("ascii")).headers())


async def verified_claims(provider: OidcProviderProcess, token: str) -> dict[str, Any]:
    """The token's claims after checking its signature against the provider's live JWKS."""
    decoded = jwt.decode(token, await fetch_jwks(provider), algorithms=["RS256"])
    claims: dict[str, Any] = decoded.claims
    return claims


# -- discovery ---------------------------------------------------------------------------------


async def test_discovery_names_issuer_endpoints_and_iss_support(
    provider: OidcProviderProcess,
) -> None:
    async with httpx2.AsyncClient(trust_env=False) as http:
        response = await http.get(provider.discovery_url)
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == provider.issuer == f"http://127.0.0.1:{provider.port}"
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["jwks_uri"] == provider.jwks_uri
    assert metadata["registration_endpoint"] == provider.registration_endpoint
    assert metadata["token_endpoint"] == provider.token_endpoint
    assert metadata["authorization_endpoint"] == provider.authorization_endpoint
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert set(metadata["scopes_supported"]) == {
        "openid", "offline_access", "email", "groups", *RESOURCE_SCOPES
    }  # fmt: skip
    assert metadata["userinfo_endpoint"] == provider.userinfo_endpoint


async def test_jwks_serves_the_generated_keys(provider: OidcProviderProcess) -> None:
    served = await fetch_jwks(provider)
    assert [key.kid for key in served.keys] == [key.kid for key in provider.public_jwks().keys]
    assert all(not key.is_private for key in served.keys)


# -- authorization-code flow -------------------------------------------------------------------


async def test_authorized_token_is_an_rs256_jwt_bound_to_the_resource(
    provider: OidcProviderProcess,
) -> None:
    grant = await authorize(provider.issuer, RESOURCE, "mcp:tools files:read")
    assert header_of(grant.access_token)["alg"] == "RS256"
    assert header_of(grant.access_token)["typ"] == "at+jwt"
    claims = await verified_claims(provider, grant.access_token)
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == RESOURCE
    assert claims["scope"] == "mcp:tools files:read"
    assert claims["sub"] == "alice"
    assert claims["client_id"] == grant.client_id
    assert claims["groups"] == ["eng"]
    assert claims["exp"] > time.time()
    assert claims["exp"] - claims["iat"] == provider.token_ttl == grant.expires_in


async def test_request_without_scope_gets_the_default_scope(
    provider: OidcProviderProcess,
) -> None:
    claims = await verified_claims(provider, await authorize_token(provider.issuer, RESOURCE))
    assert claims["scope"] == DEFAULT_SCOPE


async def test_login_hint_picks_the_user(provider: OidcProviderProcess) -> None:
    token = await authorize_token(provider.issuer, RESOURCE, "mcp:tools", user="bob")
    claims = await verified_claims(provider, token)
    assert (claims["sub"], claims["groups"]) == ("bob", ["sales"])


async def test_unknown_user_is_denied(provider: OidcProviderProcess) -> None:
    with pytest.raises(AuthorizationError) as caught:
        await authorize_token(provider.issuer, RESOURCE, "mcp:tools", user="mallory")
    assert caught.value.error == "access_denied"


async def test_non_loopback_resource_is_refused(provider: OidcProviderProcess) -> None:
    with pytest.raises(AuthorizationError) as caught:
        await authorize_token(provider.issuer, "https://example.com/mcp", "mcp:tools")
    assert caught.value.error == "invalid_target"


async def test_ttl_hint_shortens_the_token(provider: OidcProviderProcess) -> None:
    grant = await authorize(provider.issuer, RESOURCE, "mcp:tools", ttl=1)
    claims = await verified_claims(provider, grant.access_token)
    assert claims["exp"] - claims["iat"] == 1 == grant.expires_in


async def test_refresh_rotates_and_keeps_the_resource(provider: OidcProviderProcess) -> None:
    grant = await authorize(provider.issuer, RESOURCE, "mcp:tools offline_access")
    assert grant.refresh_token is not None
    refreshed = await refresh(provider.issuer, grant)
    assert refreshed.refresh_token not in (None, grant.refresh_token)
    claims = await verified_claims(provider, refreshed.access_token)
    assert (claims["aud"], claims["scope"]) == (RESOURCE, "mcp:tools")


async def test_registered_scope_is_a_ceiling_by_default(provider: OidcProviderProcess) -> None:
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    client_id = await register_public_client(provider.issuer, redirect_uri, scope="mcp:tools")
    with pytest.raises(AuthorizationError) as caught:
        await authorize(
            provider.issuer, RESOURCE, "files:read", client_id=client_id, redirect_uri=redirect_uri
        )
    assert caught.value.error == "invalid_scope"


async def test_registered_scope_ceiling_can_be_lifted() -> None:
    async with oidc_provider(registered_scope_ceiling=False) as lenient:
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        client_id = await register_public_client(lenient.issuer, redirect_uri, scope="mcp:tools")
        grant = await authorize(
            lenient.issuer, RESOURCE, "files:read", client_id=client_id, redirect_uri=redirect_uri
        )
        assert (await verified_claims(lenient, grant.access_token))["scope"] == "files:read"


# -- client credentials ------------------------------------------------------------------------


async def test_client_credentials_token_for_another_resource(
    provider: OidcProviderProcess,
) -> None:
    token = await client_credentials_token(provider, OTHER_RESOURCE, "files:read", ttl=1)
    assert header_of(token)["typ"] == "at+jwt"
    claims = await verified_claims(provider, token)
    assert claims["aud"] == OTHER_RESOURCE
    assert claims["iss"] == provider.issuer
    assert claims["sub"] == claims["client_id"] == CC_CLIENT_ID
    assert claims["scope"] == "files:read"
    assert claims["exp"] - claims["iat"] == 1


# -- restart with the same keys ----------------------------------------------------------------


async def test_restart_keeps_the_keys_and_rotation_adds_one() -> None:
    async with oidc_provider() as restartable:
        before = await authorize_token(restartable.issuer, RESOURCE, "mcp:tools")
        kid = header_of(before)["kid"]

        await restartable.process.stop_async()
        with pytest.raises(httpx2.ConnectError):
            await fetch_jwks(restartable)
        await restartable.process.start_async()
        assert (await verified_claims(restartable, before))["aud"] == RESOURCE

        new_kid = restartable.rotate_keys()
        await restartable.process.stop_async()
        await restartable.process.start_async()
        after = await authorize_token(restartable.issuer, RESOURCE, "mcp:tools")
        assert header_of(after)["kid"] == new_kid != kid
        await verified_claims(restartable, before)  # the old key is still published
        keys_file = restartable.keys_file
    assert not keys_file.exists()


# -- the mcp SDK client's OAuth against an SDK resource server ---------------------------------


async def test_sdk_client_oauth_flow_against_protected_sdk_server(
    provider: OidcProviderProcess,
) -> None:
    async with sdk_protected_server(provider.issuer, required_scopes=("mcp:tools",)) as server:
        storage = InMemoryTokenStorage()
        outcome, record = await oauth_list_and_call(server.url, "whoami", storage=storage)
        assert set(outcome.tools) == PROTECTED_TOOLS
        assert outcome.call is not None
        assert outcome.call.text == f"alice {record.client_id} mcp:tools"
        assert record.issuer == provider.issuer

        first, prm = record.exchanges[:2]
        assert (first.method, first.url, first.status) == ("POST", server.url, 401)
        assert prm.url == f"{server.base_url}/.well-known/oauth-protected-resource/mcp"
        assert [a.split("?")[0] for a in record.authorization_urls] == [
            provider.authorization_endpoint
        ]
        assert record.access_token is not None
        claims = await verified_claims(provider, record.access_token)
        assert claims["aud"] == server.url
        assert record.refresh_token is not None  # the SDK adds offline_access

        # Stored tokens are reused: no second authorization.
        again, second = await oauth_list_and_call(
            server.url, "echo", {"text": "hi"}, storage=storage
        )
        assert again.call is not None
        assert again.call.text == "hi"
        assert second.authorization_urls == []
