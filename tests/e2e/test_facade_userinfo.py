"""Federated login against a stock-behaving OpenID provider: the grant rules' claims come from
UserInfo (OpenID Connect Core 5.3-5.4).

The test provider (`oidc-provider`, its default `conformIdTokenClaims: true`) returns `groups`
and `email` from UserInfo only; a second provider runs with them in the ID token as well. The
gateway's grant rule gives `mcp:tools` and `files:write` to group `eng` only, so a sign-in
succeeds only if the gateway saw the user's groups. User `eve` is in `eng`, but her UserInfo
answers `sub: "alice"`: the gateway must refuse it rather than take someone else's claims.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.federation import (
    APPROVE,
    ROUTE,
    authorization_query,
    federated_gateway,
    with_login_hint,
)
from tests.support.oauth_client import (
    AuthorizationError,
    follow_authorization,
    loopback_redirect_uri,
    oauth_list_and_call,
)
from tests.support.oidc import OidcProviderProcess, oidc_provider
from tests.support.processes import HttpServerProcess
from tests.support.secrets import remember
from tests.support.ts_client import run_ts_client


@pytest.fixture(scope="module")
def stock() -> Iterator[OidcProviderProcess]:
    """Claims requested by scope from UserInfo only, as a provider ships."""
    with oidc_provider() as running:
        yield running


@pytest.fixture(scope="module")
def generous() -> Iterator[OidcProviderProcess]:
    """Claims requested by scope in the ID token too (`conformIdTokenClaims: false`)."""
    with oidc_provider(claims_in_id_token=True) as running:
        yield running


def events(name: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    return [record for record in records if record.get("event") == name]


async def sign_in(gw: Gateway, provider: OidcProviderProcess, user: str = "alice") -> str:
    """One authorization for `mcp:tools` as `user`, by hand; the code the client gets."""
    redirect_uri = loopback_redirect_uri()
    query = await authorization_query(gw, redirect_uri)
    result = await follow_authorization(
        gw.url("/oauth/authorize?" + query),
        redirect_uri,
        sign_in=APPROVE,
        rewrite=with_login_hint(provider, user),
    )
    return result.code


async def userinfo_calls(provider: OidcProviderProcess) -> int:
    return (await provider.requests_seen()).get("GET /me", 0)


# -- the default: ID token and UserInfo ----------------------------------------------------------


async def test_the_sdk_client_gets_group_scopes_from_a_stock_providers_userinfo(
    start_gateway_for: StartGateway, stock: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(start_gateway_for, stock, sdk_json.url)
    before = await userinfo_calls(stock)
    outcome, record = await oauth_list_and_call(
        gw.url(ROUTE), "add", {"a": 40, "b": 2}, sign_in=APPROVE
    )
    assert outcome.call is not None
    assert outcome.call.text == "42"  # `add` needs files:write, granted to group eng only
    # Two sign-ins (mcp:tools, then the step-up to files:write), each read UserInfo once.
    assert len(record.authorization_urls) == 2
    assert await userinfo_calls(stock) == before + 2
    assert [e["sub"] for e in events("signed_in")] == ["alice", "alice"]


async def test_the_typescript_client_gets_group_scopes_from_a_stock_providers_userinfo(
    start_gateway_for: StartGateway, stock: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(start_gateway_for, stock, sdk_json.url)
    before = await userinfo_calls(stock)
    result = await run_ts_client(gw.url(ROUTE), username="", password="")
    for token in (result.get("access_token"), result.get("refresh_token")):
        if token:
            remember(token)
    assert result["call"] == {"is_error": False, "text": "hello"}
    assert result["callback_iss"].rstrip("/") == gw.base
    browser = [e["url"] for e in result["browser"]]
    assert any(url.startswith(stock.authorization_endpoint) for url in browser)
    assert await userinfo_calls(stock) == before + 1


async def test_a_user_outside_the_group_is_refused_after_userinfo(
    start_gateway_for: StartGateway, stock: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(start_gateway_for, stock, sdk_json.url)
    before = await userinfo_calls(stock)
    with pytest.raises(AuthorizationError) as refused:
        await sign_in(gw, stock, "bob")  # groups [sales]
    assert refused.value.error == "access_denied"
    assert "mcp:tools" in (refused.value.error_description or "")
    assert await userinfo_calls(stock) == before + 1


async def test_a_userinfo_answer_for_another_subject_is_refused(
    start_gateway_for: StartGateway, stock: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(start_gateway_for, stock, sdk_json.url)
    before = await userinfo_calls(stock)
    with pytest.raises(AuthorizationError) as refused:
        await sign_in(gw, stock, "eve")  # in eng, but her UserInfo says sub "alice"
    assert refused.value.error == "access_denied"
    assert refused.value.error_description == "The sign-in could not be verified"
    assert await userinfo_calls(stock) == before + 1  # asked, and refused what it said
    [refusal] = events("upstream_login_refused")
    assert (refusal["level"], refusal["reason"]) == ("warning", "userinfo_sub_mismatch")
    assert events("signed_in") == []


async def test_a_signed_userinfo_response_from_the_provider_is_accepted(
    start_gateway_for: StartGateway, stock: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(
        start_gateway_for,
        stock,
        sdk_json.url,
        client_metadata={"userinfo_signed_response_alg": "RS256"},
    )
    before = await userinfo_calls(stock)
    assert await sign_in(gw, stock)
    assert await userinfo_calls(stock) == before + 1
    assert events("upstream_login_refused") == []


# -- claims_from ------------------------------------------------------------------------------


async def test_id_token_claims_only_miss_the_groups_of_a_stock_provider(
    start_gateway_for: StartGateway, stock: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(start_gateway_for, stock, sdk_json.url, claims_from=["id_token"])
    before = await userinfo_calls(stock)
    with pytest.raises(AuthorizationError) as refused:
        await sign_in(gw, stock)  # alice is in eng, but the ID token does not say so
    assert refused.value.error == "access_denied"
    assert "mcp:tools" in (refused.value.error_description or "")
    assert await userinfo_calls(stock) == before  # never asked
    assert [e["sub"] for e in events("signed_in")] == ["alice"]


async def test_id_token_claims_only_work_with_a_provider_that_puts_groups_there(
    start_gateway_for: StartGateway, generous: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(
        start_gateway_for, generous, sdk_json.url, claims_from=["id_token"]
    )
    before = await userinfo_calls(generous)
    outcome, _ = await oauth_list_and_call(gw.url(ROUTE), "add", {"a": 40, "b": 2}, sign_in=APPROVE)
    assert outcome.call is not None
    assert outcome.call.text == "42"
    assert await userinfo_calls(generous) == before


async def test_the_default_also_works_with_groups_in_the_id_token(
    start_gateway_for: StartGateway, generous: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(start_gateway_for, generous, sdk_json.url)
    before = await userinfo_calls(generous)
    assert await sign_in(gw, generous)
    assert await userinfo_calls(generous) == before + 1


async def test_userinfo_claims_only_work_with_a_stock_provider(
    start_gateway_for: StartGateway, stock: OidcProviderProcess, sdk_json: HttpServerProcess
) -> None:
    gw = await federated_gateway(start_gateway_for, stock, sdk_json.url, claims_from=["userinfo"])
    before = await userinfo_calls(stock)
    assert await sign_in(gw, stock)
    assert await userinfo_calls(stock) == before + 1
