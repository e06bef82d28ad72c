"""The authorization server: its parts (`ServerContext`) and one entry point per step of the
flow, each implemented in the module of its concern (see the `gateway.oauth` package).

Free of HTTP: `gateway.web.facade` turns requests into these calls and their results and
`OAuthError`s into responses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multidict import MultiMapping

from gateway.oauth import (
    authorize,
    clients,
    consent,
    page_sign_in,
    registration,
    revocation,
    sign_in,
    token,
)
from gateway.oauth.context import ServerContext
from gateway.oauth.metadata import metadata
from gateway.oauth.outcome import (
    ConsentNeeded,
    Described,
    PageSignInFailed,
    Redirect,
    SignInNeeded,
    SignInOutcome,
)
from gateway.oauth.records import (
    AuthorizationRequest,
    ClientRecord,
    LoginTxn,
    PageSignIn,
    SignInSession,
)


class AuthorizationServer(ServerContext):
    """The facade's authorization server (MCP authorization, OAuth 2.1)."""

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata (`gateway.oauth.metadata`)."""
        return metadata(self)

    async def register(self, document: Any, client_id: str, secret: str | None) -> dict[str, Any]:
        """RFC 7591 registration (`gateway.oauth.registration`)."""
        return await registration.register(self, document, client_id, secret)

    async def client(self, client_id: str) -> ClientRecord | None:
        """The client `client_id` names, or None (`gateway.oauth.clients`)."""
        return await clients.known_client(self, client_id)

    async def check_authorization(
        self, query: MultiMapping[str]
    ) -> tuple[ClientRecord, AuthorizationRequest]:
        """An authorization request, checked (`gateway.oauth.authorize`)."""
        return await authorize.check_authorization(self, query)

    async def authorize(
        self, request: AuthorizationRequest, session: SignInSession | None, browser: str
    ) -> Redirect | ConsentNeeded:
        """Consent first, or straight back with a sign-in session (`gateway.oauth.consent`)."""
        return await consent.authorize(self, request, session, browser)

    async def consent(
        self, state: str, approve: bool, browser: str, session: SignInSession | None
    ) -> Redirect | SignInNeeded:
        """The user's decision on a consent form (`gateway.oauth.consent`)."""
        return await consent.consent(self, state, approve, browser, session)

    async def begin(
        self,
        request: AuthorizationRequest,
        *,
        stage: str,
        browser: str,
        code_verifier: str | None = None,
        nonce: str | None = None,
        session: SignInSession | None = None,
    ) -> str:
        """Park a request for its next step; its `state` (`gateway.oauth.authorize`)."""
        return await authorize.begin(self, request, stage=stage, browser=browser,
                                     code_verifier=code_verifier, nonce=nonce,
                                     session=session)  # fmt: skip

    async def take_upstream_login(self, state: str, browser: str) -> LoginTxn | None:
        """The request an upstream provider's callback resumes (`gateway.oauth.authorize`)."""
        return await authorize.take_upstream_login(self, state, browser)

    async def describe(self, request: AuthorizationRequest) -> Described:
        """Who asks for what, for the pages (`gateway.oauth.clients`)."""
        return await clients.describe(self, request)

    def error_redirect(
        self, request: AuthorizationRequest, error: str, description: str
    ) -> Redirect:
        """Back to the client with an error, `state` and `iss` (`gateway.oauth.authorize`)."""
        return authorize.error_redirect(self, request, error, description)

    async def sign_in_local(
        self, state: str, username: str, password: str, browser: str
    ) -> SignInOutcome:
        """A local user's password on the sign-in form (`gateway.oauth.sign_in`)."""
        return await sign_in.sign_in_local(self, state, username, password, browser)

    async def signed_in(
        self,
        request: AuthorizationRequest,
        subject: str,
        claims: Mapping[str, Any],
        *,
        auth_time: float | None = None,
    ) -> Redirect:
        """The user signed in (at `auth_time`, else now): a session and a code
        (`gateway.oauth.sign_in`)."""
        return await sign_in.signed_in(self, request, subject, claims, auth_time)

    async def begin_page_sign_in(
        self,
        return_to: str,
        purpose: str,
        *,
        stage: str,
        browser: str,
        code_verifier: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """Park a sign-in for one of the gateway's pages (`gateway.oauth.page_sign_in`)."""
        return await page_sign_in.begin(self, return_to, purpose, stage=stage, browser=browser,
                                        code_verifier=code_verifier, nonce=nonce)  # fmt: skip

    async def take_page_sign_in(self, state: str, stage: str, browser: str) -> PageSignIn | None:
        """The page sign-in a form or callback resumes (`gateway.oauth.page_sign_in`)."""
        return await page_sign_in.take(self, state, stage, browser)

    async def page_sign_in_local(
        self, state: str, username: str, password: str, browser: str
    ) -> Redirect | PageSignInFailed:
        """A local user's password on a page sign-in's form (`gateway.oauth.page_sign_in`)."""
        return await page_sign_in.sign_in_local(self, state, username, password, browser)

    async def page_signed_in(
        self,
        txn: PageSignIn,
        subject: str,
        claims: Mapping[str, Any],
        *,
        auth_time: float | None = None,
    ) -> Redirect:
        """Signed in for a page (at `auth_time`, else now): a session, and back
        (`gateway.oauth.page_sign_in`)."""
        return await page_sign_in.signed_in(self, txn, subject, claims, auth_time)

    async def session(self, cookie: str | None) -> SignInSession | None:
        """The live sign-in session a cookie names (`gateway.oauth.sign_in`)."""
        return await sign_in.session(self, cookie)

    async def sign_out(self, cookie: str | None) -> bool:
        """End a sign-in session (`gateway.oauth.sign_in`)."""
        return await sign_in.sign_out(self, cookie)

    async def token(self, form: MultiMapping[str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """The token endpoint: code and refresh grants (`gateway.oauth.token`)."""
        return await token.token(self, form, basic)

    async def revoke(self, form: MultiMapping[str], basic: tuple[str, str] | None) -> None:
        """RFC 7009 revocation (`gateway.oauth.revocation`)."""
        await revocation.revoke(self, form, basic)
