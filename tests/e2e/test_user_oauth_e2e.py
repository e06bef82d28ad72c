"""`upstream_auth: {kind: user_oauth}` end to end (issue 19, acceptance 3 and 4).

The real `mcp` SDK client calls a tool on a user_oauth route in front of a real `mcp` SDK
server that answers with the `Authorization` header it received
(`tests/servers/sdk_header_server.py`). Without a grant the client gets a URL elicitation in
its protocol era's form (2025-11-25: the -32042 error; 2026-07-28: an `input_required` result
its elicitation callback handles); a real browser (Chromium) opens the URL and signs in at the
test provider; the retried call reaches the upstream with the user's provider token, never the
client's. A bad `iss` at the callback is refused before any token request; two users get their
own tokens; a user signed in at the gateway's facade cannot complete another user's link (a
browser signed in as nobody signs in first: `test_connect_sign_in.py`); a client that cannot
take a URL elicitation gets an error naming the URL.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError
from mcp_types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult
from playwright.async_api import Browser, expect

from gateway.web.elicitation import NOT_ELICITABLE, URL_ELICITATION_REQUIRED
from gateway.web.facade import SESSION_COOKIE
from tests.conftest import Gateway, StartGateway
from tests.support.browser import ensure_chromium, launch_chromium
from tests.support.connect_browser import ConnectBrowser
from tests.support.facade import write_users
from tests.support.local_issuer import LocalIssuer
from tests.support.oauth_client import Browser as CookieBrowser
from tests.support.oauth_client import SignIn, oauth_list_and_call
from tests.support.oauth_provider import OAuthProvider
from tests.support.processes import HttpServerProcess, free_port
from tests.support.sdk_client import connect
from tests.support.sdk_header_server import sdk_header_server, seen_authorization
from tests.support.secrets import remember

ROUTE = "/files/mcp"
KEY = remember(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
PASSWORD = remember("connect my files, not yours")
TOOL = "authorization"  # answers the Authorization header its request carried


@pytest.fixture(scope="module")
def header_server() -> Iterator[HttpServerProcess]:
    with sdk_header_server() as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_chromium()


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with launch_chromium(chromium) as running:
        yield running


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def provider(port: int) -> AsyncIterator[OAuthProvider]:
    callback = f"http://127.0.0.1:{port}/oauth/connect/files/callback"
    async with OAuthProvider(redirect_uris=[callback]) as running:
        running.interactive = True  # a sign-in form the browser fills in
        yield running


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    provider: OAuthProvider,
    header_server: HttpServerProcess,
    port: int,
) -> Gateway:
    auth = {"resource_server": {"authorization_servers": [issuer.auth_server()]}}
    return await start_gateway_for(provider.route(header_server.url, KEY), port=port, auth=auth)


def _bearer(issuer: LocalIssuer, gw: Gateway, subject: str) -> dict[str, str]:
    token = issuer.mint(issuer.claims(gw.url(ROUTE), sub=subject))
    return {"Authorization": f"Bearer {token}"}


async def _sign_in_at_provider(browser: Browser, url: str, login: str) -> str:
    """Open `url` in a fresh browser context, confirm, sign in at the provider as `login`;
    the heading of the page the flow ends on."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(url)
        await expect(page.get_by_role("heading", name="Connect your account")).to_be_visible()
        await page.get_by_role("button", name="Connect").click()
        await page.fill("#user", login)
        await page.click("#authorize")
        await page.wait_for_url("**/oauth/connect/files/callback?**")
        return await page.locator("h1").inner_text()
    finally:
        await context.close()


def _url_of(error: MCPError) -> ElicitRequestURLParams:
    assert error.code == URL_ELICITATION_REQUIRED, error
    [elicitation] = UrlElicitationRequiredError.from_error(error.error).elicitations
    remember(elicitation.url.split("ticket=")[1])  # the tripwire: never in a log line
    return elicitation


async def _called(client: Client) -> str:
    result = await client.call_tool(TOOL, {})
    assert not result.is_error
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


async def test_a_2025_11_25_client_connects_and_the_retried_call_carries_the_provider_token(
    gw: Gateway,
    issuer: LocalIssuer,
    provider: OAuthProvider,
    browser: Browser,
    header_server: HttpServerProcess,
) -> None:
    headers = _bearer(issuer, gw, "alice")
    async with connect(gw.url(ROUTE), headers=headers, mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        with pytest.raises(MCPError) as raised:
            await client.call_tool(TOOL, {})
        elicitation = _url_of(raised.value)
        assert elicitation.url.startswith(gw.url("/oauth/connect/files?ticket="))
        assert "files" in elicitation.message
        assert elicitation.url in raised.value.message  # readable without knowing -32042
        heading = await _sign_in_at_provider(browser, elicitation.url, "octo-alice")
        assert heading == "Account connected"
        sent = await _called(client)
    assert provider.owner_of(sent.removeprefix("Bearer ")) == "octo-alice"
    seen = await seen_authorization(header_server)
    assert headers["Authorization"] not in seen  # the client's token never went upstream


async def test_a_2026_07_28_client_connects_through_its_elicitation_callback(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider, browser: Browser
) -> None:
    asked: list[ElicitRequestParams] = []

    async def elicit(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params)
        assert isinstance(params, ElicitRequestURLParams)
        heading = await _sign_in_at_provider(browser, params.url, "octo-alice")
        assert heading == "Account connected"
        return ElicitResult(action="accept")

    headers = _bearer(issuer, gw, "alice")
    async with connect(gw.url(ROUTE), headers=headers, elicitation_callback=elicit) as client:
        assert client.protocol_version == "2026-07-28"
        sent = await _called(client)
    assert len(asked) == 1
    assert provider.owner_of(sent.removeprefix("Bearer ")) == "octo-alice"


async def test_a_client_without_url_elicitation_gets_an_error_naming_the_url(
    gw: Gateway, issuer: LocalIssuer
) -> None:
    async with connect(gw.url(ROUTE), headers=_bearer(issuer, gw, "alice")) as client:
        assert client.protocol_version == "2026-07-28"
        with pytest.raises(MCPError) as raised:
            await client.call_tool(TOOL, {})
    assert raised.value.code == NOT_ELICITABLE
    assert gw.url("/oauth/connect/files?ticket=") in raised.value.message
    remember(raised.value.message.split("ticket=")[1].split()[0])


@pytest.mark.parametrize("iss_mode", ["wrong", "missing"])
async def test_a_bad_iss_at_the_callback_is_refused_before_any_token_request(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider, browser: Browser, iss_mode: Any
) -> None:
    provider.iss_mode = iss_mode
    headers = _bearer(issuer, gw, "alice")
    async with connect(gw.url(ROUTE), headers=headers, mode="legacy") as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool(TOOL, {})
        heading = await _sign_in_at_provider(browser, _url_of(raised.value).url, "octo-alice")
        assert heading == "Cannot continue"
        assert provider.count("/token") == 0
        with pytest.raises(MCPError) as again:
            await client.call_tool(TOOL, {})
        assert again.value.code == URL_ELICITATION_REQUIRED


async def test_two_users_get_their_own_provider_tokens(
    gw: Gateway, issuer: LocalIssuer, provider: OAuthProvider, browser: Browser
) -> None:
    logins = {"alice": "octo-alice", "bob": "octo-bob"}
    sent: dict[str, str] = {}
    for user, login in logins.items():
        async with connect(
            gw.url(ROUTE), headers=_bearer(issuer, gw, user), mode="legacy"
        ) as client:
            with pytest.raises(MCPError) as raised:
                await client.call_tool(TOOL, {})
            await _sign_in_at_provider(browser, _url_of(raised.value).url, login)
            sent[user] = await _called(client)
    for user, login in logins.items():
        assert provider.owner_of(sent[user].removeprefix("Bearer ")) == login
    assert sent["alice"] != sent["bob"]


# -- with the gateway's own authorization server: the link is bound to the signed-in user ---


async def _facade_gateway(
    start: StartGateway, tmp_path: Path, provider: OAuthProvider, upstream: str, port: int
) -> Gateway:
    users = write_users(tmp_path / "users.yaml", PASSWORD)
    authorization_server = {
        "login": {"local": {"users_file": str(users)}},
        "grants": [{"scopes": ["mcp:tools"]}],
    }
    return await start(
        provider.route(upstream, KEY),
        port=port,
        auth={"authorization_server": authorization_server},
    )


async def _signed_in(gw: Gateway, user: str) -> tuple[str, ConnectBrowser]:
    """`user`'s access token from the SDK client's OAuth at the facade, and a browser holding
    the gateway's sign-in session that sign-in started."""
    cookies = CookieBrowser()
    _, record = await oauth_list_and_call(
        gw.url(ROUTE), sign_in=SignIn(user, PASSWORD), browser=cookies
    )
    assert record.access_token is not None
    session = cookies.cookie(SESSION_COOKIE)
    assert session is not None
    browser = ConnectBrowser()
    browser.add_cookie(SESSION_COOKIE, remember(session), gw.base)
    return remember(record.access_token), browser


async def test_another_signed_in_user_cannot_complete_a_users_link(
    start_gateway_for: StartGateway,
    tmp_path: Path,
    provider: OAuthProvider,
    header_server: HttpServerProcess,
    port: int,
) -> None:
    provider.interactive = False  # the scripted browser signs in with `user=`
    gw = await _facade_gateway(start_gateway_for, tmp_path, provider, header_server.url, port)
    alice_token, alice = await _signed_in(gw, "alice")
    _, bob = await _signed_in(gw, "bob")
    headers = {"Authorization": f"Bearer {alice_token}"}
    async with connect(gw.url(ROUTE), headers=headers, mode="legacy") as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool(TOOL, {})
        url = _url_of(raised.value).url
        refused = await bob.connect(url, user="octo-bob")
        assert refused.status_code == 403
        assert "another user" in refused.text
        anonymous = await ConnectBrowser().connect(url, user="octo-bob")
        assert anonymous.status_code == 200  # asked to sign in first (test_connect_sign_in)
        assert "Sign in to this gateway to connect" in anonymous.text
        assert provider.count("/authorize") == 0
        page = await alice.connect(url, user="octo-alice")
        assert "Account connected" in page.text
        assert alice.pages[0].status_code == 302  # signed in as the link's user: no click
        sent = await _called(client)
    assert provider.owner_of(sent.removeprefix("Bearer ")) == "octo-alice"


async def test_in_a_real_browser_signed_in_as_nobody_the_user_signs_in_and_connects(
    start_gateway_for: StartGateway,
    tmp_path: Path,
    provider: OAuthProvider,
    header_server: HttpServerProcess,
    port: int,
    browser: Browser,
) -> None:
    """Chromium with no cookies opens the link: the gateway's sign-in form (the flow cookie
    set on it and sent back with the form), then the session cookie set on the redirect back
    to the link, then the provider's form and the callback."""
    gw = await _facade_gateway(start_gateway_for, tmp_path, provider, header_server.url, port)
    alice_token, _ = await _signed_in(gw, "alice")
    headers = {"Authorization": f"Bearer {alice_token}"}
    async with connect(gw.url(ROUTE), headers=headers, mode="legacy") as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool(TOOL, {})
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(_url_of(raised.value).url)
            await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            await expect(page.get_by_text("to connect your account at")).to_be_visible()
            await page.fill("#username", "alice")
            await page.fill("#password", PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.fill("#user", "octo-alice")  # the provider's own form
            await page.click("#authorize")
            await page.wait_for_url("**/oauth/connect/files/callback?**")
            assert await page.locator("h1").inner_text() == "Account connected"
            for cookie in await context.cookies():
                remember(cookie["value"])
        finally:
            await context.close()
        sent = await _called(client)
    assert provider.owner_of(sent.removeprefix("Bearer ")) == "octo-alice"
