"""`ThirdPartyProvider` against the test provider on loopback: discovery with an exact issuer,
the authorization-code flow with PKCE S256 done headlessly over HTTP, the RFC 9207 `iss` check
of the callback, refresh with rotation, revocation, and strict parsing of token answers."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.auth.authenticator import HttpSessionHolder
from gateway.oauth.issuer_check import IssuerMismatchError
from gateway.oauth.upstream import pkce_pair
from gateway.upstream_auth.grants import ProviderGrant
from gateway.upstream_auth.provider import (
    GrantRevokedError,
    ProviderUnavailableError,
    ProviderUnusableError,
    ThirdPartyProvider,
    parse_token_answer,
)
from tests.conftest import gateway_log
from tests.support.oauth_provider import OAuthProvider
from tests.upstream_auth.conftest import CALLBACK, new_key


def client(provider: OAuthProvider, http: HttpSessionHolder, **settings: Any) -> ThirdPartyProvider:
    return ThirdPartyProvider(
        provider.user_oauth(encryption_keys=[new_key()], **settings), CALLBACK, http
    )


async def authorize(
    http: HttpSessionHolder, url: str, *, user: str | None = None
) -> dict[str, list[str]]:
    """Follow the authorization URL like a browser would, up to the redirect back: its query."""
    if user is not None:
        url += "&login_hint=" + user
    async with http.get().get(url, allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


async def connect(
    provider: OAuthProvider, http: HttpSessionHolder, oauth: ThirdPartyProvider, user: str
) -> ProviderGrant:
    verifier, challenge = pkce_pair()
    url = await oauth.authorization_url(state="st-1", code_challenge=challenge)
    query = await authorize(http, url, user=user)
    oauth.check_issuer(query)
    assert query["state"] == ["st-1"]
    return await oauth.redeem(query["code"][0], verifier)


async def test_authorization_code_flow_gives_each_user_their_own_grant(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    oauth = client(provider, http)
    alice = await connect(provider, http, oauth, "alice")
    bob = await connect(provider, http, oauth, "bob")
    assert provider.owner_of(alice.access_token) == "alice"
    assert provider.owner_of(bob.access_token) == "bob"
    assert alice.refresh_token is not None
    assert alice.expires_at is not None
    assert alice.scope == "repo read:user"
    authorize_request = next(seen for seen in provider.requests if seen.path == "/authorize")
    assert authorize_request.params["code_challenge_method"] == "S256"
    assert authorize_request.params["redirect_uri"] == CALLBACK
    token_requests = [seen for seen in provider.requests if seen.path == "/token"]
    assert all(seen.client_authenticated for seen in token_requests)
    assert all("client_id" not in seen.params for seen in token_requests)  # Basic, not form


async def test_a_public_client_sends_its_id_in_the_form(http: HttpSessionHolder) -> None:
    async with OAuthProvider(redirect_uris=[CALLBACK], client_secret=None) as provider:
        oauth = client(provider, http)
        grant = await connect(provider, http, oauth, "carol")
        assert provider.owner_of(grant.access_token) == "carol"
        redeemed = [seen for seen in provider.requests if seen.path == "/token"]
        assert redeemed[0].params["client_id"] == "gateway-client"


async def test_a_code_redeemed_with_the_wrong_verifier_is_refused(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    oauth = client(provider, http)
    _, challenge = pkce_pair()
    query = await authorize(
        http, await oauth.authorization_url(state="s", code_challenge=challenge)
    )
    other_verifier, _ = pkce_pair()
    with pytest.raises(GrantRevokedError):
        await oauth.redeem(query["code"][0], other_verifier)


async def test_refresh_rotates_and_an_old_refresh_token_is_refused(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    oauth = client(provider, http)
    first = await connect(provider, http, oauth, "alice")
    second = await oauth.refresh(first)
    assert second.refresh_token not in (None, first.refresh_token)
    assert second.access_token != first.access_token
    assert provider.owner_of(second.access_token) == "alice"
    with pytest.raises(GrantRevokedError):
        await oauth.refresh(first)  # reuse: the provider revokes the family
    assert provider.owner_of(second.access_token) is None


async def test_a_refresh_answer_without_refresh_token_keeps_the_old_one() -> None:
    old = ProviderGrant("at-1", "rt-1", 100.0, "repo")
    new = parse_token_answer(
        {"access_token": "at-2", "token_type": "Bearer"}, now=0.0, previous=old
    )
    assert new == ProviderGrant("at-2", "rt-1", None, "repo")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"token_type": "Bearer"}, id="no-access-token"),
        pytest.param({"access_token": "", "token_type": "Bearer"}, id="empty-access-token"),
        pytest.param({"access_token": "a\r\nb", "token_type": "Bearer"}, id="crlf-in-token"),
        pytest.param({"access_token": "a b", "token_type": "Bearer"}, id="space-in-token"),
        pytest.param({"access_token": 7, "token_type": "Bearer"}, id="number-token"),
        pytest.param({"access_token": "a"}, id="no-token-type"),
        pytest.param({"access_token": "a", "token_type": "mac"}, id="mac-token-type"),
        pytest.param({"access_token": "a", "token_type": "Bearer", "expires_in": 0}, id="exp-0"),
        pytest.param(
            {"access_token": "a", "token_type": "Bearer", "expires_in": "60"}, id="exp-str"
        ),
        pytest.param({"access_token": "a", "token_type": "Bearer", "expires_in": 6.5}, id="exp-f"),
        pytest.param({"access_token": "a", "token_type": "Bearer", "expires_in": True}, id="exp-b"),
        pytest.param({"access_token": "a", "token_type": "Bearer", "refresh_token": 1}, id="rt-n"),
        pytest.param(
            {"access_token": "a", "token_type": "Bearer", "scope": ["x"]}, id="scope-list"
        ),
    ],
)
def test_malformed_token_answers_are_refused(answer: dict[str, Any]) -> None:
    with pytest.raises(ProviderUnavailableError):
        parse_token_answer(answer, now=0.0)


def test_a_well_formed_token_answer() -> None:
    answer = {"access_token": "a.b-c", "token_type": "bearer", "expires_in": 60,
              "refresh_token": "r", "scope": "repo"}  # fmt: skip
    assert parse_token_answer(answer, now=1000.0) == ProviderGrant("a.b-c", "r", 1060.0, "repo")


async def test_revocation_revokes_at_the_provider(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    oauth = client(provider, http)
    grant = await connect(provider, http, oauth, "alice")
    assert grant.refresh_token is not None
    assert await oauth.revoke(grant) is True
    assert provider.count("/revoke", token=grant.refresh_token, token_type_hint="refresh_token")
    assert provider.is_revoked(grant.refresh_token)
    assert provider.owner_of(grant.access_token) is None


async def test_revocation_is_false_when_the_provider_has_no_endpoint(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    provider.metadata_overrides["revocation_endpoint"] = None
    oauth = client(provider, http)
    grant = await connect(provider, http, oauth, "alice")
    assert await oauth.revoke(grant) is False
    assert provider.count("/revoke") == 0


async def test_discovery_naming_another_issuer_is_refused(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    provider.metadata_overrides["issuer"] = provider.issuer + "/evil"
    oauth = client(provider, http)
    with pytest.raises(ProviderUnavailableError):
        await oauth.authorization_url(state="s", code_challenge="c" * 43)
    assert provider.count("/.well-known/oauth-authorization-server") == 1
    assert provider.count("/authorize") == provider.count("/token") == 0
    # A failure is not kept: once the document is right, the same client works.
    del provider.metadata_overrides["issuer"]
    assert (await oauth.authorization_url(state="s", code_challenge="c" * 43)).startswith(
        provider.issuer + "/authorize?"
    )


async def test_a_provider_without_pkce_s256_is_refused_unless_allowed(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    provider.metadata_overrides["code_challenge_methods_supported"] = ["plain"]
    with pytest.raises(ProviderUnusableError):
        await client(provider, http).metadata()
    allowed = client(provider, http, allow_unadvertised_pkce=True)
    assert (await allowed.metadata()).token_endpoint == provider.issuer + "/token"


async def test_a_provider_that_is_down_is_unavailable(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    oauth = client(provider, http)
    grant = await connect(provider, http, oauth, "alice")
    await provider.stop()
    with pytest.raises(ProviderUnavailableError):
        await oauth.refresh(grant)
    with pytest.raises(ProviderUnavailableError):
        await client(provider, http).metadata()
    await provider.start()
    assert (await oauth.refresh(grant)).access_token != grant.access_token


async def test_a_refused_client_is_unavailable_not_revoked(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    oauth = client(provider, http)
    grant = await connect(provider, http, oauth, "alice")
    wrong = client(provider, http, client_secret="not-the-secret")
    with pytest.raises(ProviderUnavailableError) as caught:
        await wrong.refresh(grant)
    assert '"upstream_provider_token_refused"' in gateway_log()
    assert '"invalid_client"' in gateway_log()
    # The provider's own words (its error_description) go nowhere.
    assert "never shown" not in gateway_log()
    assert "never shown" not in str(caught.value)


# -- RFC 9207 section 2.4 at the callback ---------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "advertised", "reason"),
    [
        pytest.param("missing", True, "iss_missing", id="missing-when-advertised"),
        pytest.param("wrong", True, "iss_mismatch", id="wrong"),
        pytest.param("wrong", None, "iss_mismatch", id="wrong-when-not-advertised"),
        pytest.param("repeated", True, "iss_repeated", id="repeated"),
    ],
)
async def test_check_issuer_refuses(
    provider: OAuthProvider, http: HttpSessionHolder, mode: Any, advertised: bool | None,
    reason: str,
) -> None:  # fmt: skip
    provider.iss_mode = mode
    provider.metadata_overrides["authorization_response_iss_parameter_supported"] = advertised
    oauth = client(provider, http)
    _, challenge = pkce_pair()
    query = await authorize(
        http, await oauth.authorization_url(state="s", code_challenge=challenge)
    )
    with pytest.raises(IssuerMismatchError) as caught:
        oauth.check_issuer(query)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("mode", "advertised"),
    [
        pytest.param("correct", True, id="matching"),
        pytest.param("correct", None, id="matching-not-advertised"),
        pytest.param("missing", None, id="not-sent-not-advertised"),
        pytest.param("missing", False, id="not-sent-advertised-false"),
    ],
)
async def test_check_issuer_passes(
    provider: OAuthProvider, http: HttpSessionHolder, mode: Any, advertised: bool | None
) -> None:
    provider.iss_mode = mode
    provider.metadata_overrides["authorization_response_iss_parameter_supported"] = advertised
    oauth = client(provider, http)
    verifier, challenge = pkce_pair()
    query = await authorize(
        http, await oauth.authorization_url(state="s", code_challenge=challenge)
    )
    oauth.check_issuer(query)
    assert provider.owner_of((await oauth.redeem(query["code"][0], verifier)).access_token)


async def test_check_issuer_before_discovery_fails_closed(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    with pytest.raises(ProviderUnavailableError):
        client(provider, http).check_issuer({"iss": [provider.issuer], "code": ["c"]})


async def test_the_test_provider_requires_pkce(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    url = provider.issuer + "/authorize?" + "response_type=code&client_id=gateway-client"
    async with http.get().get(url + "&redirect_uri=" + CALLBACK, allow_redirects=False) as answer:
        location = answer.headers["Location"]
    assert parse_qs(urlsplit(location).query)["error"] == ["invalid_request"]
    async with aiohttp.ClientSession() as session, session.get(provider.issuer + "/user") as user:
        assert user.status == 401


async def test_the_test_provider_can_show_a_login_form(
    provider: OAuthProvider, http: HttpSessionHolder
) -> None:
    provider.interactive = True
    oauth = client(provider, http)
    verifier, challenge = pkce_pair()
    url = await oauth.authorization_url(state="st-2", code_challenge=challenge)
    async with http.get().get(url, allow_redirects=False) as page:
        assert page.status == 200
        form = await page.text()
    assert 'name="user"' in form
    fields = dict(parse_qs(urlsplit(url).query))
    data = {name: values[0] for name, values in fields.items()} | {"user": "dave"}
    async with http.get().post(
        provider.issuer + "/authorize", data=data, allow_redirects=False
    ) as answer:
        assert answer.status == 302
        query = parse_qs(urlsplit(answer.headers["Location"]).query)
    oauth.check_issuer(query)
    assert query["state"] == ["st-2"]
    grant = await oauth.redeem(query["code"][0], verifier)
    assert provider.owner_of(grant.access_token) == "dave"
