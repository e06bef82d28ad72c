"""The authorization endpoint's request and response (RFC 6749 section 4.1, PKCE, RFC 8707,
RFC 9207), and the parked request that carries a flow from one step to the next.

A request is checked in two stages. The client and its `redirect_uri` come first, exactly
(nothing is known good until they are): anything wrong with them is an error page, never a
redirect. Every other problem goes back to the client through that redirect URI, with `state`
and `iss`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

from multidict import MultiMapping

from gateway.oauth.client_document_fetch import ClientDocumentError
from gateway.oauth.clients import find_client
from gateway.oauth.context import OFFLINE_ACCESS, ServerContext, single
from gateway.oauth.error import OAuthError
from gateway.oauth.issuer_check import with_issuer
from gateway.oauth.outcome import Redirect
from gateway.oauth.pkce import PkceError, check_challenge
from gateway.oauth.records import (
    UPSTREAM_STAGE,
    AuthorizationRequest,
    ClientRecord,
    CodeGrant,
    LoginTxn,
    SignInSession,
)
from gateway.oauth.redirects import add_query, redirect_matches

PROMPTS = frozenset({"none", "login", "consent", "select_account"})
"""`prompt` values understood (OpenID Connect Core section 3.1.2.1); `select_account` is
accepted and means nothing more here (one account per sign-in)."""
MAX_PARAM_CHARS = 2048
SINGLE_PARAMETERS = ("response_type", "client_id", "redirect_uri", "state", "scope",
                     "code_challenge", "code_challenge_method", "resource", "prompt",
                     "max_age")  # fmt: skip
"""Parameters that must not be repeated (RFC 6749 section 3.1)."""


async def check_authorization(
    server: ServerContext, query: MultiMapping[str]
) -> tuple[ClientRecord, AuthorizationRequest]:
    """Validate an authorization request (RFC 6749 section 4.1.1, PKCE, RFC 8707)."""
    client, redirect_uri = await _client_and_redirect_uri(server, query)
    state = single(query, "state")

    def fail(error: str, description: str) -> OAuthError:
        location = response_location(server, redirect_uri, state, error=error,
                                     error_description=description)  # fmt: skip
        return OAuthError(error, description, location=location)

    for name in SINGLE_PARAMETERS:
        if len(query.getall(name, ())) > 1:
            raise fail("invalid_request", f"{name} is repeated")
        if len(query.get(name, "")) > MAX_PARAM_CHARS:
            raise fail("invalid_request", f"{name} is too long")
    if query.get("response_type") != "code":
        raise fail("unsupported_response_type", "Only response_type=code is supported")
    try:
        challenge = check_challenge(query.get("code_challenge_method"), query.get("code_challenge"))
    except PkceError as exc:
        raise fail("invalid_request", f"PKCE S256 is required ({exc.reason})") from None
    resource = query.get("resource")
    if resource is None or resource not in server.settings.resources:
        raise fail("invalid_target", "resource must name one of this server's MCP routes")
    prompt, max_age = _prompt_and_max_age(query, fail)
    request = AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        code_challenge=challenge,
        resource=resource,
        scopes=_requested_scopes(server, client, resource, query.get("scope", "")),
        state=state,
        prompt=prompt,
        max_age=max_age,
    )
    return client, request


async def _client_and_redirect_uri(
    server: ServerContext, query: MultiMapping[str]
) -> tuple[ClientRecord, str]:
    """The client and the redirect URI to answer it at, or an error page (no `location`)."""
    client_id = single(query, "client_id")
    try:
        client = await find_client(server, client_id) if client_id else None
    except ClientDocumentError as exc:
        raise OAuthError("invalid_client", "This application's metadata document cannot be "
                         f"used: {exc.reason}.") from None  # fmt: skip
    if client is None:
        raise OAuthError("invalid_client", "This application is not registered with this server.")
    redirect_uri = single(query, "redirect_uri")
    if redirect_uri is None and len(client.redirect_uris) == 1:
        redirect_uri = client.redirect_uris[0]
    if redirect_uri is None or not redirect_matches(redirect_uri, client.redirect_uris):
        raise OAuthError(
            "invalid_request", "The redirect address does not match this application's."
        )
    return client, redirect_uri


def _requested_scopes(
    server: ServerContext, client: ClientRecord, resource: str, scope: str
) -> frozenset[str]:
    """The scopes asked for: the route's baseline when none (or only `offline_access`) is
    named; `offline_access` only for a client that may refresh."""
    requested = frozenset(scope.split())
    if not requested - {OFFLINE_ACCESS}:
        requested |= frozenset(server.settings.resources[resource])
    if OFFLINE_ACCESS in requested and "refresh_token" not in client.grant_types:
        requested -= {OFFLINE_ACCESS}
    return requested


def _prompt_and_max_age(
    query: MultiMapping[str], fail: Callable[[str, str], OAuthError]
) -> tuple[frozenset[str], int | None]:
    """`prompt` and `max_age` (OpenID Connect Core section 3.1.2.1), checked."""
    prompt = frozenset(query.get("prompt", "").split())
    if not prompt <= PROMPTS or ("none" in prompt and len(prompt) > 1):
        raise fail("invalid_request", "prompt must be none, or any of login, consent, "
                   "select_account")  # fmt: skip
    max_age = query.get("max_age")
    if max_age is not None and not (max_age.isascii() and max_age.isdigit()):
        raise fail("invalid_request", "max_age must be a number of seconds")
    return prompt, None if max_age is None else int(max_age)


def response_location(
    server: ServerContext, redirect_uri: str, state: str | None, **params: str
) -> str:
    """The client's redirect URI with an authorization response, always with `iss`
    (RFC 6749 section 4.1.2, RFC 9207 section 2)."""
    if state is not None:
        params["state"] = state
    return add_query(redirect_uri, with_issuer(params, server.settings.issuer))


def error_redirect(
    server: ServerContext, request: AuthorizationRequest, error: str, description: str
) -> Redirect:
    """Back to the client with an error (RFC 6749 section 4.1.2.1)."""
    return Redirect(response_location(server, request.redirect_uri, request.state, error=error,
                                      error_description=description))  # fmt: skip


async def issue_code(
    server: ServerContext,
    request: AuthorizationRequest,
    subject: str,
    claims: Mapping[str, Any],
    auth_time: float,
) -> str:
    """A code for the signed-in `subject`; the redirect Location that carries it."""
    code = await server.store.issue_code(
        CodeGrant(
            client_id=request.client_id,
            redirect_uri=request.redirect_uri,
            code_challenge=request.code_challenge,
            resource=request.resource,
            scopes=request.scopes,
            subject=subject,
            auth_time=auth_time,
            expires_at=server.clock() + server.settings.code_lifetime,
            claims=claims,
        )
    )
    return response_location(server, request.redirect_uri, request.state, code=code)


async def begin(
    server: ServerContext,
    request: AuthorizationRequest,
    *,
    stage: str,
    browser: str,
    code_verifier: str | None = None,
    nonce: str | None = None,
    session: SignInSession | None = None,
) -> str:
    """Park a checked request for its next step (`stage`) in the browser whose flow cookie
    digest is `browser`: the `state` of the next form, or sent to the upstream provider
    (with our PKCE verifier and nonce for its answer)."""
    txn = LoginTxn(
        request=request,
        expires_at=server.clock() + server.settings.login_lifetime,
        stage=stage,
        browser=browser,
        code_verifier=code_verifier,
        nonce=nonce,
        subject=None if session is None else session.subject,
        claims={} if session is None else session.claims,
        auth_time=None if session is None else session.auth_time,
    )
    return await server.store.begin_login(txn)


async def take(server: ServerContext, state: str, stage: str, browser: str) -> LoginTxn | None:
    """The parked request `state` names if it waits for `stage` in this browser (single
    use: taken whatever the answer, so a form sent from elsewhere is spent too)."""
    txn = await server.store.take_login(state, server.clock())
    if txn is None or txn.stage != stage or txn.browser is None:
        return None
    return txn if hmac.compare_digest(txn.browser, browser) else None


async def take_upstream_login(server: ServerContext, state: str, browser: str) -> LoginTxn | None:
    """The parked request an upstream provider's callback `state` names, if this browser
    started it (login CSRF: nobody can hand a victim the callback of their own sign-in)."""
    return await take(server, state, UPSTREAM_STAGE, browser)
