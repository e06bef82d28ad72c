"""Facade mode with login federated to a real OpenID provider (npm `oidc-provider`).

The mcp 2.x client only knows the gateway's URL: it registers at the gateway, is sent to the
provider (headless auto-login as alice, groups [eng]), comes back through the gateway's
callback, approves, and gets a gateway token. The provider behaves like a stock one: `groups`
is not in the ID token, only in UserInfo, which the gateway reads after each sign-in. At that
callback the gateway checks the provider's RFC 9207 `iss` before redeeming the code, and never
passes the provider's error text on to the client. (UserInfo itself: test_facade_userinfo.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx2
import pytest

from gateway.oauth.upstream import pkce_pair
from tests.conftest import StartGateway, gateway_log
from tests.support.federation import APPROVE, ROUTE, authorized_token_claims, federated_gateway
from tests.support.oauth_client import (
    AuthorizationError,
    follow_authorization,
    loopback_redirect_uri,
    oauth_list_and_call,
)
from tests.support.oidc import OidcProviderProcess, oidc_provider
from tests.support.processes import HttpServerProcess


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProviderProcess]:
    with oidc_provider() as running:
        yield running


async def test_sdk_client_signs_in_at_the_upstream_provider_through_the_gateway(
    start_gateway_for: StartGateway, provider: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(start_gateway_for, provider, sdk_json.url)
    before = await provider.requests_seen()
    outcome, record = await oauth_list_and_call(
        gw.url(ROUTE), "add", {"a": 20, "b": 22}, sign_in=APPROVE
    )
    # Each authorization (first sign-in, then the step-up to files:write) sent the user to the
    # provider once, and the gateway redeemed each provider code exactly once and read the
    # user's groups from UserInfo once.
    assert len(record.authorization_urls) == 2
    seen = await provider.requests_seen()
    assert seen.get("POST /token", 0) == before.get("POST /token", 0) + 2
    assert seen.get("GET /me", 0) == before.get("GET /me", 0) + 2
    assert outcome.call is not None
    assert outcome.call.text == "42"
    assert record.issuer is not None
    assert record.issuer.rstrip("/") == gw.base  # the gateway's token, not the provider's
    urls = record.requested_urls
    assert any(url.startswith(provider.authorization_endpoint) for url in urls)
    assert any(url.startswith(gw.url("/oauth/callback")) for url in urls)


def with_iss(url: str, iss: str | None, error_text: str | None = None) -> str:
    """The callback URL with `iss` replaced (or removed), and optionally a provider error."""
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query) if k != "iss"]
    if iss is not None:
        params.append(("iss", iss))
    if error_text is not None:
        params.append(("error_description", error_text))
    return urlunsplit(parts._replace(query=urlencode(params)))


@pytest.mark.parametrize(
    "iss",
    ["https://evil.example", None, "{issuer}/"],
    ids=["other-issuer", "missing-while-advertised", "trailing-slash"],
)
async def test_a_callback_with_a_bad_iss_is_refused_before_any_token_request(
    start_gateway_for: StartGateway,
    provider: OidcProviderProcess,
    sdk_json: HttpServerProcess,
    iss: str | None,
) -> None:
    gw = await federated_gateway(start_gateway_for, provider, sdk_json.url)
    client_redirect = loopback_redirect_uri()
    async with httpx2.AsyncClient(timeout=10) as http:
        registered = await http.post(
            gw.url("/oauth/register"),
            json={"redirect_uris": [client_redirect], "token_endpoint_auth_method": "none"},
        )
    client_id = registered.json()["client_id"]
    _, challenge = pkce_pair()
    query = urlencode(
        {"response_type": "code", "client_id": client_id, "redirect_uri": client_redirect,
         "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256",
         "resource": gw.url(ROUTE)}
    )  # fmt: skip
    forged_iss = iss.format(issuer=provider.issuer) if iss else None
    secret_text = "provider-internal-detail-7f3a"

    def tamper(url: str) -> str:
        if url.startswith(gw.url("/oauth/callback")):
            return with_iss(url, forged_iss, secret_text)
        return url

    tokens_before = (await provider.requests_seen()).get("POST /token", 0)
    with pytest.raises(AuthorizationError) as refused:
        await follow_authorization(
            gw.url("/oauth/authorize?" + query), client_redirect, sign_in=APPROVE, rewrite=tamper
        )
    seen = await provider.requests_seen()
    assert seen.get("GET /auth", 0) >= 1  # the login did reach the provider...
    assert seen.get("POST /token", 0) == tokens_before  # ...but no code went to its token endpoint
    assert refused.value.error == "access_denied"
    assert secret_text not in (refused.value.error_description or "")
    assert secret_text not in str(refused.value)
    events = [json.loads(line) for line in gateway_log().splitlines() if "upstream_login" in line]
    assert [e["reason"] for e in events if e["event"] == "upstream_login_refused"] == [
        "iss_mismatch" if forged_iss else "iss_missing"
    ]
    # Refused at the iss check: nothing after the check ran.
    assert '"signed_in"' not in gateway_log()


async def test_max_age_passes_through_a_stock_provider_which_shows_its_auth_time(
    start_gateway_for: StartGateway, provider: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    """oidc-provider in its default configuration adds `auth_time` to the ID token when asked
    for `max_age` (as OpenID Connect requires), so the gateway's check of it refuses no one;
    the gateway's token carries the provider's `auth_time`."""
    gw = await federated_gateway(start_gateway_for, provider, sdk_json.url)
    started = int(time.time())
    claims = await authorized_token_claims(gw, max_age="600")
    assert started - 5 <= claims["auth_time"] <= int(time.time())
    assert '"upstream_login_refused"' not in gateway_log()
