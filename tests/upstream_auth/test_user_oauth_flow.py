"""`upstream_auth: {kind: user_oauth}`: the elicitation, the gateway's connect pages, the
provider's callback and disconnect, against the spec-checked test provider
(`tests/support/oauth_provider.py`: PKCE, single-use codes, rotating refresh tokens, RFC 9207
`iss`, a request log) and a recording upstream. Era rendering of the elicitation and the real
`mcp` client are in `tests/e2e/test_user_oauth_e2e.py`.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from aiohttp import web

from gateway.upstream_auth.connect_flow import STARTS_PER_MINUTE
from gateway.web.connect import BindingCookie
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.connect_browser import (
    ConnectBrowser,
    call_tool,
    credential_outcomes,
    elicitation_of,
    with_params,
    without_param,
)
from tests.support.http_upstream import RecordingUpstream
from tests.support.local_issuer import LocalIssuer
from tests.support.oauth_provider import OAuthProvider
from tests.support.processes import free_port
from tests.support.secrets import remember

ROUTE = "/files/mcp"
KEY = remember(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def provider(port: int) -> AsyncIterator[OAuthProvider]:
    callback = f"http://127.0.0.1:{port}/oauth/connect/files/callback"
    async with OAuthProvider(redirect_uris=[callback]) as running:
        yield running


@pytest.fixture
def data_plane() -> str:
    """`server.data_plane`: the default, except where a test parametrizes it."""
    return "lean"


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    provider: OAuthProvider,
    upstream: RecordingUpstream,
    port: int,
    data_plane: str,
) -> Gateway:
    route = provider.route(upstream.url, KEY)
    auth = {"resource_server": {"authorization_servers": [issuer.auth_server()]}}
    server = {"data_plane": data_plane}
    return await start_gateway_for(route, port=port, auth=auth, server=server)


def token_of(issuer: LocalIssuer, gw: Gateway, subject: str = "alice") -> str:
    return issuer.mint(issuer.claims(gw.url(ROUTE), sub=subject))


def forwarded_calls(upstream: RecordingUpstream) -> list[str]:
    """The Authorization header of each tools/call the upstream received ("" if none)."""
    return [
        r.headers.get("Authorization", "")
        for r in upstream.requests
        if json.loads(r.body).get("method") == "tools/call"
    ]


def gateway_records() -> list[dict[str, Any]]:
    """The gateway's own log records of this test (not the test clients')."""
    records = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    return [r for r in records if not str(r.get("logger", "")).startswith("httpx")]


def events(name: str) -> list[dict[str, Any]]:
    return [r for r in gateway_records() if r.get("event") == name]


async def connected(gw: Gateway, issuer: LocalIssuer, user: str, login: str) -> ConnectBrowser:
    """`user` calls, gets the elicitation, and connects as `login` at the provider."""
    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw, user))
    browser = ConnectBrowser()
    page = await browser.connect(elicitation_of(answer)["url"], user=login)
    assert page.status_code == 200, page.text
    assert "Account connected" in page.text
    return browser


async def test_a_caller_without_a_grant_is_elicited_and_nothing_is_forwarded(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw))
    elicitation = elicitation_of(answer)
    assert elicitation["mode"] == "url"
    assert elicitation["url"].startswith(gw.url("/oauth/connect/files?ticket="))
    assert "files" in elicitation["message"]
    assert forwarded_calls(upstream) == []
    assert (await credential_outcomes(gw.url("/metrics"), "files"))["elicited"] == 1
    assert [e["sub"] for e in events("upstream_connect_elicited")] == ["alice"]


async def test_requests_that_cannot_elicit_go_without_the_header(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw), method="tools/list")
    assert "result" in answer
    [listed] = upstream.requests
    assert "Authorization" not in listed.headers


@pytest.mark.parametrize("data_plane", ["lean", "aiohttp"])
async def test_connecting_puts_the_users_provider_token_on_the_retried_call(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider, upstream: RecordingUpstream
) -> None:
    token = token_of(issuer, gw)
    answer = await call_tool(gw.url(ROUTE), token)
    browser = ConnectBrowser()
    page = await browser.connect(elicitation_of(answer)["url"], user="octo-alice")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    confirmation, confirmed = browser.pages[:2]
    assert confirmation.status_code == 200
    assert "for its user <strong>alice</strong>" in confirmation.text
    assert confirmed.status_code == 302
    [authorize] = [seen for seen in provider.requests if seen.path == "/authorize"]
    assert authorize.params["code_challenge_method"] == "S256"
    assert provider.count("/token", grant_type="authorization_code") == 1

    retried = await call_tool(gw.url(ROUTE), token)
    assert retried["result"]["content"][0]["text"] == "ok"
    [sent] = forwarded_calls(upstream)
    assert sent.startswith("Bearer gho_")
    assert provider.owner_of(sent.removeprefix("Bearer ")) == "octo-alice"
    assert token not in sent
    outcomes = await credential_outcomes(gw.url("/metrics"), "files")
    assert (outcomes["elicited"], outcomes["connected"], outcomes["issued"]) == (1, 1, 1)
    assert [e["sub"] for e in events("upstream_account_connected")] == ["alice"]


async def test_the_link_asks_for_a_click_and_only_then_binds_the_browser(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider
) -> None:
    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw))
    browser = ConnectBrowser()
    await browser.connect(elicitation_of(answer)["url"], follow_callback=False)
    shown, confirmed = browser.pages[:2]
    assert shown.set_cookies == []
    assert shown.headers["X-Frame-Options"] == "DENY"  # no clickjacking of the button
    assert "127.0.0.1" in shown.text  # the provider is named
    [cookie] = confirmed.set_cookies
    assert cookie.startswith("mcp-gateway-connect=")  # http public URL: no __Host- prefix
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie


@pytest.mark.parametrize("origin", [None, "http://127.0.0.1:1", "null"])
async def test_the_confirmation_is_refused_from_any_other_origin(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider, origin: str | None
) -> None:
    url = elicitation_of(await call_tool(gw.url(ROUTE), token_of(issuer, gw)))["url"]
    ticket = url.split("ticket=")[1]
    page = await ConnectBrowser().request(
        "POST", gw.url("/oauth/connect/files"), {"ticket": ticket}, origin=origin
    )
    assert page.status_code == 403  # by the edge (a foreign Origin) or by the page (none)
    assert provider.count("/authorize") == 0
    if origin is None:
        [refused] = events("upstream_connect_refused")
        assert refused["reason"] == "form_origin_missing"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: with_params(url, iss="http://127.0.0.1:1"),
        lambda url: without_param(url, "iss"),
        lambda url: url + "&iss=" + url.split("iss=")[1],
    ],
    ids=["wrong-iss", "missing-iss", "repeated-iss"],
)
async def test_a_bad_iss_is_refused_before_the_state_is_used_or_a_token_requested(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider, tamper: Any
) -> None:
    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw))
    browser = ConnectBrowser()
    page = await browser.connect(elicitation_of(answer)["url"], tamper=tamper)
    assert page.status_code == 400
    assert "could not be verified" in page.text
    assert provider.count("/token") == 0
    [refusal] = events("upstream_connect_refused")
    assert refusal["reason"].startswith("iss_")
    # The state was not consumed: the untampered answer still completes, in this browser.
    assert browser.callback_url is not None
    page = await browser.get(browser.callback_url)
    assert "Account connected" in page.text
    assert provider.count("/token") == 1


async def test_a_provider_that_drops_iss_is_refused(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider
) -> None:
    provider.iss_mode = "missing"
    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw))
    page = await ConnectBrowser().connect(elicitation_of(answer)["url"])
    assert page.status_code == 400
    assert provider.count("/token") == 0
    assert (await credential_outcomes(gw.url("/metrics"), "files"))["failed"] == 1


async def test_the_state_works_once_and_only_in_the_browser_that_began(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider
) -> None:
    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw))
    url = elicitation_of(answer)["url"]
    began = ConnectBrowser()
    await began.connect(url, follow_callback=False)
    assert began.callback_url is not None
    other = await ConnectBrowser().get(began.callback_url)  # no binding cookie
    assert other.status_code == 400
    assert "started in another browser" in other.text
    assert provider.count("/token") == 0
    page = await began.get(began.callback_url)  # that attempt did not use the flow up
    assert "Account connected" in page.text
    again = await began.get(began.callback_url)
    assert again.status_code == 400
    assert provider.count("/token") == 1


async def test_a_replayed_callback_is_refused(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider
) -> None:
    browser = await connected(gw, issuer, "alice", "octo-alice")
    assert browser.callback_url is not None
    replay = await browser.get(browser.callback_url)
    assert replay.status_code == 400
    assert "already completed" in replay.text
    assert provider.count("/token") == 1


@pytest.mark.parametrize(
    "ticket", ["", "AAAA", "A" * 5000, "not%20base64!"], ids=["empty", "forged", "long", "bad"]
)
async def test_a_bad_ticket_gets_a_page_and_never_reaches_the_provider(
    gw: Gateway, provider: OAuthProvider, ticket: str
) -> None:
    page = await ConnectBrowser().get(gw.url("/oauth/connect/files?") + f"ticket={ticket}")
    assert page.status_code == 400
    assert page.headers["Cache-Control"] == "no-store"
    assert "not valid or has expired" in page.text
    assert provider.count("/authorize") == 0


async def test_the_providers_error_text_is_never_shown(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider
) -> None:
    def refuse(url: str) -> str:
        url = without_param(url, "code")
        return with_params(url, error="access_denied", error_description="<script>x</script>")

    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw))
    page = await ConnectBrowser().connect(elicitation_of(answer)["url"], tamper=refuse)
    assert page.status_code == 400
    assert "did not grant access" in page.text
    assert "script" not in page.text
    assert all("script" not in json.dumps(record) for record in gateway_records())
    assert provider.count("/token") == 0


async def test_two_users_get_their_own_provider_tokens(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider, upstream: RecordingUpstream
) -> None:
    await connected(gw, issuer, "alice", "octo-alice")
    await connected(gw, issuer, "bob", "octo-bob")
    for user in ("bob", "alice", "bob"):
        await call_tool(gw.url(ROUTE), token_of(issuer, gw, user))
    owners = [provider.owner_of(h.removeprefix("Bearer ")) for h in forwarded_calls(upstream)]
    assert owners == ["octo-bob", "octo-alice", "octo-bob"]


async def test_disconnect_revokes_at_the_provider_and_the_next_call_elicits_again(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider
) -> None:
    await connected(gw, issuer, "alice", "octo-alice")
    token = token_of(issuer, gw)
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        refused = await http.post(gw.url("/oauth/connect/files/disconnect"))
        assert refused.status_code == 401
        done = await http.post(
            gw.url("/oauth/connect/files/disconnect"), headers={"Authorization": f"Bearer {token}"}
        )
        assert done.status_code == 200
        assert done.json() == {"disconnected": True}
        assert done.headers["Cache-Control"] == "no-store"
        again = await http.post(
            gw.url("/oauth/connect/files/disconnect"), headers={"Authorization": f"Bearer {token}"}
        )
        assert again.json() == {"disconnected": False}
    assert provider.count("/revoke") >= 1
    elicitation_of(await call_tool(gw.url(ROUTE), token))
    assert (await credential_outcomes(gw.url("/metrics"), "files"))["disconnected"] == 1


async def test_the_provider_down_at_the_start_page_is_a_503(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider
) -> None:
    answer = await call_tool(gw.url(ROUTE), token_of(issuer, gw))
    await provider.stop()
    page = await ConnectBrowser().connect(elicitation_of(answer)["url"])
    assert page.status_code == 503
    assert page.headers["Retry-After"] == "5"
    await provider.start()
    page = await ConnectBrowser().connect(elicitation_of(answer)["url"])
    assert "Account connected" in page.text


async def test_a_user_may_begin_only_a_few_connect_flows_a_minute(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider
) -> None:
    url = elicitation_of(await call_tool(gw.url(ROUTE), token_of(issuer, gw)))["url"]
    for _ in range(STARTS_PER_MINUTE):  # each parks a state in the store
        page = await ConnectBrowser().connect(url, follow_callback=False)
        assert page.status_code == 302
    throttled = await ConnectBrowser().connect(url, follow_callback=False)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "60"
    assert "Too many attempts" in throttled.text
    [refused] = [e for e in events("upstream_connect_refused") if e["reason"] == "too_many_starts"]
    assert refused["upstream"] == "files"
    # another user is not held back by alice's attempts
    other = elicitation_of(await call_tool(gw.url(ROUTE), token_of(issuer, gw, "bob")))["url"]
    page = await ConnectBrowser().connect(other, user="octo-bob")
    assert "Account connected" in page.text


async def test_a_caller_whose_token_names_no_user_is_refused(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    token = issuer.mint(issuer.claims(gw.url(ROUTE), sub=None))
    answer = await call_tool(gw.url(ROUTE), token, status=403)
    assert answer["error"]["code"] == -31058
    assert forwarded_calls(upstream) == []


@pytest.mark.parametrize(
    ("public_base", "name", "secure"),
    [
        ("https://gw.example", "__Host-mcp-gateway-connect", True),
        ("http://127.0.0.1:8080", "mcp-gateway-connect", False),
    ],
)
def test_the_binding_cookie_is_host_prefixed_and_secure_behind_https(
    public_base: str, name: str, secure: bool
) -> None:
    cookie = BindingCookie(public_base)
    response = web.Response()
    cookie.set(response, "v" * 43)
    morsel = response.cookies[name]
    assert bool(morsel["secure"]) is secure
    assert morsel["path"] == "/"
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
