"""A `user_oauth` connect link opened in a browser signed in as nobody at the gateway's own
authorization server (facade): the browser is sent to sign in (the local form, or the OpenID
provider the facade federates to) and comes back to the connect page, which then goes on to
the third-party provider as for a browser that was signed in all along.

The real `mcp` SDK client signs in at the facade (in its own browser), calls a tool and gets
the URL elicitation; a scripted browser with no cookies opens the URL (`ConnectBrowser`); the
retried call reaches the upstream (`tests/servers/sdk_header_server.py`, which answers with
the `Authorization` header it got) with the user's provider token. Where the browser goes
back to after signing in is kept by the gateway, never taken from the browser: tampered,
replayed and foreign sign-ins are refused, and so is a stored target outside
`/oauth/connect/`.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError

from gateway.oauth.records import SIGN_IN_STAGE, PageSignIn, digest
from gateway.web.elicitation import URL_ELICITATION_REQUIRED
from gateway.web.facade import FLOW_COOKIE
from gateway.web.facade.page_sign_in import PAGE_SIGN_INS
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.connect_browser import ConnectBrowser, Page, with_params
from tests.support.facade import write_users
from tests.support.federation import APPROVE, register_at_provider
from tests.support.oauth_client import Browser as CookieBrowser
from tests.support.oauth_client import SignIn, oauth_list_and_call
from tests.support.oauth_provider import OAuthProvider
from tests.support.oidc import OidcProviderProcess, oidc_provider
from tests.support.processes import HttpServerProcess, free_port
from tests.support.sdk_client import connect
from tests.support.sdk_header_server import sdk_header_server
from tests.support.secrets import remember

ROUTE = "/files/mcp"
KEY = remember(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
PASSWORD = remember("sign in on the way to connect")
TOOL = "authorization"  # answers the Authorization header its request carried
FEDERATED_STEPS = 16
"""Redirects from the link to the end with federated login: the OpenID provider's own
interaction redirects, its callback, the connect page, the third-party provider, its callback."""


@pytest.fixture(scope="module")
def header_server() -> Iterator[HttpServerProcess]:
    with sdk_header_server() as server:
        yield server


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def provider(port: int) -> AsyncIterator[OAuthProvider]:
    callback = f"http://127.0.0.1:{port}/oauth/connect/files/callback"
    async with OAuthProvider(redirect_uris=[callback]) as running:
        yield running


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway,
    tmp_path: Path,
    provider: OAuthProvider,
    header_server: HttpServerProcess,
    port: int,
) -> Gateway:
    """Facade mode with local users (alice, bob), in front of the header server."""
    users = write_users(tmp_path / "users.yaml", PASSWORD)
    authorization_server = {
        "login": {"local": {"users_file": str(users)}},
        "grants": [{"scopes": ["mcp:tools"]}],
    }
    return await start_gateway_for(
        provider.route(header_server.url, KEY),
        port=port,
        auth={"authorization_server": authorization_server},
    )


async def _facade_token(gw: Gateway, sign_in: SignIn) -> str:
    """An access token from the SDK client's OAuth at the facade, signed in its own browser
    (the connect browser below holds none of its cookies)."""
    _, record = await oauth_list_and_call(gw.url(ROUTE), sign_in=sign_in, browser=CookieBrowser())
    assert record.access_token is not None
    return remember(record.access_token)


async def _link(client: Client) -> str:
    """The connect URL of the elicitation a tool call gets."""
    with pytest.raises(MCPError) as raised:
        await client.call_tool(TOOL, {})
    assert raised.value.code == URL_ELICITATION_REQUIRED, raised.value
    [elicitation] = UrlElicitationRequiredError.from_error(raised.value.error).elicitations
    remember(elicitation.url.split("ticket=")[1])
    return elicitation.url


async def _called(client: Client) -> str:
    result = await client.call_tool(TOOL, {})
    assert not result.is_error
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


def _events(name: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == name]


async def _sign_in_page(browser: ConnectBrowser, url: str) -> Page:
    """Open the link signed in as nobody: the gateway's sign-in form, for connecting."""
    page = await browser.get(url)
    assert page.status_code == 200, page.text
    assert "Sign in to this gateway to connect your account at" in page.text
    assert "MCP server files" in page.text
    assert any(c.startswith(FLOW_COOKIE + "=") for c in page.set_cookies)
    return page


# -- the local sign-in form -----------------------------------------------------------------


async def test_signed_in_as_nobody_signs_in_comes_back_and_connects(
    gw: Gateway, provider: OAuthProvider
) -> None:
    headers = {"Authorization": f"Bearer {await _facade_token(gw, SignIn('alice', PASSWORD))}"}
    async with connect(gw.url(ROUTE), headers=headers, mode="legacy") as client:
        url = await _link(client)
        browser = ConnectBrowser()
        page = await _sign_in_page(browser, url)
        assert provider.count("/authorize") == 0
        page = await browser.sign_in(page, "alice", PASSWORD, user="octo-alice")
        assert page.status_code == 200, browser.visited
        assert "Account connected" in page.text
        signed_in, back = browser.pages[1:3]
        assert signed_in.headers["Location"] == url  # back to exactly the link it came from
        assert back.status_code == 302
        assert back.headers["Location"].startswith(provider.issuer + "/authorize?")
        sent = await _called(client)
    assert provider.owner_of(sent.removeprefix("Bearer ")) == "octo-alice"
    assert headers["Authorization"] not in sent
    [started] = _events("page_sign_in_started")
    assert (started["page"], started["via"]) == ("/oauth/connect/files", "local")
    [needed] = _events("upstream_connect_sign_in_needed")
    assert needed["upstream"] == "files"
    signed = [e for e in _events("signed_in") if "page" in e]
    assert [(e["user"], e["page"]) for e in signed] == [("alice", "/oauth/connect/files")]
    assert [e["sub"] for e in _events("upstream_account_connected")] == ["alice"]


async def test_signing_in_as_another_user_on_the_way_is_refused_at_the_connect_page(
    gw: Gateway, provider: OAuthProvider
) -> None:
    headers = {"Authorization": f"Bearer {await _facade_token(gw, SignIn('alice', PASSWORD))}"}
    async with connect(gw.url(ROUTE), headers=headers, mode="legacy") as client:
        url = await _link(client)
        browser = ConnectBrowser()
        page = await browser.sign_in(await _sign_in_page(browser, url), "bob", PASSWORD)
        assert page.status_code == 403
        assert "another user" in page.text
        assert browser.visited[-1][0] == url  # refused by the connect page, after signing in
        assert provider.count("/authorize") == 0
        [refused] = _events("upstream_connect_refused")
        assert (refused["reason"], refused["sub"]) == ("other_user", "bob")
        with pytest.raises(MCPError) as again:
            await client.call_tool(TOOL, {})
        assert again.value.code == URL_ELICITATION_REQUIRED  # nothing was connected


async def test_a_wrong_password_shows_the_form_again_and_then_goes_back(
    gw: Gateway, provider: OAuthProvider
) -> None:
    token = await _facade_token(gw, SignIn("alice", PASSWORD))
    async with connect(gw.url(ROUTE), headers={"Authorization": f"Bearer {token}"}) as client:
        url = await _link_of_any_era(client)
    browser = ConnectBrowser()
    first = await _sign_in_page(browser, url)
    failed = await browser.sign_in(first, "alice", "not the password")
    assert failed.status_code == 401
    assert "Wrong user name or password" in failed.text
    assert "connect your account at" in failed.text
    page = await browser.sign_in(failed, "alice", PASSWORD, user="octo-alice")
    assert "Account connected" in page.text
    assert provider.count("/token", grant_type="authorization_code") == 1


async def _link_of_any_era(client: Client) -> str:
    """The URL a 2026-07-28 client without URL elicitation is given in the error message."""
    with pytest.raises(MCPError) as raised:
        await client.call_tool(TOOL, {})
    url = raised.value.message.split(": open ", 1)[1].split()[0]
    remember(url.split("ticket=")[1])
    return url


# -- where the browser goes back to cannot be chosen by anyone else --------------------------


async def _started(gw: Gateway) -> tuple[str, ConnectBrowser, Page]:
    """Alice's connect link, and a browser shown the sign-in form for it."""
    token = await _facade_token(gw, SignIn("alice", PASSWORD))
    async with connect(gw.url(ROUTE), headers={"Authorization": f"Bearer {token}"}) as client:
        url = await _link_of_any_era(client)
    browser = ConnectBrowser()
    return url, browser, await _sign_in_page(browser, url)


def _form_state(page: Page) -> str:
    return remember(page.text.split('name="state" value="')[1].split('"')[0])


async def _post_sign_in(browser: ConnectBrowser, gw: Gateway, state: str, **extra: str) -> Page:
    form = {"state": state, "username": "alice", "password": PASSWORD, **extra}
    return await browser.request("POST", gw.url("/oauth/sign-in"), form, origin=gw.base)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda state: state[:-1] + ("A" if state[-1] != "A" else "B"),
        lambda state: "p." + secrets.token_urlsafe(32),
        lambda state: state.removeprefix("p."),
    ],
    ids=["altered", "made-up", "unprefixed"],
)
async def test_a_tampered_sign_in_id_is_refused(
    gw: Gateway, provider: OAuthProvider, tamper: Any
) -> None:
    _, browser, page = await _started(gw)
    refused = await _post_sign_in(browser, gw, tamper(_form_state(page)))
    assert refused.status_code == 400
    assert "Location" not in refused.headers
    assert not any(c.startswith("mcp-gateway-session=") for c in refused.set_cookies)
    assert provider.count("/authorize") == 0


async def test_a_sign_in_works_once_and_only_in_the_browser_that_began(
    gw: Gateway, provider: OAuthProvider
) -> None:
    url, browser, page = await _started(gw)
    state = _form_state(page)
    other = ConnectBrowser()  # no flow cookie: another browser
    refused = await _post_sign_in(other, gw, state)
    assert refused.status_code == 400
    assert "started in another browser" in refused.text
    spent = await _post_sign_in(browser, gw, state)  # the foreign attempt spent it
    assert spent.status_code == 400
    fresh = await _sign_in_page(browser, url)
    state = _form_state(fresh)
    done = await _post_sign_in(browser, gw, state)
    assert done.status_code == 302
    assert done.headers["Location"] == url
    replayed = await _post_sign_in(browser, gw, state)
    assert replayed.status_code == 400
    assert "Location" not in replayed.headers
    assert provider.count("/authorize") == 0


async def test_parameters_cannot_point_the_way_back_elsewhere(gw: Gateway) -> None:
    url, browser, _ = await _started(gw)
    steered = await browser.get(url + "&return_to=https%3A%2F%2Fevil.example%2F&next=%2F%2Fevil")
    done = await _post_sign_in(
        browser, gw, _form_state(steered), return_to="https://evil.example/", next="//evil"
    )
    assert done.status_code == 302
    assert done.headers["Location"] == url  # the link alone, as the gateway made it


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/oauth/authorize?client_id=x",
     "/oauth/connect/files/../../authorize", "/oauth/connect/files?ticket=a#@evil.example"],
)  # fmt: skip
async def test_a_stored_way_back_outside_the_connect_pages_is_never_followed(
    gw: Gateway, target: str
) -> None:
    """As if the store held a record `begin` would not write (another program, an old
    version): the sign-in is refused, whatever the record says."""
    browser = ConnectBrowser()
    flow = remember(secrets.token_urlsafe(32))
    browser.add_cookie(FLOW_COOKIE, flow, gw.base)
    server = gw.running.app[PAGE_SIGN_INS].server
    record = PageSignIn(return_to=target, purpose="connect", expires_at=time.time() + 60,
                        stage=SIGN_IN_STAGE, browser=digest(flow))  # fmt: skip
    state = remember(await server.store.begin_page_sign_in(record))
    refused = await _post_sign_in(browser, gw, state)
    assert refused.status_code == 400
    assert "Location" not in refused.headers
    assert [e["reason"] for e in _events("page_sign_in_refused")] == ["return_to"]


# -- federated login: the facade's users sign in at an OpenID provider -----------------------


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProviderProcess]:
    with oidc_provider() as running:
        yield running


async def _federated_gateway(
    start: StartGateway,
    idp: OidcProviderProcess,
    provider: OAuthProvider,
    upstream: str,
    port: int,
) -> Gateway:
    client_id = await register_at_provider(idp, f"http://127.0.0.1:{port}/oauth/callback")
    oidc = {"issuer": idp.issuer, "client_id": client_id, "scopes": ["openid", "email"]}
    authorization_server = {"login": {"oidc": oidc}, "grants": [{"scopes": ["mcp:tools"]}]}
    return await start(
        provider.route(upstream, KEY),
        port=port,
        auth={"authorization_server": authorization_server},
    )


async def test_with_federated_login_the_browser_signs_in_at_the_provider_and_comes_back(
    start_gateway_for: StartGateway,
    idp: OidcProviderProcess,
    provider: OAuthProvider,
    header_server: HttpServerProcess,
    port: int,
) -> None:
    gw = await _federated_gateway(start_gateway_for, idp, provider, header_server.url, port)
    headers = {"Authorization": f"Bearer {await _facade_token(gw, APPROVE)}"}
    before = await idp.requests_seen()
    async with connect(gw.url(ROUTE), headers=headers, mode="legacy") as client:
        url = await _link(client)
        browser = ConnectBrowser()
        first = await browser.get(url)
        assert first.status_code == 302
        assert first.headers["Location"].startswith(idp.authorization_endpoint + "?")
        page = await browser.follow(first, user="octo-alice", steps=FEDERATED_STEPS)
        assert "Account connected" in page.text, browser.visited
        visited = [u for u, _ in browser.visited]
        callback = next(i for i, u in enumerate(visited) if u.startswith(gw.url("/oauth/callback")))
        assert visited[callback + 1] == url  # back at the link, signed in
        sent = await _called(client)
    assert provider.owner_of(sent.removeprefix("Bearer ")) == "octo-alice"
    seen = await idp.requests_seen()
    assert seen.get("POST /token", 0) == before.get("POST /token", 0) + 1
    [started] = _events("page_sign_in_started")
    assert started["via"] == "oidc"
    signed = [e for e in _events("signed_in") if "page" in e]
    assert [(e["via"], e["page"]) for e in signed] == [("oidc", "/oauth/connect/files")]


async def _at_federated_callback(
    start: StartGateway,
    idp: OidcProviderProcess,
    provider: OAuthProvider,
    upstream: str,
    port: int,
) -> tuple[Gateway, ConnectBrowser, str]:
    """A browser signed in as nobody, sent by a connect link to the OpenID provider and
    stopped at the provider's redirect back to the gateway's `/oauth/callback`."""
    gw = await _federated_gateway(start, idp, provider, upstream, port)
    token = await _facade_token(gw, APPROVE)
    async with connect(gw.url(ROUTE), headers={"Authorization": f"Bearer {token}"}) as client:
        url = await _link_of_any_era(client)
    browser = ConnectBrowser()
    await browser.follow(await browser.get(url), follow_callback=False, steps=FEDERATED_STEPS)
    assert browser.callback_url is not None
    assert browser.callback_url.startswith(gw.url("/oauth/callback?"))
    return gw, browser, browser.callback_url


async def test_a_federated_callback_works_once_and_only_in_the_browser_that_began(
    start_gateway_for: StartGateway,
    idp: OidcProviderProcess,
    provider: OAuthProvider,
    header_server: HttpServerProcess,
    port: int,
) -> None:
    args = (start_gateway_for, idp, provider, header_server.url, port)
    _, browser, callback = await _at_federated_callback(*args)
    before = (await idp.requests_seen()).get("POST /token", 0)
    foreign = await ConnectBrowser().get(callback)
    assert foreign.status_code == 400
    assert "started in another browser" in foreign.text
    assert (await idp.requests_seen()).get("POST /token", 0) == before
    spent = await browser.get(callback)  # taken by the foreign attempt, as a client's state is
    assert spent.status_code == 400
    assert provider.count("/authorize") == 0


async def test_a_federated_callback_with_a_forged_iss_is_refused_before_any_token_request(
    start_gateway_for: StartGateway,
    idp: OidcProviderProcess,
    provider: OAuthProvider,
    header_server: HttpServerProcess,
    port: int,
) -> None:
    args = (start_gateway_for, idp, provider, header_server.url, port)
    _, browser, callback = await _at_federated_callback(*args)
    before = (await idp.requests_seen()).get("POST /token", 0)
    forged = await browser.get(with_params(callback, iss="https://evil.example"))
    assert forged.status_code == 400
    assert "could not be verified" in forged.text
    assert "Location" not in forged.headers
    assert not any(c.startswith("mcp-gateway-session=") for c in forged.set_cookies)
    assert (await idp.requests_seen()).get("POST /token", 0) == before
    assert [e["reason"] for e in _events("upstream_login_refused")] == ["iss_mismatch"]
    assert provider.count("/authorize") == 0


async def test_a_federated_callback_is_refused_when_replayed(
    start_gateway_for: StartGateway,
    idp: OidcProviderProcess,
    provider: OAuthProvider,
    header_server: HttpServerProcess,
    port: int,
) -> None:
    args = (start_gateway_for, idp, provider, header_server.url, port)
    gw, browser, callback = await _at_federated_callback(*args)
    signed_in = await browser.get(callback)
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"].startswith(gw.url("/oauth/connect/files?ticket="))
    replayed = await browser.get(callback)
    assert replayed.status_code == 400
    assert "Location" not in replayed.headers
