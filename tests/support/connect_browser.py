"""A scripted browser for the gateway's `user_oauth` connect pages, and what tests read back.

aiohttp's client, not httpx's: httpx logs every URL it requests at info, and these URLs carry
tickets, states and codes that the log tripwire watches for.

`ConnectBrowser` keeps its own cookies (one per user, as each user has their own browser) and
follows redirects by hand: the gateway's start page, the provider's `/authorize` (the test
provider signs in the user named `user` at once), and back to the gateway's callback, which it
may tamper with first; `sign_in` fills in the gateway's own sign-in form on the way (a browser
signed in as nobody at the facade) and `follow` goes on from any answer. Every step is recorded,
so a test sees where a flow stopped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from tests.support.secrets import remember

MAX_STEPS = 6
MIN_SECRET_CHARS = 16
_FORM = re.compile(
    r'<form method="post" action="([^"]+)"><input type="hidden" name="ticket" value="([^"]*)">'
)
_SIGN_IN = re.compile(
    r'<form method="post" action="/oauth/sign-in"><input type="hidden" name="state" '
    r'value="([^"]*)">'
)
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}


@dataclass(frozen=True)
class Page:
    """One answer the browser got."""

    status_code: int
    headers: CIMultiDict[str]
    set_cookies: list[str]
    text: str


@dataclass
class ConnectBrowser:
    """One user's browser."""

    jar: aiohttp.CookieJar = field(default_factory=lambda: aiohttp.CookieJar(unsafe=True))
    visited: list[tuple[str, int]] = field(default_factory=list)
    """(URL, status) of every request, in order."""
    pages: list[Page] = field(default_factory=list)
    """Every answer, in order."""
    callback_url: str | None = None
    """The provider's redirect back to the gateway, as the provider sent it."""

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.key == name), None)

    def add_cookie(self, name: str, value: str, url: str) -> None:
        self.jar.update_cookies({name: value}, URL(url))

    async def get(self, url: str) -> Page:
        return await self.request("GET", url)

    async def request(
        self, method: str, url: str, form: dict[str, str] | None = None, origin: str | None = None
    ) -> Page:
        """One request (no redirects followed); a form POST carries `origin` as `Origin`."""
        headers = {"Origin": origin} if origin is not None else {}
        async with (
            aiohttp.ClientSession(cookie_jar=self.jar, trust_env=False) as http,
            http.request(
                method,
                URL(url, encoded=True),
                data=form,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(10),
            ) as response,
        ):
            page = Page(
                response.status,
                CIMultiDict(response.headers),
                response.headers.getall("Set-Cookie", []),
                await response.text(),
            )
        self.visited.append((url, page.status_code))
        self.pages.append(page)
        for cookie in self.jar:
            if len(cookie.value) >= MIN_SECRET_CHARS:  # not a provider's cleared or flag cookie
                remember(cookie.value)
        return page

    async def connect(
        self,
        url: str,
        *,
        user: str | None = None,
        tamper: Callable[[str], str] | None = None,
        follow_callback: bool = True,
    ) -> Page:
        """Open the elicitation's `url` (confirming with its button if asked) and follow the
        flow; the last response (the gateway's callback page, or wherever the flow stopped).
        `user` signs in at the provider; `tamper` rewrites the provider's redirect back before
        it is followed; without `follow_callback` the flow stops at that redirect
        (`callback_url` holds it)."""
        response = await self.get(url)
        confirmation = _FORM.search(response.text) if response.status_code == 200 else None
        if confirmation is not None:  # the bearer-link confirmation page: click Connect
            action, ticket = (html.unescape(part) for part in confirmation.groups())
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
            response = await self.request(
                "POST", urljoin(url, action), {"ticket": ticket}, origin=origin
            )
        return await self.follow(
            response, user=user, tamper=tamper, follow_callback=follow_callback
        )

    async def follow(
        self,
        response: Page,
        *,
        user: str | None = None,
        tamper: Callable[[str], str] | None = None,
        follow_callback: bool = True,
        steps: int = MAX_STEPS,
    ) -> Page:
        """Follow the redirects from `response` (at most `steps`), as `connect` does."""
        for _ in range(steps):
            location = response.headers.get("location")
            if response.status_code not in (302, 303) or location is None:
                return response
            location = urljoin(self.visited[-1][0], location)
            if "/authorize" in location and user is not None:
                location = with_params(location, user=user)
            if "/callback" in location:
                self.callback_url = location
                for name, value in parse_qsl(urlsplit(location).query):
                    if name == "state":
                        remember(value)
                if not follow_callback:
                    return response
                if tamper is not None:
                    location = tamper(location)
            response = await self.get(location)
        raise AssertionError(f"more than {steps} redirects: {self.visited}")

    async def sign_in(self, page: Page, username: str, password: str, **follow: Any) -> Page:
        """Fill in the gateway's sign-in form shown on `page` (the last page this browser got)
        and send it from the page's origin; then `follow` on, as `connect` does."""
        found = _SIGN_IN.search(page.text)
        assert found is not None, page.text
        state = html.unescape(found.group(1))
        remember(state)
        url = self.visited[-1][0]
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        form = {"state": state, "username": username, "password": password}
        response = await self.request("POST", urljoin(url, "/oauth/sign-in"), form, origin=origin)
        return await self.follow(response, **follow)


def with_params(url: str, **params: str) -> str:
    """`url` with `params` set (replacing any of the same name)."""
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode(pairs + list(params.items()))))


def without_param(url: str, name: str) -> str:
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def elicitation_of(answer: dict[str, Any]) -> dict[str, Any]:
    """The one URL-mode elicitation of a 2025-11-25 -32042 error answer."""
    error = answer["error"]
    assert error["code"] == -32042, answer
    [elicitation] = error["data"]["elicitations"]
    remember(urlsplit(elicitation["url"]).query.removeprefix("ticket="))
    return dict(elicitation)


async def call_tool(
    url: str, token: str, *, method: str = "tools/call", status: int = 200
) -> dict[str, Any]:
    """One 2025-11-25 JSON-RPC request to the gateway route `url` (`status` expected)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    body = {**CALL, "method": method, "params": CALL["params"] if method == "tools/call" else {}}
    async with (
        aiohttp.ClientSession(trust_env=False) as http,
        http.post(url, json=body, headers=headers) as response,
    ):
        assert response.status == status, await response.text()
        answer: dict[str, Any] = await response.json()
    return answer


async def credential_outcomes(metrics_url: str, upstream: str) -> dict[str, float]:
    """`mcp_gateway_upstream_credentials_total` of `upstream`, by outcome."""
    async with (
        aiohttp.ClientSession(trust_env=False) as http,
        http.get(metrics_url) as response,
    ):
        text = await response.text()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "mcp_gateway_upstream_credentials":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("upstream") == upstream:
                found[sample.labels["outcome"]] = sample.value
    return found
