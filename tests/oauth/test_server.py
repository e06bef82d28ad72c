"""The facade's authorization and token decisions, as tables: what is refused, and how."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jws
from multidict import MultiDict

from gateway.oauth.context import Settings
from gateway.oauth.error import OAuthError
from gateway.oauth.memory_store import MemoryStore
from gateway.oauth.outcome import ConsentNeeded, Redirect, SignInNeeded
from gateway.oauth.pkce import challenge_of
from gateway.oauth.records import SIGN_IN_STAGE, UPSTREAM_STAGE, AuthorizationRequest, digest
from gateway.oauth.server import AuthorizationServer
from gateway.oauth.signing import SigningKeys
from gateway.oauth.users import LocalUsers, hash_password
from gateway.policy.grants import Grants, rule
from gateway.policy.scopes import ScopeImplications
from tests.conftest import gateway_log

ISSUER = "https://mcp.example.com"
RESOURCE = ISSUER + "/files/mcp"
REDIRECT = "http://127.0.0.1:9999/callback"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
PASSWORD_HASH = hash_password("pw")
BROWSER = digest("this browser's flow cookie")


@contextmanager
def raises_error_page(match: str | None = None) -> Iterator[None]:
    """An `OAuthError` shown as an error page: never a redirect to the client."""
    with pytest.raises(OAuthError, match=match) as refused:
        yield
    assert refused.value.location is None


def facade() -> AuthorizationServer:
    return AuthorizationServer(
        settings=Settings(
            issuer=ISSUER,
            resources={RESOURCE: ("mcp:tools",)},
            access_token_lifetime=600,
            refresh_token_lifetime=86_400,
            code_lifetime=60,
            login_lifetime=600,
        ),
        store=MemoryStore(),
        keys=SigningKeys.generate(),
        grants=Grants([rule({}, ["mcp:tools", "files:read"])], ScopeImplications({})),
        users=LocalUsers.parse({"users": {"alice": {"password_hash": PASSWORD_HASH}}}),
    )


async def registered(server: AuthorizationServer, client_id: str = "client-a") -> str:
    document = {
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
    await server.register(document, client_id=client_id, secret=None)
    return client_id


def authorize_query(registered_id: str, **changes: str | None) -> MultiDict[str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": registered_id,
        "redirect_uri": REDIRECT,
        "state": "xyz",
        "code_challenge": challenge_of(VERIFIER),
        "code_challenge_method": "S256",
        "resource": RESOURCE,
        "scope": "mcp:tools offline_access",
    } | changes
    return MultiDict({k: v for k, v in params.items() if v is not None})


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def approve_and_sign_in(
    server: AuthorizationServer, request: AuthorizationRequest
) -> Redirect:
    """Consent first (nobody signed in yet), then alice on the sign-in form."""
    outcome = await server.authorize(request, None, BROWSER)
    assert isinstance(outcome, ConsentNeeded)
    approved = await server.consent(outcome.state, True, BROWSER, None)
    assert isinstance(approved, SignInNeeded)
    state = await server.begin(approved.request, stage=SIGN_IN_STAGE, browser=BROWSER)
    signed_in = await server.sign_in_local(state, "alice", "pw", BROWSER)
    assert isinstance(signed_in, Redirect)
    assert signed_in.session is not None  # a sign-in session started
    return signed_in


async def code_for(server: AuthorizationServer, client_id: str) -> str:
    """Consent first, then the sign-in form, then the code."""
    _, request = await server.check_authorization(authorize_query(client_id))
    signed_in = await approve_and_sign_in(server, request)
    answer = query_of(signed_in.location)
    assert answer["iss"] == ISSUER
    assert answer["state"] == "xyz"
    return answer["code"]


def token_form(client_id: str, code: str, **changes: str) -> MultiDict[str]:
    return MultiDict(
        {
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
        }
        | changes
    )


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"resource": ISSUER + "/elsewhere/mcp"}, "invalid_target"),
        ({"resource": None}, "invalid_target"),
    ],
    ids=["implicit", "plain-pkce", "no-method", "no-challenge", "unknown-resource", "no-resource"],
)
async def test_bad_requests_go_back_to_the_client_with_iss(
    changes: dict[str, str | None], error: str
) -> None:
    server = facade()
    client_id = await registered(server)
    with pytest.raises(OAuthError) as refused:
        await server.check_authorization(authorize_query(client_id, **changes))
    assert refused.value.location is not None
    answer = query_of(refused.value.location)
    assert (answer["error"], answer["iss"], answer["state"]) == (error, ISSUER, "xyz")
    assert refused.value.location.startswith(REDIRECT + "?")


@pytest.mark.parametrize(
    "changes",
    [
        {"client_id": "nobody"},
        {"redirect_uri": "http://127.0.0.1:9999/callback/"},
        {"redirect_uri": "https://evil.example/callback"},
    ],
    ids=["unknown-client", "trailing-slash", "foreign-redirect"],
)
async def test_an_unknown_client_or_redirect_uri_never_redirects(changes: dict[str, str]) -> None:
    server = facade()
    client_id = await registered(server)
    with raises_error_page():
        await server.check_authorization(authorize_query(client_id, **changes))


async def test_a_code_works_once_and_its_replay_revokes_what_it_issued() -> None:
    server = facade()
    client_id = await registered(server)
    code = await code_for(server, client_id)
    first = await server.token(token_form(client_id, code), None)
    assert first["token_type"] == "Bearer"
    assert "refresh_token" in first
    with pytest.raises(OAuthError, match="invalid_grant"):
        await server.token(token_form(client_id, code), None)
    refresh = MultiDict(
        {"grant_type": "refresh_token", "client_id": client_id,
         "refresh_token": first["refresh_token"]}
    )  # fmt: skip
    with pytest.raises(OAuthError, match="invalid_grant"):
        await server.token(refresh, None)
    # ...and the access token it issued, which every route checks.
    assert await server.store.is_revoked_jti(jti_of(first["access_token"]))


def jti_of(token: str) -> str:
    jti = json.loads(jws.extract_compact(token.encode()).payload)["jti"]
    assert isinstance(jti, str)
    return jti


async def test_revoking_an_access_token_revokes_its_jti_for_its_own_client_only() -> None:
    server = facade()
    owner = await registered(server, "client-a")
    other = await registered(server, "client-b")
    access = (await server.token(token_form(owner, await code_for(server, owner)), None))[
        "access_token"
    ]
    await server.revoke(MultiDict({"client_id": other, "token": access}), None)
    assert not await server.store.is_revoked_jti(jti_of(access))
    await server.revoke(MultiDict({"client_id": owner, "token": access + "x"}), None)
    assert not await server.store.is_revoked_jti(jti_of(access))  # a forged signature: ignored
    await server.revoke(MultiDict({"client_id": owner, "token": access}), None)
    assert await server.store.is_revoked_jti(jti_of(access))


@pytest.mark.parametrize(
    "changes",
    [
        {"code_verifier": "x" * 43},
        {"code_verifier": ""},
        {"redirect_uri": "http://127.0.0.1:9999/other"},
        {"resource": ISSUER + "/other/mcp"},
    ],
    ids=["wrong-verifier", "no-verifier", "other-redirect", "other-resource"],
)
async def test_a_code_redeemed_wrongly_is_spent(changes: dict[str, str]) -> None:
    server = facade()
    client_id = await registered(server)
    code = await code_for(server, client_id)
    with pytest.raises(OAuthError, match="invalid_grant"):
        await server.token(token_form(client_id, code, **changes), None)
    with pytest.raises(OAuthError, match="invalid_grant"):
        await server.token(token_form(client_id, code), None)


async def test_a_code_of_another_client_is_refused() -> None:
    server = facade()
    owner = await registered(server, "client-a")
    thief = await registered(server, "client-b")
    code = await code_for(server, owner)
    with pytest.raises(OAuthError, match="invalid_grant"):
        await server.token(token_form(thief, code), None)


async def test_refresh_rotates_reuse_revokes_and_scope_never_widens() -> None:
    server = facade()
    client_id = await registered(server)
    tokens = await server.token(token_form(client_id, await code_for(server, client_id)), None)

    def refresh(token: str, **extra: str) -> MultiDict[str]:
        base = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": token}
        return MultiDict(base | extra)

    with pytest.raises(OAuthError, match="invalid_scope"):
        await server.token(refresh(tokens["refresh_token"], scope="mcp:tools files:read"), None)
    rotated = await server.token(refresh(tokens["refresh_token"]), None)
    assert rotated["refresh_token"] != tokens["refresh_token"]
    with pytest.raises(OAuthError, match="invalid_grant"):  # reuse of the old one
        await server.token(refresh(tokens["refresh_token"]), None)
    with pytest.raises(OAuthError, match="invalid_grant"):  # the whole family is revoked
        await server.token(refresh(rotated["refresh_token"]), None)


async def test_a_public_client_sending_a_secret_is_refused() -> None:
    server = facade()
    client_id = await registered(server)
    code = await code_for(server, client_id)
    with pytest.raises(OAuthError, match="invalid_client"):
        await server.token(token_form(client_id, code, client_secret="guess"), None)


# -- consent first, browser binding, sign-in sessions (issue 15) --------------------------------

OTHER_BROWSER = digest("another browser's flow cookie")
IDLE, LIFETIME = 100.0, 1000.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def clocked_facade(clock: Clock) -> AuthorizationServer:
    server = facade()
    server.clock = clock
    server.store = MemoryStore(clock=clock)
    server.settings = replace(server.settings, session_idle=IDLE, session_lifetime=LIFETIME)
    return server


async def signed_in_session(server: AuthorizationServer, client_id: str) -> str:
    """Approve and sign in as alice for `client_id` (mcp:tools); the session cookie."""
    _, request = await server.check_authorization(authorize_query(client_id, scope="mcp:tools"))
    signed_in = await approve_and_sign_in(server, request)
    assert "code" in query_of(signed_in.location)
    assert signed_in.session is not None
    return signed_in.session


async def test_consent_comes_first_and_names_the_server_and_route() -> None:
    server = facade()
    server.settings = replace(
        server.settings,
        resource_names={RESOURCE: "Team files"},
        scope_descriptions={"mcp:tools": "Use the tools"},
    )
    client_id = await registered(server)
    _, request = await server.check_authorization(authorize_query(client_id))
    outcome = await server.authorize(request, None, BROWSER)
    assert isinstance(outcome, ConsentNeeded)
    assert outcome.user is None  # nobody signed in yet
    assert (outcome.described.resource_name, outcome.described.route) == ("Team files",
                                                                          "/files/mcp")  # fmt: skip
    assert outcome.described.redirect_host == "127.0.0.1:9999"
    assert "registered itself" in outcome.described.client_origin  # a dynamic registration
    assert outcome.scopes == (("mcp:tools", "Use the tools"),)
    assert outcome.offline


async def test_an_approval_works_once_in_the_browser_it_was_shown_in_and_for_consent_only() -> None:
    server = facade()
    client_id = await registered(server)
    _, request = await server.check_authorization(authorize_query(client_id))

    async def consent_state() -> str:
        outcome = await server.authorize(request, None, BROWSER)
        assert isinstance(outcome, ConsentNeeded)
        return outcome.state

    stolen = await consent_state()
    with raises_error_page():  # another browser: refused, and the state is spent
        await server.consent(stolen, True, OTHER_BROWSER, None)
    with raises_error_page():
        await server.consent(stolen, True, BROWSER, None)
    with raises_error_page():  # a consent state is not a sign-in form's state
        await server.sign_in_local(await consent_state(), "alice", "pw", BROWSER)
    used = await consent_state()
    assert isinstance(await server.consent(used, True, BROWSER, None), SignInNeeded)
    with raises_error_page():  # single use
        await server.consent(used, True, BROWSER, None)


async def test_a_denied_consent_goes_back_to_the_client_without_sign_in() -> None:
    server = facade()
    client_id = await registered(server)
    _, request = await server.check_authorization(authorize_query(client_id))
    outcome = await server.authorize(request, None, BROWSER)
    assert isinstance(outcome, ConsentNeeded)
    denied = await server.consent(outcome.state, False, BROWSER, None)
    assert isinstance(denied, Redirect)
    answer = query_of(denied.location)
    assert (answer["error"], answer["iss"], answer["state"]) == ("access_denied", ISSUER, "xyz")
    assert denied.session is None


async def test_an_upstream_callback_state_belongs_to_the_browser_that_started_it() -> None:
    server = facade()
    client_id = await registered(server)
    _, request = await server.check_authorization(authorize_query(client_id))
    state = await server.begin(request, stage=UPSTREAM_STAGE, browser=BROWSER, nonce="n")
    assert await server.take_upstream_login(state, OTHER_BROWSER) is None
    assert await server.take_upstream_login(state, BROWSER) is None  # spent by the attempt
    fresh = await server.begin(request, stage=UPSTREAM_STAGE, browser=BROWSER, nonce="n")
    assert await server.take_upstream_login(fresh, "") is None  # no flow cookie at all
    fresh = await server.begin(request, stage=UPSTREAM_STAGE, browser=BROWSER, nonce="n")
    taken = await server.take_upstream_login(fresh, BROWSER)
    assert taken is not None
    assert taken.request == request


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"scope": "mcp:tools"}, "code"),
        ({"scope": "mcp:tools files:read"}, "consent:files:read"),
        ({"scope": "mcp:tools files:write"}, "access_denied:files:write"),
        ({"scope": "mcp:tools files:read files:write"}, "consent:files:read"),
        ({"scope": "mcp:tools", "prompt": "login"}, "consent:fresh"),
        ({"scope": "mcp:tools", "max_age": "0"}, "consent:fresh"),
        ({"scope": "mcp:tools", "max_age": "3600"}, "code"),
        ({"scope": "mcp:tools", "prompt": "consent"}, "consent:mcp:tools"),
        ({"scope": "mcp:tools files:read", "prompt": "none"}, "consent_required"),
        ({"scope": "mcp:tools", "prompt": "none"}, "code"),
    ],
    ids=["approved-before", "step-up", "not-grantable", "narrowed-step-up", "prompt-login",
         "max-age-passed", "max-age-not-passed", "prompt-consent", "prompt-none-needs-consent",
         "prompt-none-ok"],
)  # fmt: skip
async def test_with_a_sign_in_session(query: dict[str, str], expected: str) -> None:
    clock = Clock()
    server = clocked_facade(clock)
    client_id = await registered(server)
    cookie = await signed_in_session(server, client_id)
    clock.now += 10
    session = await server.session(cookie)
    assert session is not None
    assert session.subject == "alice"
    _, request = await server.check_authorization(authorize_query(client_id, **query))
    outcome = await server.authorize(request, session, BROWSER)
    if isinstance(outcome, Redirect):
        answer = query_of(outcome.location)
        got = answer.get("error", "code")
        if got == "access_denied":
            got += ":" + answer["error_description"].rpartition(": ")[2]
    else:
        got = "consent:" + (" ".join(s for s, _ in outcome.scopes) if outcome.user else "fresh")
    assert got == expected


@pytest.mark.parametrize(
    ("asked", "issued"),
    [
        ("mcp:tools files:read files:admin offline_access", "files:read mcp:tools offline_access"),
        ("files:admin files:read", "files:read"),
    ],
    ids=["with-offline-access", "without"],
)
async def test_a_first_sign_in_asking_for_more_than_the_user_may_have_is_narrowed(
    asked: str, issued: str
) -> None:
    """A client that asks for every scope a route lists (the MCP Inspector does, from the
    resource metadata) gets what the user may have, and is told so (RFC 6749 section 3.3)."""
    server = facade()
    client_id = await registered(server)
    _, request = await server.check_authorization(authorize_query(client_id, scope=asked))
    signed_in = await approve_and_sign_in(server, request)
    tokens = await server.token(token_form(client_id, query_of(signed_in.location)["code"]), None)
    assert tokens["scope"] == issued
    assert ("refresh_token" in tokens) == ("offline_access" in asked)
    # Asked again for the same, it gains nothing more: refused at once, naming what is missing.
    session = await server.session(signed_in.session)
    again = await server.authorize(request, session, BROWSER)
    assert isinstance(again, Redirect)
    assert query_of(again.location)["error_description"] == "You may not be granted: files:admin"


async def test_a_step_up_consent_with_a_session_gives_a_code_without_a_password() -> None:
    clock = Clock()
    server = clocked_facade(clock)
    client_id = await registered(server)
    cookie = await signed_in_session(server, client_id)
    session = await server.session(cookie)
    _, request = await server.check_authorization(
        authorize_query(client_id, scope="mcp:tools files:read")
    )
    outcome = await server.authorize(request, session, BROWSER)
    assert isinstance(outcome, ConsentNeeded)
    assert outcome.user == "alice"
    approved = await server.consent(outcome.state, True, BROWSER, session)
    assert isinstance(approved, Redirect)  # no sign-in step
    code = query_of(approved.location)["code"]
    tokens = await server.token(token_form(client_id, code), None)
    assert tokens["scope"] == "files:read mcp:tools"
    # Now approved: asked again, it goes straight back; asked with prompt=consent, the
    # consent page is shown, and when the user signed out meanwhile, a sign-in follows.
    assert isinstance(await server.authorize(request, session, BROWSER), Redirect)
    _, again = await server.check_authorization(
        authorize_query(client_id, scope="mcp:tools files:read", prompt="consent")
    )
    outcome = await server.authorize(again, session, BROWSER)
    assert isinstance(outcome, ConsentNeeded)
    assert await server.sign_out(cookie)
    assert await server.session(cookie) is None
    assert isinstance(await server.consent(outcome.state, True, BROWSER, None), SignInNeeded)


def silent_refusals() -> list[dict[str, object]]:
    lines = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    return [r for r in lines if r.get("event") == "silent_authorization_refused"]


async def test_prompt_none_without_a_session_is_login_required() -> None:
    server = facade()
    client_id = await registered(server)
    _, request = await server.check_authorization(authorize_query(client_id, prompt="none"))
    outcome = await server.authorize(request, None, BROWSER)
    assert isinstance(outcome, Redirect)
    assert query_of(outcome.location)["error"] == "login_required"
    [refusal] = silent_refusals()
    assert (refusal["error"], refusal["client_id"], refusal["sub"]) == (
        "login_required",
        client_id,
        None,
    )


async def test_prompt_none_needing_consent_is_audited_with_the_user() -> None:
    server = facade()
    client_id = await registered(server)
    cookie = await signed_in_session(server, client_id)
    session = await server.session(cookie)
    query = authorize_query(client_id, scope="mcp:tools files:read", prompt="none")
    _, request = await server.check_authorization(query)
    outcome = await server.authorize(request, session, BROWSER)
    assert isinstance(outcome, Redirect)
    assert query_of(outcome.location)["error"] == "consent_required"
    [refusal] = silent_refusals()
    assert (refusal["error"], refusal["client_id"], refusal["sub"], refusal["scopes"]) == (
        "consent_required",
        client_id,
        "alice",
        ["files:read", "mcp:tools"],
    )


@pytest.mark.parametrize(
    "changes",
    [{"prompt": "none login"}, {"prompt": "bogus"}, {"max_age": "-1"}, {"max_age": "1e3"}],
    ids=["none-with-another", "unknown-prompt", "negative-max-age", "not-an-integer"],
)
async def test_bad_prompt_or_max_age_is_an_invalid_request(changes: dict[str, str]) -> None:
    server = facade()
    client_id = await registered(server)
    with pytest.raises(OAuthError) as refused:
        await server.check_authorization(authorize_query(client_id, **changes))
    assert refused.value.location is not None  # back to the client
    assert refused.value.error == "invalid_request"


async def test_a_session_ends_when_idle_and_at_its_absolute_limit() -> None:
    clock = Clock()
    server = clocked_facade(clock)
    client_id = await registered(server)
    idle = await signed_in_session(server, client_id)
    clock.now += IDLE - 1
    assert await server.session(idle) is not None  # used: its idle time starts again
    clock.now += IDLE - 1
    assert await server.session(idle) is not None
    clock.now += IDLE
    assert await server.session(idle) is None  # idle for IDLE seconds: over

    start = clock.now
    busy = await signed_in_session(server, client_id)
    while clock.now + IDLE / 2 < start + LIFETIME:
        clock.now += IDLE / 2
        assert await server.session(busy) is not None  # used often, never idle...
    clock.now = start + LIFETIME
    assert await server.session(busy) is None  # ...but never past its absolute end
