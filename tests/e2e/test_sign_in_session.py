"""The facade's sign-in session, end to end with local users (issue 15, acceptance 3 and 4).

After one sign-in the browser holds the gateway's session cookie: the official `mcp` client
steps up from `mcp:tools` to `files:write` for alice with one consent click and no password;
bob, whom no grant rule gives `files:write`, is refused at once without any form; `prompt=login`
shows the sign-in form again; sign-out ends the session. Every audit event of a flow appears
once, with no token, code, password or cookie value in the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from gateway.oauth.upstream import pkce_pair
from gateway.web.facade import SESSION_COOKIE
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.facade import ROUTE, facade_gateway, write_users
from tests.support.oauth_client import (
    AuthorizationError,
    Browser,
    HttpExchange,
    InMemoryTokenStorage,
    OAuthRecord,
    SignIn,
    follow_authorization,
    loopback_redirect_uri,
    oauth_list_and_call,
)
from tests.support.processes import HttpServerProcess
from tests.support.secrets import remember

PASSWORD = remember("a sign-in session saves typing this")
NOT_THE_PASSWORD = SignIn("alice", remember("a form that is never shown"))


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users(tmp_path / "users.yaml", PASSWORD)


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> Gateway:
    return await facade_gateway(start_gateway_for, sdk_json.url, users_file)


def posts(exchanges: list[HttpExchange], gw: Gateway, path: str) -> int:
    return sum(1 for e in exchanges if e.method == "POST" and e.url == gw.url(path))


def events(name: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == name]


def session_cookie(browser: Browser) -> str:
    value = browser.cookie(SESSION_COOKIE)
    assert value is not None
    return remember(value)


async def test_the_sdk_client_steps_up_with_one_consent_click_and_no_password(
    gw: Gateway,
) -> None:
    browser, storage = Browser(), InMemoryTokenStorage()
    first, signed_in = await oauth_list_and_call(
        gw.url(ROUTE), "echo", {"text": "hi"}, sign_in=SignIn("alice", PASSWORD),
        browser=browser, storage=storage,
    )  # fmt: skip
    assert first.call is not None
    assert first.call.text == "hi"
    assert posts(signed_in.exchanges, gw, "/oauth/sign-in") == 1
    session_cookie(browser)

    record = OAuthRecord()
    outcome, _ = await oauth_list_and_call(
        gw.url(ROUTE), "add", {"a": 2, "b": 3}, sign_in=NOT_THE_PASSWORD,
        browser=browser, storage=storage, record=record,
    )  # fmt: skip
    assert outcome.call is not None
    assert outcome.call.text == "5"
    assert record.scope is not None
    assert "files:write" in record.scope.split()
    assert len(record.authorization_urls) == 1  # the step-up
    assert posts(record.exchanges, gw, "/oauth/consent") == 1  # one click
    assert posts(record.exchanges, gw, "/oauth/sign-in") == 0  # no password asked
    remember(record.access_token or "")
    remember(record.refresh_token or "")
    assert len(events("signed_in")) == 1


async def test_a_step_up_the_rules_never_give_is_refused_at_once(gw: Gateway) -> None:
    browser, storage = Browser(), InMemoryTokenStorage()
    await oauth_list_and_call(
        gw.url(ROUTE), "echo", {"text": "hi"}, sign_in=SignIn("bob", PASSWORD),
        browser=browser, storage=storage,
    )  # fmt: skip
    record = OAuthRecord()
    with pytest.raises(AuthorizationError) as refused:
        await oauth_list_and_call(
            gw.url(ROUTE), "add", {"a": 2, "b": 3}, sign_in=SignIn("bob", PASSWORD),
            browser=browser, storage=storage, record=record,
        )  # fmt: skip
    assert refused.value.error == "access_denied"
    assert "files:write" in (refused.value.error_description or "")
    assert posts(record.exchanges, gw, "/oauth/sign-in") == 0  # no form at all
    assert posts(record.exchanges, gw, "/oauth/consent") == 0
    [refusal] = events("grant_refused")
    assert (refusal["sub"], refusal["scopes"], refusal["level"]) == ("bob", ["files:write"], "info")
    session_cookie(browser)


class Client:
    """A client registered at the gateway whose authorizations a test drives by hand."""

    def __init__(self, gw: Gateway, client_id: str, redirect_uri: str) -> None:
        self.gw, self.client_id, self.redirect_uri = gw, client_id, redirect_uri

    @classmethod
    async def register(cls, gw: Gateway) -> Client:
        redirect_uri = loopback_redirect_uri()
        async with httpx2.AsyncClient(timeout=10, trust_env=False) as http:
            answer = await http.post(
                gw.url("/oauth/register"),
                json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none",
                      "grant_types": ["authorization_code", "refresh_token"]},
            )  # fmt: skip
        assert answer.status_code == 201, answer.text
        return cls(gw, answer.json()["client_id"], redirect_uri)

    async def authorize(
        self,
        browser: Browser,
        sign_in: SignIn | None = None,
        *,
        scope: str = "mcp:tools",
        **extra: str,
    ) -> tuple[dict[str, str], list[HttpExchange]]:
        """(the redeemed token response, the browser's requests) of one authorization."""
        verifier, challenge = pkce_pair()
        query = {"response_type": "code", "client_id": self.client_id,
                 "redirect_uri": self.redirect_uri, "state": "s", "code_challenge": challenge,
                 "code_challenge_method": "S256", "resource": self.gw.url(ROUTE),
                 "scope": scope, **extra}  # fmt: skip
        exchanges: list[HttpExchange] = []
        result = await follow_authorization(
            self.gw.url("/oauth/authorize?" + urlencode(query)), self.redirect_uri,
            exchanges=exchanges, sign_in=sign_in, browser=browser,
        )  # fmt: skip
        form = {"grant_type": "authorization_code", "code": remember(result.code),
                "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                "code_verifier": verifier}  # fmt: skip
        async with httpx2.AsyncClient(timeout=10, trust_env=False) as http:
            answer = await http.post(self.gw.url("/oauth/token"), data=form)
        assert answer.status_code == 200, answer.text
        tokens: dict[str, str] = answer.json()
        for name in ("access_token", "refresh_token"):
            if name in tokens:
                remember(tokens[name])
        return tokens, exchanges


def holding(cookie: str) -> Browser:
    """A browser holding only the session cookie `cookie` (copied, or stolen)."""
    browser = Browser()
    cookies = httpx2.Cookies(browser.jar)
    cookies.set(SESSION_COOKIE, cookie, domain="127.0.0.1")
    return browser


async def sign_out(gw: Gateway, browser: Browser) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10, trust_env=False, cookies=browser.jar) as http:
        page = await http.get(gw.url("/oauth/sign-out"))
        assert page.status_code == 200
        assert '<form method="post" action="/oauth/sign-out">' in page.text
        return await http.post(gw.url("/oauth/sign-out"), headers={"Origin": gw.base})


async def test_prompt_login_asks_again_and_sign_out_ends_the_session(gw: Gateway) -> None:
    client, browser = await Client.register(gw), Browser()
    alice = SignIn("alice", PASSWORD)
    _, first = await client.authorize(browser, alice)
    assert (posts(first, gw, "/oauth/consent"), posts(first, gw, "/oauth/sign-in")) == (1, 1)
    cookie = session_cookie(browser)

    _, again = await client.authorize(browser)  # nothing to fill in: straight back
    assert [e.method for e in again] == ["GET"]

    _, forced = await client.authorize(browser, alice, prompt="login")
    assert posts(forced, gw, "/oauth/sign-in") == 1
    renewed = session_cookie(browser)
    assert renewed != cookie  # a fresh sign-in, a fresh session; the old one ended
    with pytest.raises(AuthorizationError) as replaced:
        await client.authorize(holding(cookie), prompt="none")
    assert replaced.value.error == "login_required"

    signed_out = await sign_out(gw, browser)
    assert signed_out.status_code == 200
    assert browser.cookie(SESSION_COOKIE) is None
    with pytest.raises(AuthorizationError) as refused:
        await client.authorize(browser, prompt="none")
    assert refused.value.error == "login_required"
    # The old cookie, kept by someone, names nothing any more.
    with pytest.raises(AuthorizationError) as stale_refused:
        await client.authorize(holding(renewed), prompt="none")
    assert stale_refused.value.error == "login_required"
    refusals = events("silent_authorization_refused")
    assert [(e["error"], e["client_id"], e["sub"]) for e in refusals] == [
        ("login_required", client.client_id, None)
    ] * 3
    _, after = await client.authorize(browser, alice)
    assert posts(after, gw, "/oauth/sign-in") == 1
    session_cookie(browser)
    [ended] = events("signed_out")
    assert ended["sub"] == "alice"


async def test_a_sign_out_post_needs_the_gateways_own_origin(gw: Gateway) -> None:
    client, browser = await Client.register(gw), Browser()
    await client.authorize(browser, SignIn("alice", PASSWORD))
    session_cookie(browser)
    async with httpx2.AsyncClient(timeout=10, trust_env=False, cookies=browser.jar) as http:
        forged = await http.post(
            gw.url("/oauth/sign-out"), headers={"Origin": "https://evil.example"}
        )
        assert forged.status_code == 403
    _, still = await client.authorize(browser)
    assert [e.method for e in still] == ["GET"]  # still signed in
    assert events("signed_out") == []


async def test_every_event_is_logged_once_without_secrets(gw: Gateway) -> None:
    client, browser = await Client.register(gw), Browser()
    tokens, _ = await client.authorize(
        browser, SignIn("alice", PASSWORD), scope="mcp:tools offline_access"
    )
    async with httpx2.AsyncClient(timeout=10, trust_env=False) as http:
        refreshed = await http.post(gw.url("/oauth/token"), data={
            "grant_type": "refresh_token", "client_id": client.client_id,
            "refresh_token": tokens["refresh_token"]})  # fmt: skip
        assert refreshed.status_code == 200
        rotated = refreshed.json()
        remember(rotated["access_token"])
        remember(rotated["refresh_token"])
        reused = await http.post(gw.url("/oauth/token"), data={
            "grant_type": "refresh_token", "client_id": client.client_id,
            "refresh_token": tokens["refresh_token"]})  # fmt: skip
        assert reused.status_code == 400  # a replay: the family is revoked
        revoked = await http.post(gw.url("/oauth/revoke"), data={
            "token": rotated["access_token"], "client_id": client.client_id})  # fmt: skip
        assert revoked.status_code == 200
    with pytest.raises(AuthorizationError) as denied:
        await client.authorize(browser, SignIn("alice", PASSWORD, approve=False),
                               scope="mcp:tools files:write")  # fmt: skip
    assert denied.value.error == "access_denied"
    await sign_out(gw, browser)

    expected = {
        "signed_in": {"user": "alice", "via": "local"},
        "consent_given": {"client_id": client.client_id},
        "token_issued": {"client_id": client.client_id, "sub": "alice", "refresh": True},
        "token_refreshed": {"client_id": client.client_id, "sub": "alice"},
        "token_replay_detected": {"kind": "refresh_token"},
        "token_revoked": {"kind": "access_token"},
        "consent_denied": {"client_id": client.client_id},
        "signed_out": {"sub": "alice"},
    }
    for name, fields in expected.items():
        [record] = events(name)
        assert {k: record.get(k) for k in fields} == fields, name
    log = gateway_log()
    for secret in (tokens["access_token"], tokens["refresh_token"], PASSWORD):
        assert secret not in log
    for cookie in browser.jar:
        assert cookie.value not in log
    # Access lines: every OAuth endpoint a user or client acts through at info.
    access = [json.loads(line) for line in log.splitlines() if '"request_completed"' in line]
    levels = {(a["method"], a["path"].partition("?")[0]): a["level"] for a in access}
    for endpoint in [("GET", "/oauth/authorize"), ("POST", "/oauth/consent"),
                     ("POST", "/oauth/sign-in"), ("POST", "/oauth/token"),
                     ("POST", "/oauth/revoke"), ("POST", "/oauth/register"),
                     ("GET", "/oauth/sign-out"), ("POST", "/oauth/sign-out")]:  # fmt: skip
        assert levels[endpoint] == "info", endpoint
