"""Issue 15, findings 2 and the login-CSRF binding, against the real OpenID provider.

- Consent comes before the provider: no `/auth` request reaches it until the user approves on
  the gateway's page, and a denied consent never reaches it (MCP security best practices,
  confused deputy: an unapproved client must not ride the provider's single sign-on).
- An approval is bound to its authorization request and to the browser that was shown the
  page: replaying it, sending it from another browser or dressing it up with another client's
  parameters gets nothing.
- The federated `state` is bound to the browser that started the sign-in: a victim handed the
  callback of the attacker's own sign-in (login CSRF) is refused before the code is redeemed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest

from tests.conftest import Gateway, StartGateway
from tests.support.federation import authorization_query, federated_gateway
from tests.support.oauth_client import loopback_redirect_uri
from tests.support.oidc import OidcProviderProcess, oidc_provider
from tests.support.processes import LOOPBACK, free_port
from tests.support.secrets import remember

_STATE = re.compile(r'<input type="hidden" name="state" value="([^"]*)">')


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProviderProcess]:
    with oidc_provider() as running:
        yield running


@pytest.fixture
async def gw(start_gateway_for: StartGateway, provider: OidcProviderProcess) -> Gateway:
    """A federated gateway; its MCP upstream is never called here."""
    upstream = f"http://{LOOPBACK}:{free_port()}/mcp"
    return await federated_gateway(start_gateway_for, provider, upstream)


def browser() -> httpx2.AsyncClient:
    """A browser: cookies kept, redirects followed by the test."""
    return httpx2.AsyncClient(timeout=10, follow_redirects=False, trust_env=False)


def consent_state(page: httpx2.Response) -> str:
    assert page.status_code == 200, page.text[:500]
    assert "Approve access" in page.text
    found = _STATE.search(page.text)
    assert found is not None
    return remember(found.group(1))


async def approve(
    http: httpx2.AsyncClient, gw: Gateway, state: str, decision: str = "approve", **extra: str
) -> httpx2.Response:
    return await http.post(
        gw.url("/oauth/consent"),
        data={"state": state, "decision": decision, **extra},
        headers={"Origin": gw.base},
    )


async def to_callback(http: httpx2.AsyncClient, gw: Gateway, location: str) -> str:
    """Follow the provider's redirects (its headless login) up to, not into, the gateway's
    callback; that callback URL."""
    url = location
    for _ in range(10):
        if url.startswith(gw.url("/oauth/callback")):
            return url
        answer = await http.get(url)
        assert answer.is_redirect, (url, answer.status_code, answer.text[:300])
        url = urljoin(url, answer.headers["location"])
    raise AssertionError("the provider never sent the browser back")


async def auth_requests(provider: OidcProviderProcess) -> int:
    return (await provider.requests_seen()).get("GET /auth", 0)


async def token_requests(provider: OidcProviderProcess) -> int:
    return (await provider.requests_seen()).get("POST /token", 0)


def params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_the_consent_page_comes_before_any_request_to_the_provider(
    gw: Gateway, provider: OidcProviderProcess
) -> None:
    redirect_uri = loopback_redirect_uri()
    query = await authorization_query(gw, redirect_uri)
    before = await auth_requests(provider)
    async with browser() as http:
        state = consent_state(await http.get(gw.url("/oauth/authorize?" + query)))
        assert await auth_requests(provider) == before  # the page is shown; nothing sent yet
        approved = await approve(http, gw, state)
        assert approved.status_code == 302
        assert approved.headers["location"].startswith(provider.authorization_endpoint + "?")
        callback = await to_callback(http, gw, approved.headers["location"])
        assert await auth_requests(provider) == before + 1
        back = await http.get(callback)
    assert back.status_code == 302
    answer = params(back.headers["location"])
    assert back.headers["location"].startswith(redirect_uri + "?")
    assert (answer["state"], answer["iss"]) == ("s1", gw.base)
    remember(answer["code"])


async def test_a_denied_consent_never_reaches_the_provider(
    gw: Gateway, provider: OidcProviderProcess
) -> None:
    redirect_uri = loopback_redirect_uri()
    query = await authorization_query(gw, redirect_uri)
    before = await auth_requests(provider)
    async with browser() as http:
        state = consent_state(await http.get(gw.url("/oauth/authorize?" + query)))
        denied = await approve(http, gw, state, decision="deny")
    assert denied.status_code == 302
    location = denied.headers["location"]
    assert location.startswith(redirect_uri + "?")
    assert params(location) == {
        "error": "access_denied",
        "error_description": "The user did not approve the request",
        "state": "s1",
        "iss": gw.base,
    }
    assert await auth_requests(provider) == before


async def test_an_approval_is_bound_to_its_request_and_its_browser(
    gw: Gateway, provider: OidcProviderProcess
) -> None:
    mine, theirs = loopback_redirect_uri(), loopback_redirect_uri()
    my_query = await authorization_query(gw, mine)
    their_query = await authorization_query(gw, theirs, scope="mcp:tools files:write")
    their_client = parse_qs(their_query)["client_id"][0]
    before = await auth_requests(provider)
    async with browser() as victim, browser() as attacker:
        shown = consent_state(await victim.get(gw.url("/oauth/authorize?" + my_query)))
        # The attacker learns the victim's form token: from another browser it gets nothing,
        # and that attempt spends it.
        await attacker.get(gw.url("/oauth/authorize?" + their_query))  # a flow cookie of its own
        stolen = await approve(attacker, gw, shown)
        assert stolen.status_code == 400
        assert "location" not in stolen.headers
        assert (await approve(victim, gw, shown)).status_code == 400
        assert await auth_requests(provider) == before

        # Another client's parameters added to the form change nothing: the approval is for
        # the request the page was shown for, whose client gets the answer.
        state = consent_state(await victim.get(gw.url("/oauth/authorize?" + my_query)))
        approved = await approve(victim, gw, state, client_id=their_client,
                                 redirect_uri=theirs, scope="files:write")  # fmt: skip
        assert approved.status_code == 302
        assert (await approve(victim, gw, state)).status_code == 400  # single use
        back = await victim.get(await to_callback(victim, gw, approved.headers["location"]))
        assert back.headers["location"].startswith(mine + "?")
        remember(params(back.headers["location"])["code"])

        # Signed in now: the other client still needs its own approval, and a new request of
        # this client asking for more needs one for the new scope.
        again = await victim.get(gw.url("/oauth/authorize?" + their_query))
        consent_state(again)
        assert "Signed in as" in again.text
        wider = my_query.replace("scope=mcp%3Atools", "scope=mcp%3Atools+files%3Awrite")
        step_up = await victim.get(gw.url("/oauth/authorize?" + wider))
        consent_state(step_up)
        assert "<code>files:write</code>" in step_up.text
        assert "<code>mcp:tools</code>" not in step_up.text  # approved before: not asked again
        same = await victim.get(gw.url("/oauth/authorize?" + my_query))
        assert same.status_code == 302  # approved before, signed in: straight back
        assert same.headers["location"].startswith(mine + "?")
        remember(params(same.headers["location"])["code"])
    assert await auth_requests(provider) == before + 1  # one sign-in at the provider in all


async def test_a_callback_from_another_browsers_sign_in_is_refused(
    gw: Gateway, provider: OidcProviderProcess
) -> None:
    """Login CSRF: the attacker signs in at the provider in their own browser and hands the
    victim the callback URL. The victim's browser did not start that sign-in."""
    redirect_uri = loopback_redirect_uri()
    query = await authorization_query(gw, redirect_uri)
    async with browser() as attacker, browser() as victim, browser() as stranger:
        state = consent_state(await attacker.get(gw.url("/oauth/authorize?" + query)))
        approved = await approve(attacker, gw, state)
        callback = await to_callback(attacker, gw, approved.headers["location"])
        tokens_before = await token_requests(provider)
        # A victim in the middle of a flow of their own (a flow cookie), and one without any.
        consent_state(await victim.get(gw.url("/oauth/authorize?" + query)))
        for holder in (victim, stranger):
            refused = await holder.get(callback)
            assert refused.status_code == 400
            assert "location" not in refused.headers
            assert "another browser" in refused.text
        # The attempt spent it: not even the attacker's browser can use it now.
        assert (await attacker.get(callback)).status_code == 400
    assert await token_requests(provider) == tokens_before  # the code was never redeemed


async def test_prompt_login_signs_in_again_at_the_provider_too(
    gw: Gateway, provider: OidcProviderProcess
) -> None:
    """With a sign-in session (and the provider's own), `prompt=login` and `max_age` are
    passed on, so the provider asks again instead of signing the user in silently."""
    redirect_uri = loopback_redirect_uri()
    query = await authorization_query(gw, redirect_uri)
    async with browser() as http:
        state = consent_state(await http.get(gw.url("/oauth/authorize?" + query)))
        approved = await approve(http, gw, state)
        plain = params(approved.headers["location"])
        assert "prompt" not in plain
        assert "max_age" not in plain
        await http.get(await to_callback(http, gw, approved.headers["location"]))
        forced = [("&prompt=login", {"prompt": "login"}), ("&max_age=0", {"max_age": "0"})]
        for extra, sent in forced:
            state = consent_state(await http.get(gw.url("/oauth/authorize?" + query + extra)))
            again = await approve(http, gw, state)
            assert again.headers["location"].startswith(provider.authorization_endpoint + "?")
            forwarded = params(again.headers["location"])
            assert {k: forwarded.get(k) for k in sent} == sent
            back = await http.get(await to_callback(http, gw, again.headers["location"]))
            remember(params(back.headers["location"])["code"])
