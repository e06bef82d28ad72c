"""The facade's consent and sign-in pages in a real browser (Debian's Chromium, Playwright).

A person approves, then signs in, on the gateway's own pages and lands on the client's redirect
URI with a code that redeems; another origin cannot frame the pages nor forge an approval
without the form's one-time token; the pages are plain, accessible HTML. Every site here is a
loopback server on a port of its own, so the client and the "attacker" are other origins.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, Response, expect

from tests.conftest import Gateway, StartGateway
from tests.support.browser import LoopbackSite, ensure_chromium, html_response, launch_chromium
from tests.support.facade import ROUTE, facade_gateway, write_users
from tests.support.federation import federated_gateway
from tests.support.oidc import OidcProviderProcess, oidc_provider
from tests.support.processes import LOOPBACK, free_port
from tests.support.secrets import remember

PASSWORD = remember("tr0ub4dor & 3, in a browser")
CLIENT_NAME = "Notes <b>App</b> & Co"  # shown as text, never as markup
SCOPES = ("files:write", "mcp:tools")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get on first use."""
    return ensure_chromium()


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with launch_chromium(chromium) as running:
        yield running


@pytest.fixture
async def gateway(start_gateway_for: StartGateway, tmp_path: Path) -> Gateway:
    """A facade gateway with local users; its upstream is never called here."""
    users_file = write_users(tmp_path / "users.yaml", PASSWORD)
    upstream = f"http://{LOOPBACK}:{free_port()}/mcp"
    return await facade_gateway(start_gateway_for, upstream, users_file)


@pytest.fixture
async def client_site() -> AsyncIterator[LoopbackSite]:
    """The OAuth client's side: its redirect URI is ``client_site.url("/callback")``."""
    async with LoopbackSite() as site:
        yield site


@pytest.fixture
async def attacker() -> AsyncIterator[LoopbackSite]:
    """Another origin, whose pages tests add to ``attacker.pages``."""
    async with LoopbackSite() as site:
        yield site


class Authorization:
    """A registered public client and one authorization request (PKCE S256, resource)."""

    def __init__(self, gateway: Gateway, client_id: str, redirect_uri: str) -> None:
        self.gateway = gateway
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.verifier = secrets.token_urlsafe(48)
        challenge = hashlib.sha256(self.verifier.encode("ascii")).digest()
        self.state = secrets.token_urlsafe(16)
        self.resource = gateway.url(ROUTE)
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": self.state,
            "code_challenge": base64.urlsafe_b64encode(challenge).rstrip(b"=").decode("ascii"),
            "code_challenge_method": "S256",
            "resource": self.resource,
            "scope": " ".join(SCOPES),
        }
        self.url = gateway.url("/oauth/authorize?" + urlencode(query))

    async def redeem(self, code: str) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": self.verifier,
            "resource": self.resource,
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.gateway.url("/oauth/token"), data=form) as response,
        ):
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
        return body


async def authorization(gateway: Gateway, client_site: LoopbackSite) -> Authorization:
    redirect_uri = client_site.url("/callback")
    document = {
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "client_name": CLIENT_NAME,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(gateway.url("/oauth/register"), json=document) as response,
    ):
        assert response.status == 201, await response.text()
        client_id = (await response.json())["client_id"]
    return Authorization(gateway, client_id, redirect_uri)


async def issuer_of(gateway: Gateway) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.url("/.well-known/oauth-authorization-server")) as response,
    ):
        issuer: str = (await response.json())["issuer"]
    return issuer


async def approve(page: Page, auth: Authorization) -> Response:
    """Open the authorization URL and approve on the consent page (it comes first); the
    consent POST's response."""
    await page.goto(auth.url)
    await expect(page.get_by_role("heading", name="Approve access", level=1)).to_be_visible()
    async with page.expect_response(auth.gateway.url("/oauth/consent")) as answer:
        await page.get_by_role("button", name="Approve").click()
    response = await answer.value
    await response.finished()
    return response


async def sign_in(page: Page, auth: Authorization, password: str = PASSWORD) -> Response:
    """On the sign-in page (after approval), sign in as alice; the sign-in POST's response."""
    await expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    await page.get_by_label("User name").fill("alice")
    await page.get_by_label("Password").fill(password)
    async with page.expect_response(auth.gateway.url("/oauth/sign-in")) as answer:
        await page.get_by_role("button", name="Sign in").click()
    response = await answer.value
    await response.finished()
    return response


def assert_page_headers(headers: dict[str, str]) -> None:
    """The gateway refuses to be framed, in both the old and the CSP way."""
    assert headers["x-frame-options"] == "DENY"
    directives = [d.strip() for d in headers["content-security-policy"].split(";")]
    assert "frame-ancestors 'none'" in directives
    assert headers["cache-control"] == "no-store"


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


async def test_approve_and_sign_in_lands_on_the_redirect_uri_with_a_code(
    browser: Browser, gateway: Gateway, client_site: LoopbackSite
) -> None:
    auth = await authorization(gateway, client_site)
    page = await browser.new_page()
    shown = await page.goto(auth.url)
    assert shown is not None
    assert shown.status == 200
    assert_page_headers(await shown.all_headers())

    # Consent comes first, naming the client, where it sends the user, the MCP server and
    # its route, and each scope.
    await expect(page.get_by_role("heading", name="Approve access", level=1)).to_be_visible()
    main = page.get_by_role("main")
    await expect(main.get_by_text(CLIENT_NAME, exact=True)).to_be_visible()
    assert await main.locator("b").count() == 0  # the name's markup was escaped
    await expect(main.get_by_text(f"{LOOPBACK}:{client_site.port}", exact=True)).to_be_visible()
    await expect(main.get_by_text("files", exact=True)).to_be_visible()  # the MCP server
    await expect(main.get_by_text(ROUTE, exact=True)).to_be_visible()
    # Registered dynamically: the page says its name is its own claim.
    origin = main.get_by_text(re.compile("registered itself with this gateway"))
    await expect(origin).to_be_visible()
    scopes = main.get_by_role("list").get_by_role("listitem")
    await expect(scopes).to_have_text(list(SCOPES))

    async with page.expect_response(gateway.url("/oauth/consent")) as approved:
        await page.get_by_role("button", name="Approve").click()
    assert (await approved.value).status == 200  # the sign-in page, next
    await expect(main.get_by_text(CLIENT_NAME, exact=True)).to_be_visible()
    await expect(main.get_by_text("files", exact=True)).to_be_visible()
    signed_in = await sign_in(page, auth)
    assert signed_in.status == 302
    await page.wait_for_url(re.compile(re.escape(auth.redirect_uri) + r"\?"))
    await expect(page.get_by_role("heading", name="Welcome back")).to_be_visible()

    landed = query_of(page.url)
    assert client_site.requested("/callback") == [
        urlsplit(page.url).path + "?" + urlsplit(page.url).query
    ]
    assert set(landed) == {"code", "state", "iss"}
    code = remember(landed["code"][0])
    assert landed["state"] == [auth.state]
    issuer = await issuer_of(gateway)
    assert issuer == gateway.base
    assert landed["iss"] == [issuer]

    tokens = await auth.redeem(code)
    remember(tokens["access_token"])
    assert tokens["token_type"].lower() == "bearer"
    assert set(tokens["scope"].split()) == set(SCOPES)


async def test_another_origin_cannot_frame_the_pages(
    browser: Browser, gateway: Gateway, client_site: LoopbackSite, attacker: LoopbackSite
) -> None:
    auth = await authorization(gateway, client_site)
    error_url = gateway.url("/oauth/authorize?client_id=nobody")

    async def control(request: web.Request) -> web.Response:
        return html_response('<label for="password">Password</label><input id="password">')

    async def framing(request: web.Request) -> web.Response:
        return html_response(
            f'<iframe name="control" title="control" src="{attacker.url("/control")}"></iframe>'
            f'<iframe name="authorize" title="authorize" src="{html.escape(auth.url)}"></iframe>'
            f'<iframe name="error" title="error" src="{html.escape(error_url)}"></iframe>'
            '<iframe name="consent" title="consent"></iframe>'
            f'<form method="post" target="consent" action="{gateway.url("/oauth/consent")}">'
            '<input type="hidden" name="decision" value="approve">'
            "<button>Win a prize</button></form>",
            title="Totally harmless",
        )

    attacker.pages |= {"/control": control, "/framing": framing}
    page = await browser.new_page()
    async with (
        page.expect_response(lambda r: r.url == auth.url) as framed_authorize,
        page.expect_response(lambda r: r.url == error_url) as framed_error,
    ):
        await page.goto(attacker.url("/framing"))  # waits for the frames' load events too
    for answer, status in ((await framed_authorize.value, 200), (await framed_error.value, 400)):
        assert answer.status == status  # the gateway did answer with its page...
        assert_page_headers(await answer.all_headers())

    control_frame = page.frame(name="control")
    assert control_frame is not None
    assert await control_frame.get_by_label("Password").count() == 1  # framing works elsewhere
    for name, heading in (("authorize", "Approve access"), ("error", "Cannot continue")):
        frame = page.frame(name=name)
        assert frame is not None
        assert frame.url.startswith("chrome-error://"), name  # ...but the browser refused it
        assert await frame.get_by_role("heading", name=heading).count() == 0
    authorize_frame = page.frame(name="authorize")
    assert authorize_frame is not None
    assert await authorize_frame.get_by_role("button", name="Approve").count() == 0

    # A consent page only ever answers a POST; one from another origin never gets one.
    async with page.expect_response(gateway.url("/oauth/consent")) as framed_consent:
        await page.get_by_role("button", name="Win a prize").click()
    assert (await framed_consent.value).status == 403  # the edge refuses the foreign Origin
    consent_frame = page.frame(name="consent")
    assert consent_frame is not None
    assert await consent_frame.get_by_role("button", name="Approve").count() == 0
    assert client_site.requests == []


async def test_forged_consent_posts_are_refused(
    browser: Browser, gateway: Gateway, client_site: LoopbackSite, attacker: LoopbackSite
) -> None:
    """Two defences: the edge refuses a POST whose `Origin` is another site's (403), whatever
    it carries; and the consent form's hidden ``state`` is a single-use, unguessable token of
    this authorization in this browser, without which even a same-origin POST is refused
    (400)."""
    auth = await authorization(gateway, client_site)
    context = await browser.new_context()  # one browser profile: the signed-in person's
    victim = await context.new_page()
    await victim.goto(auth.url)
    approve_button = victim.get_by_role("button", name="Approve")
    await expect(approve_button).to_be_visible()
    token_field = 'form[action="/oauth/consent"] input[name="state"]'
    real_token = remember(await victim.locator(token_field).input_value())

    def forged_form(fields: dict[str, str]) -> str:
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in fields.items()
        )
        return (
            f'<form method="post" action="{gateway.url("/oauth/consent")}">{inputs}</form>'
            "<script>document.forms[0].submit()</script>"
        )

    forgeries = {
        "/no-token": {"decision": "approve"},
        "/wrong-token": {"state": secrets.token_urlsafe(32), "decision": "approve"},
        # Even the real token (which an attacker cannot read) does not get through the edge.
        "/real-token": {"state": real_token, "decision": "approve"},
    }

    async def forge(request: web.Request) -> web.Response:
        return html_response(forged_form(forgeries[request.path]), title="Win a prize")

    attacker.pages |= dict.fromkeys(forgeries, forge)
    for path in forgeries:
        page = await context.new_page()
        async with page.expect_response(gateway.url("/oauth/consent")) as posted:
            await page.goto(attacker.url(path))  # the page submits itself
        response = await posted.value
        assert response.request.method == "POST"
        assert await response.request.header_value("origin") == attacker.origin
        assert response.status == 403, path
        assert "location" not in await response.all_headers()
        await page.close()

    # From the gateway's own origin, a consent form stripped of its token, or with a wrong
    # one, is refused too (a second authorization gives a second consent page to tamper with).
    tampered = await context.new_page()
    for tamper in ("el => el.remove()", "el => { el.value = 'forged' }"):
        await tampered.goto(auth.url)
        await tampered.locator(token_field).evaluate(tamper)
        async with tampered.expect_response(gateway.url("/oauth/consent")) as posted:
            await tampered.get_by_role("button", name="Approve").click()
        response = await posted.value
        assert await response.request.header_value("origin") == gateway.base
        assert response.status == 400, tamper
        assert_page_headers(await response.all_headers())
        await expect(tampered.get_by_role("heading", name="Cannot continue")).to_be_visible()
    assert client_site.requests == []  # no forgery reached the client, with or without a code

    # The real form, with its token, still works: the forgeries neither used nor spent it.
    await approve_button.click()
    assert (await sign_in(victim, auth)).status == 302
    await victim.wait_for_url(re.compile(re.escape(auth.redirect_uri) + r"\?"))
    landed = query_of(victim.url)
    remember(landed["code"][0])
    assert landed["state"] == [auth.state]
    await context.close()


ACCESSIBILITY_FACTS = """() => ({
    lang: document.documentElement.lang,
    title: document.title,
    h1: Array.from(document.querySelectorAll('h1'), h => h.textContent.trim()),
    mains: document.querySelectorAll('main').length,
    scripts: document.scripts.length,
    unlabelled: Array.from(
        document.querySelectorAll('input:not([type=hidden]), select, textarea'),
    ).filter(e => e.labels.length === 0).map(e => e.name || e.id || e.outerHTML),
    unnamedButtons: Array.from(document.querySelectorAll('button'))
        .filter(b => !b.textContent.trim()).length,
})"""


async def assert_accessible(page: Page, title: str) -> None:
    facts = await page.evaluate(ACCESSIBILITY_FACTS)
    assert facts == {
        "lang": "en",
        "title": title,
        "h1": [title],
        "mains": 1,
        "scripts": 0,
        "unlabelled": [],
        "unnamedButtons": 0,
    }
    await expect(
        page.get_by_role("main").get_by_role("heading", name=title, level=1)
    ).to_be_visible()


async def test_the_pages_are_plain_accessible_html(
    browser: Browser, gateway: Gateway, client_site: LoopbackSite
) -> None:
    auth = await authorization(gateway, client_site)
    page = await browser.new_page()

    await page.goto(gateway.url("/oauth/authorize?client_id=nobody"))
    await assert_accessible(page, "Cannot continue")

    await page.goto(auth.url)
    await assert_accessible(page, "Approve access")
    for name in ("Approve", "Deny"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
    await page.get_by_role("button", name="Approve").click()

    await assert_accessible(page, "Sign in")
    await expect(page.get_by_label("User name")).to_be_focused()  # autofocus
    await expect(page.get_by_label("User name")).to_have_attribute("autocomplete", "username")
    await expect(page.get_by_label("Password")).to_have_attribute("type", "password")

    failed = await sign_in(page, auth, password=remember("not " + PASSWORD))
    assert failed.status == 401
    await assert_accessible(page, "Sign in")
    await expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")

    # The failed attempt's page carries a fresh form token: signing in from it works.
    assert (await sign_in(page, auth)).status == 302
    await page.wait_for_url(re.compile(re.escape(auth.redirect_uri) + r"\?"))
    remember(query_of(page.url)["code"][0])

    # Denying, on the next authorization's consent page, sends the client an error instead.
    denied = await authorization(gateway, client_site)
    await page.goto(denied.url)
    await page.get_by_role("button", name="Deny").click()
    await page.wait_for_url(re.compile(re.escape(denied.redirect_uri) + r"\?"))
    landed = query_of(page.url)
    assert landed["error"] == ["access_denied"]
    assert landed["state"] == [denied.state]
    assert "code" not in landed

    # Signing out is a page with one button; afterwards the consent page knows nobody.
    await page.goto(gateway.url("/oauth/sign-out"))
    await assert_accessible(page, "Sign out")
    await page.get_by_role("button", name="Sign out").click()
    await assert_accessible(page, "Signed out")
    await page.goto(denied.url)
    await expect(page.get_by_role("heading", name="Approve access")).to_be_visible()
    assert await page.get_by_text("Signed in as").count() == 0


# -- consent before the upstream provider (issue 15) --------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProviderProcess]:
    with oidc_provider() as running:
        yield running


@pytest.fixture
async def federated(start_gateway_for: StartGateway, provider: OidcProviderProcess) -> Gateway:
    """A facade gateway whose users sign in at the real oidc-provider (alice, group eng)."""
    upstream = f"http://{LOOPBACK}:{free_port()}/mcp"
    return await federated_gateway(start_gateway_for, provider, upstream)


async def provider_auth_requests(provider: OidcProviderProcess) -> int:
    return (await provider.requests_seen()).get("GET /auth", 0)


async def test_consent_comes_before_the_provider_and_binds_to_its_request(
    browser: Browser, federated: Gateway, provider: OidcProviderProcess, client_site: LoopbackSite
) -> None:
    auth = await authorization(federated, client_site)
    context = await browser.new_context()
    page = await context.new_page()
    before = await provider_auth_requests(provider)
    await page.goto(auth.url)
    await expect(page.get_by_role("heading", name="Approve access", level=1)).to_be_visible()
    await expect(page.get_by_role("main").get_by_text(CLIENT_NAME, exact=True)).to_be_visible()
    assert await provider_auth_requests(provider) == before  # nothing reached the provider
    token_field = 'form[action="/oauth/consent"] input[name="state"]'
    approval = remember(await page.locator(token_field).input_value())

    await page.get_by_role("button", name="Approve").click()
    await page.wait_for_url(re.compile(re.escape(auth.redirect_uri) + r"\?"))
    landed = query_of(page.url)
    remember(landed["code"][0])
    assert landed["state"] == [auth.state]
    assert await provider_auth_requests(provider) == before + 1  # after approval, once

    # The approval, sent again from the gateway's own origin, is spent.
    replay = await context.new_page()
    # A consent page of another request (approved before, so asked for with prompt=consent)
    # to carry the old token.
    await replay.goto(auth.url + "&prompt=consent")
    await replay.locator(token_field).evaluate(f"el => {{ el.value = {approval!r} }}")
    async with replay.expect_response(federated.url("/oauth/consent")) as posted:
        await replay.get_by_role("button", name="Approve").click()
    assert (await posted.value).status == 400
    await expect(replay.get_by_role("heading", name="Cannot continue")).to_be_visible()

    # Another client is not covered by that approval: its own consent page, and a denial
    # there never reaches the provider.
    other = await authorization(federated, client_site)
    await page.goto(other.url)
    await expect(page.get_by_role("heading", name="Approve access", level=1)).to_be_visible()
    await expect(page.get_by_text("Signed in as")).to_be_visible()
    seen = await provider_auth_requests(provider)
    await page.get_by_role("button", name="Deny").click()
    await page.wait_for_url(re.compile(re.escape(other.redirect_uri) + r"\?"))
    denied = query_of(page.url)
    assert denied["error"] == ["access_denied"]
    assert denied["state"] == [other.state]
    assert await provider_auth_requests(provider) == seen
    await context.close()


async def test_a_denied_consent_never_reaches_the_provider(
    browser: Browser, federated: Gateway, provider: OidcProviderProcess, client_site: LoopbackSite
) -> None:
    auth = await authorization(federated, client_site)
    page = await browser.new_page()
    before = await provider_auth_requests(provider)
    await page.goto(auth.url)
    await page.get_by_role("button", name="Deny").click()
    await page.wait_for_url(re.compile(re.escape(auth.redirect_uri) + r"\?"))
    landed = query_of(page.url)
    assert landed["error"] == ["access_denied"]
    assert "code" not in landed
    assert await provider_auth_requests(provider) == before
