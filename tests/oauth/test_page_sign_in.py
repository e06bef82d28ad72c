"""Sign-ins for the gateway's own pages (`gateway.oauth.page_sign_in`): where they may return
to, single use, bound to one browser and one stage, with a real `MemoryStore`."""

from __future__ import annotations

import pytest

from gateway.oauth.error import OAuthError
from gateway.oauth.outcome import PageSignInFailed, Redirect
from gateway.oauth.page_sign_in import returnable
from gateway.oauth.records import (
    PAGE_STATE_PREFIX,
    SIGN_IN_STAGE,
    UPSTREAM_STAGE,
    PageSignIn,
    names_page_sign_in,
)
from gateway.oauth.server import AuthorizationServer
from tests.oauth.test_server import BROWSER, ISSUER, OTHER_BROWSER, Clock, clocked_facade

LINK = "/oauth/connect/files?ticket=abc_DEF-123"
PURPOSE = "connect your account at GitHub to the MCP server files"


@pytest.mark.parametrize(
    "path",
    ["/oauth/connect/files", LINK, "/oauth/connect/my-files_2?ticket=a&x=b.c~d"],
)
def test_a_connect_page_is_returnable(path: str) -> None:
    assert returnable(path)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "https://evil.example/oauth/connect/files",
        "//evil.example/oauth/connect/files",
        "/\\evil.example/oauth/connect/files",
        "/oauth/connect/",
        "/oauth/connectfiles",
        "/oauth/authorize?client_id=x",
        "/oauth/connect/files/callback",
        "/oauth/connect/files/../../authorize",
        "/oauth/connect/../authorize",
        "/oauth/connect/Files",
        "/oauth/connect/files@evil.example",
        "/oauth/connect/files?ticket=a#frag",
        "/oauth/connect/files?ticket=a\r\nLocation: https://evil.example",
        "/oauth/connect/files?ticket=a//evil.example",
        "/oauth/connect/files?ticket=%2F%2Fevil",
        "/oauth/connect/files?",
        " /oauth/connect/files",
    ],
    ids=repr,
)
def test_anything_else_is_not(path: str) -> None:
    assert not returnable(path)


@pytest.mark.parametrize(
    ("state", "expected"),
    [("p.abc", True), (PAGE_STATE_PREFIX, True), ("pabc", False), ("abc", False), ("", False)],
)
def test_a_page_sign_ins_state_is_told_apart_by_its_prefix(state: str, expected: bool) -> None:
    assert names_page_sign_in(state) is expected


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> AuthorizationServer:
    return clocked_facade(clock)


async def test_a_page_sign_in_returns_only_to_a_connect_page(server: AuthorizationServer) -> None:
    with pytest.raises(ValueError, match="connect page"):
        await server.begin_page_sign_in("/oauth/authorize", PURPOSE, stage=SIGN_IN_STAGE,
                                        browser=BROWSER)  # fmt: skip
    with pytest.raises(ValueError, match="one browser"):
        await server.begin_page_sign_in(LINK, PURPOSE, stage=SIGN_IN_STAGE, browser="")


async def test_signing_in_starts_a_session_and_goes_back(server: AuthorizationServer) -> None:
    state = await server.begin_page_sign_in(LINK, PURPOSE, stage=SIGN_IN_STAGE, browser=BROWSER)
    assert names_page_sign_in(state)
    outcome = await server.page_sign_in_local(state, "alice", "pw", BROWSER)
    assert isinstance(outcome, Redirect)
    assert outcome.location == ISSUER + LINK
    assert outcome.session is not None
    session = await server.session(outcome.session)
    assert session is not None
    assert session.subject == "alice"
    with pytest.raises(OAuthError, match="expired"):  # single use
        await server.page_sign_in_local(state, "alice", "pw", BROWSER)


async def test_a_wrong_password_gets_a_fresh_state_for_the_same_page(
    server: AuthorizationServer,
) -> None:
    state = await server.begin_page_sign_in(LINK, PURPOSE, stage=SIGN_IN_STAGE, browser=BROWSER)
    failed = await server.page_sign_in_local(state, "alice", "wrong", BROWSER)
    assert isinstance(failed, PageSignInFailed)
    assert failed.state != state
    assert failed.purpose == PURPOSE
    with pytest.raises(OAuthError):
        await server.page_sign_in_local(state, "alice", "pw", BROWSER)
    outcome = await server.page_sign_in_local(failed.state, "alice", "pw", BROWSER)
    assert isinstance(outcome, Redirect)
    assert outcome.location == ISSUER + LINK


async def test_another_browser_spends_the_state_and_gets_nothing(
    server: AuthorizationServer,
) -> None:
    state = await server.begin_page_sign_in(LINK, PURPOSE, stage=SIGN_IN_STAGE, browser=BROWSER)
    with pytest.raises(OAuthError, match="another browser"):
        await server.page_sign_in_local(state, "alice", "pw", OTHER_BROWSER)
    with pytest.raises(OAuthError):
        await server.page_sign_in_local(state, "alice", "pw", BROWSER)


async def test_a_state_waits_for_its_own_stage_and_expires(
    server: AuthorizationServer, clock: Clock
) -> None:
    upstream = await server.begin_page_sign_in(
        LINK, PURPOSE, stage=UPSTREAM_STAGE, browser=BROWSER, code_verifier="v", nonce="n"
    )
    with pytest.raises(OAuthError):  # the local form cannot finish a provider sign-in
        await server.page_sign_in_local(upstream, "alice", "pw", BROWSER)
    late = await server.begin_page_sign_in(LINK, PURPOSE, stage=UPSTREAM_STAGE, browser=BROWSER,
                                           code_verifier="v", nonce="n")  # fmt: skip
    clock.now += server.settings.login_lifetime + 1
    assert await server.take_page_sign_in(late, UPSTREAM_STAGE, BROWSER) is None


async def test_a_client_login_state_is_no_page_sign_in(server: AuthorizationServer) -> None:
    """The client's and the page's transactions live apart: neither finds the other's."""
    state = await server.begin_page_sign_in(LINK, PURPOSE, stage=SIGN_IN_STAGE, browser=BROWSER)
    assert await server.take_upstream_login(state, BROWSER) is None
    assert await server.take_page_sign_in(state.removeprefix("p."), SIGN_IN_STAGE, BROWSER) is None
    found = await server.take_page_sign_in(state, SIGN_IN_STAGE, BROWSER)
    assert found is not None
    assert found.return_to == LINK


async def test_a_stored_target_outside_the_connect_pages_is_refused(
    server: AuthorizationServer, clock: Clock
) -> None:
    record = PageSignIn(
        return_to="https://evil.example/",
        purpose=PURPOSE,
        expires_at=clock.now + 60,
        stage=SIGN_IN_STAGE,
        browser=BROWSER,
    )
    state = await server.store.begin_page_sign_in(record)
    with pytest.raises(OAuthError):
        await server.page_sign_in_local(state, "alice", "pw", BROWSER)
