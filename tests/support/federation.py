"""A gateway in facade mode whose users sign in at the test OpenID provider (`tests.support.oidc`).

`federated_gateway` registers the gateway as a public client at the provider (redirect URI: the
gateway's `/oauth/callback`), then starts the gateway in front of `upstream_url` at `ROUTE`,
where users in group `eng` may get `mcp:tools` and `files:write` (and nobody else anything),
and the tool `add` needs `files:write`. The provider returns `groups` from UserInfo only unless
it runs with ``claims_in_id_token=True``; the gateway asks for the `openid email groups` scopes.

`authorized_token_claims` runs one whole authorization and returns the gateway token's claims.
`authorization_query` and `with_login_hint` drive one authorization by hand (with
`tests.support.oauth_client.follow_authorization`), e.g. to sign in as another test user: the
gateway does not pass a client's `login_hint` on, so the test adds it to the provider's URL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx2

from gateway.oauth.upstream import pkce_pair
from tests.conftest import Gateway, StartGateway
from tests.support.oauth_client import SignIn, follow_authorization, loopback_redirect_uri
from tests.support.oidc import OidcProviderProcess
from tests.support.processes import free_port

ROUTE = "/files/mcp"
SCOPES = ["openid", "email", "groups"]
GROUP_GRANTS = [{"when": {"groups": ["eng"]}, "scopes": ["mcp:tools", "files:write"]}]
APPROVE = SignIn("", "")  # nothing to type at the gateway: the provider signs the user in


async def register_at_provider(
    provider: OidcProviderProcess, callback: str, **metadata: Any
) -> str:
    """Register the gateway at the provider as a public client; its client id."""
    async with httpx2.AsyncClient(timeout=10, trust_env=False) as http:
        registered = await http.post(
            provider.registration_endpoint,
            json={
                "redirect_uris": [callback],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                **metadata,
            },
        )
    assert registered.status_code == 201, registered.text
    client_id: str = registered.json()["client_id"]
    return client_id


async def federated_gateway(
    start: StartGateway,
    provider: OidcProviderProcess,
    upstream_url: str,
    *,
    claims_from: list[str] | None = None,
    scopes: list[str] = SCOPES,
    grants: list[dict[str, Any]] = GROUP_GRANTS,
    client_metadata: dict[str, Any] | None = None,
) -> Gateway:
    """`claims_from` None: the gateway's default. `client_metadata`: extra registration
    metadata for the gateway's client at the provider (e.g. `userinfo_signed_response_alg`)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client_id = await register_at_provider(
        provider, base + "/oauth/callback", **(client_metadata or {})
    )
    oidc: dict[str, Any] = {"issuer": provider.issuer, "client_id": client_id, "scopes": scopes}
    if claims_from is not None:
        oidc["claims_from"] = claims_from
    return await start(
        {
            "name": "files",
            "route": ROUTE,
            "url": upstream_url,
            "scopes": ["mcp:tools"],
            "policy": {"tools": {"add": ["files:write"]}},
        },
        port=port,
        auth={"authorization_server": {"login": {"oidc": oidc}, "grants": grants}},
    )


async def authorization_query(gw: Gateway, redirect_uri: str, scope: str = "mcp:tools") -> str:
    """Register a public client at the gateway; the query of an authorization request for it."""
    async with httpx2.AsyncClient(timeout=10, trust_env=False) as http:
        registered = await http.post(
            gw.url("/oauth/register"),
            json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"},
        )
    assert registered.status_code == 201, registered.text
    _, challenge = pkce_pair()
    return urlencode(
        {"response_type": "code", "client_id": registered.json()["client_id"],
         "redirect_uri": redirect_uri, "state": "s1", "code_challenge": challenge,
         "code_challenge_method": "S256", "scope": scope, "resource": gw.url(ROUTE)}
    )  # fmt: skip


def with_login_hint(provider: OidcProviderProcess, user: str) -> Callable[[str], str]:
    """A `follow_authorization` rewrite that signs `user` in at the provider."""

    def rewrite(url: str) -> str:
        if not url.startswith(provider.authorization_endpoint + "?"):
            return url
        parts = urlsplit(url)
        return urlunsplit(parts._replace(query=parts.query + "&" + urlencode({"login_hint": user})))

    return rewrite


async def authorized_token_claims(gw: Gateway, **extra: str) -> dict[str, Any]:
    """One authorization of a fresh public client at the gateway (`extra`: more query
    parameters, e.g. `max_age`), the user approving, and its code redeemed: the claims of the
    gateway's access token (read, not verified: its signature is not what is under test)."""
    redirect_uri = loopback_redirect_uri()
    async with httpx2.AsyncClient(timeout=10, trust_env=False) as http:
        registered = await http.post(
            gw.url("/oauth/register"),
            json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"},
        )
        client_id = registered.json()["client_id"]
        verifier, challenge = pkce_pair()
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                  "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256",
                  "scope": "mcp:tools", "resource": gw.url(ROUTE), **extra}  # fmt: skip
        result = await follow_authorization(
            gw.url("/oauth/authorize?" + urlencode(params)), redirect_uri, sign_in=APPROVE
        )
        answer = await http.post(
            gw.url("/oauth/token"),
            data={"grant_type": "authorization_code", "code": result.code,
                  "redirect_uri": redirect_uri, "client_id": client_id,
                  "code_verifier": verifier, "resource": gw.url(ROUTE)},
        )  # fmt: skip
    assert answer.status_code == 200, answer.text
    payload = answer.json()["access_token"].split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims
