"""The authorization server's protocol logic, free of HTTP: what each endpoint decides.

`gateway.web.facade` turns requests into calls here and results into responses. The flow:

1. `/oauth/authorize` -> `check_authorization`: the client and its `redirect_uri` are checked
   exactly first, and anything wrong with them is an `ErrorPageError` (never a redirect); every
   other problem is a `RedirectError` back to the client, with `state` and `iss`.
2. `authorize`: the user consents first (`consent`), before anyone signs in or any request
   reaches an upstream provider (MCP security best practices: confused deputy); then signs in
   (`sign_in_local`, or at the provider and back through `signed_in`), after which the grant
   rules decide. A live sign-in session (`session`) skips the sign-in, and consent already
   given. Each step's form carries a single-use `state` from the store, bound to the browser
   (the digest of its flow cookie) that started the flow.
3. The client is sent back with a code (`issue_code`): `code`, `state` and `iss`.
4. `/oauth/token` -> `token`: code (single use, bound to client, redirect URI, PKCE verifier and
   resource) or refresh token (rotated on every use, reuse revokes the family).
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from multidict import MultiMapping

from gateway.auth.jwt import TokenError, looks_like_jwt, parse_jwt, verify_with_any
from gateway.oauth.client_documents import ClientDocumentError, ClientDocuments, is_client_id_url
from gateway.oauth.client_metadata import ClientMetadataError, parse_client_metadata
from gateway.oauth.issuer_check import with_issuer
from gateway.oauth.pkce import PkceError, check_challenge, verify
from gateway.oauth.redirects import add_query, redirect_matches
from gateway.oauth.signing import SigningKeys
from gateway.oauth.store import (
    CONSENT_STAGE,
    NO_CLIENT_AUTH,
    SIGN_IN_STAGE,
    UPSTREAM_STAGE,
    AuthorizationRequest,
    AuthStore,
    ClientRecord,
    CodeGrant,
    CodeReplay,
    LoginTxn,
    Reused,
    Rotated,
    ScopeNotGranted,
    SignInSession,
    digest,
)
from gateway.oauth.users import LocalUsers
from gateway.observability.logging import get_logger
from gateway.policy.grants import ATTAINABLE_SCOPE_CLAIM, Grants

audit = get_logger("gateway.audit")

OFFLINE_ACCESS = "offline_access"
"""Asks for a refresh token (OpenID Connect Core section 11); never a resource scope."""
CONSENT_LIFETIME = 30 * 86_400.0
PROMPTS = frozenset({"none", "login", "consent", "select_account"})
"""`prompt` values understood (OpenID Connect Core section 3.1.2.1); `select_account` is
accepted and means nothing more here (one account per sign-in)."""
MAX_PARAM_CHARS = 2048


class OAuthError(Exception):
    """An OAuth error answered as JSON (token, registration, revocation endpoints)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class ErrorPageError(Exception):
    """An authorization request that must not redirect anywhere (unknown client or
    redirect URI): the user sees this page instead (RFC 6749 section 4.1.2.1)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class RedirectError(Exception):
    """An authorization error the client learns through its redirect URI."""

    def __init__(self, location: str, error: str) -> None:
        super().__init__(error)
        self.location = location
        self.error = error


@dataclass(frozen=True, slots=True)
class Settings:
    issuer: str
    resources: Mapping[str, Sequence[str]]
    """Each route's resource URL -> its baseline scopes (the default request)."""
    access_token_lifetime: int
    refresh_token_lifetime: float
    code_lifetime: float
    login_lifetime: float
    dynamic_registration: bool = True
    session_idle: float = 1800.0
    """Sign-in sessions end after this many seconds unused; 0: no sign-in sessions."""
    session_lifetime: float = 43_200.0
    resource_names: Mapping[str, str] = field(default_factory=dict)
    """Resource URL -> the MCP server's name, for the pages."""
    scope_descriptions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Redirect:
    """The flow is over: send the user agent back to the client."""

    location: str
    session: str | None = None
    """A new sign-in session's cookie value, to set with this answer."""


@dataclass(frozen=True, slots=True)
class Described:
    """Who asks for what, as the pages name them."""

    client_name: str
    """The client's name (with the host of its metadata document for a URL client id)."""
    client_origin: str
    """Where the client comes from, as the end of "This application ..."."""
    redirect_host: str
    resource_name: str
    """The MCP server: its `resource_name`, else the upstream's name."""
    route: str


@dataclass(frozen=True, slots=True)
class ConsentNeeded:
    """The user must approve; `state` goes into the consent form."""

    state: str
    described: Described
    scopes: tuple[tuple[str, str], ...]
    """(scope, description) to approve; the description may be empty."""
    offline: bool = False
    """The client also asks to stay signed in (a refresh token)."""
    user: str | None = None
    """The signed-in user, when a sign-in session exists."""


@dataclass(frozen=True, slots=True)
class SignInNeeded:
    """Approved: the user now signs in (on the local form or at the upstream provider)."""

    request: AuthorizationRequest


@dataclass(frozen=True, slots=True)
class SignInFailed:
    """Wrong user name or password: show the form again with this fresh `state`."""

    state: str
    described: Described


SignInOutcome = Redirect | SignInFailed


@dataclass
class AuthorizationServer:
    settings: Settings
    store: AuthStore
    keys: SigningKeys
    grants: Grants
    users: LocalUsers | None
    clients: Mapping[str, ClientRecord] = field(default_factory=dict)
    """Clients registered in the config (they win over dynamic ones of the same id)."""
    documents: ClientDocuments | None = None
    """Resolves `https://` client ids (Client ID Metadata Documents); None: not supported."""
    clock: Callable[[], float] = time.time
    on_revoked: Callable[[], None] = lambda: None
    """Called after something may have been revoked, so that it takes effect at once here
    (open streams included)."""
    resource_scopes: Callable[[str], frozenset[str] | None] = lambda resource: None
    """Every scope the route at a resource URL can require (None: unknown): the ceiling a
    token carries is cut to it."""

    # -- metadata and registration --------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        issuer = self.settings.issuer
        scopes = sorted({s for ss in self.settings.resources.values() for s in ss})
        document: dict[str, Any] = {
            "issuer": issuer,
            "authorization_endpoint": issuer + "/oauth/authorize",
            "token_endpoint": issuer + "/oauth/token",
            "revocation_endpoint": issuer + "/oauth/revoke",
            "jwks_uri": issuer + "/oauth/jwks",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [
                "none",
                "client_secret_basic",
                "client_secret_post",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "none",
                "client_secret_basic",
                "client_secret_post",
            ],
            "scopes_supported": [*scopes, OFFLINE_ACCESS],
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": self.documents is not None,
        }
        if self.settings.dynamic_registration:
            document["registration_endpoint"] = issuer + "/oauth/register"
        return document

    async def register(self, document: Any, client_id: str, secret: str | None) -> dict[str, Any]:
        """RFC 7591: register a client under `client_id` (and `secret` if it needs one)."""
        if not self.settings.dynamic_registration:
            raise OAuthError("access_denied", "Dynamic registration is disabled", 403)
        try:
            metadata = parse_client_metadata(document)
        except ClientMetadataError as exc:
            raise OAuthError(exc.error, exc.description) from None
        now = self.clock()
        public = metadata.token_endpoint_auth_method == NO_CLIENT_AUTH
        record = ClientRecord(
            client_id=client_id,
            redirect_uris=tuple(metadata.redirect_uris),
            created_at=now,
            grant_types=tuple(metadata.grant_types),
            token_endpoint_auth_method=metadata.token_endpoint_auth_method,
            client_name=metadata.client_name,
            secret_hash=None if public else digest(secret or ""),
        )
        await self.store.save_client(record)
        answer: dict[str, Any] = {
            "client_id": client_id,
            "client_id_issued_at": int(now),
            "redirect_uris": list(record.redirect_uris),
            "grant_types": list(record.grant_types),
            "response_types": ["code"],
            "token_endpoint_auth_method": record.token_endpoint_auth_method,
        }
        if metadata.client_name is not None:
            answer["client_name"] = metadata.client_name
        if metadata.scope:
            answer["scope"] = " ".join(metadata.scope)
        if not public:
            answer["client_secret"] = secret
            answer["client_secret_expires_at"] = 0
        return answer

    async def client(self, client_id: str) -> ClientRecord | None:
        """The client `client_id` names, or None (unknown, or its metadata document failed)."""
        try:
            return await self._find_client(client_id)
        except ClientDocumentError:
            return None

    async def _find_client(self, client_id: str) -> ClientRecord | None:
        """A configured client first (a URL may be pre-registered, draft section 7.2); a URL is
        then only ever its metadata document, never a stored registration."""
        configured = self.clients.get(client_id)
        if configured is not None:
            return configured
        if is_client_id_url(client_id):
            return None if self.documents is None else await self.documents.resolve(client_id)
        return await self.store.get_client(client_id)

    # -- the authorization endpoint --------------------------------------------------------------

    async def check_authorization(
        self, query: MultiMapping[str]
    ) -> tuple[ClientRecord, AuthorizationRequest]:
        """Validate an authorization request (RFC 6749 section 4.1.1, PKCE, RFC 8707)."""
        client_id = _single(query, "client_id")
        try:
            client = await self._find_client(client_id) if client_id else None
        except ClientDocumentError as exc:
            raise ErrorPageError(
                f"This application's metadata document cannot be used: {exc.reason}."
            ) from None
        if client is None:
            raise ErrorPageError("This application is not registered with this server.")
        redirect_uri = _single(query, "redirect_uri")
        if redirect_uri is None and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        if redirect_uri is None or not redirect_matches(redirect_uri, client.redirect_uris):
            raise ErrorPageError("The redirect address does not match this application's.")
        state = _single(query, "state")

        def fail(error: str, description: str) -> RedirectError:
            return RedirectError(self.redirect(redirect_uri, state, error=error,
                                               error_description=description), error)  # fmt: skip

        for name in ("response_type", "client_id", "redirect_uri", "state", "scope",
                     "code_challenge", "code_challenge_method", "resource", "prompt",
                     "max_age"):  # fmt: skip
            if len(query.getall(name, ())) > 1:
                raise fail("invalid_request", f"{name} is repeated")
            if len(query.get(name, "")) > MAX_PARAM_CHARS:
                raise fail("invalid_request", f"{name} is too long")
        if query.get("response_type") != "code":
            raise fail("unsupported_response_type", "Only response_type=code is supported")
        try:
            challenge = check_challenge(
                query.get("code_challenge_method"), query.get("code_challenge")
            )
        except PkceError as exc:
            raise fail("invalid_request", f"PKCE S256 is required ({exc.reason})") from None
        resource = query.get("resource")
        if resource is None or resource not in self.settings.resources:
            raise fail("invalid_target", "resource must name one of this server's MCP routes")
        requested = frozenset(query.get("scope", "").split())
        if not requested - {OFFLINE_ACCESS}:
            requested |= frozenset(self.settings.resources[resource])
        if OFFLINE_ACCESS in requested and "refresh_token" not in client.grant_types:
            requested -= {OFFLINE_ACCESS}
        prompt = frozenset(query.get("prompt", "").split())
        if not prompt <= PROMPTS or ("none" in prompt and len(prompt) > 1):
            raise fail("invalid_request", "prompt must be none, or any of login, consent, "
                       "select_account")  # fmt: skip
        max_age = query.get("max_age")
        if max_age is not None and not (max_age.isascii() and max_age.isdigit()):
            raise fail("invalid_request", "max_age must be a number of seconds")
        request = AuthorizationRequest(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            code_challenge=challenge,
            resource=resource,
            scopes=requested,
            state=state,
            prompt=prompt,
            max_age=None if max_age is None else int(max_age),
        )
        return client, request

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
        """Park a checked request for its next step (`stage`) in the browser whose flow cookie
        digest is `browser`: the `state` of the next form, or sent to the upstream provider
        (with our PKCE verifier and nonce for its answer)."""
        txn = LoginTxn(
            request=request,
            expires_at=self.clock() + self.settings.login_lifetime,
            stage=stage,
            browser=browser,
            code_verifier=code_verifier,
            nonce=nonce,
            subject=None if session is None else session.subject,
            claims={} if session is None else session.claims,
            auth_time=None if session is None else session.auth_time,
        )
        return await self.store.begin_login(txn)

    async def _take(self, state: str, stage: str, browser: str) -> LoginTxn | None:
        """The parked request `state` names if it waits for `stage` in this browser (single
        use: taken whatever the answer, so a form sent from elsewhere is spent too)."""
        txn = await self.store.take_login(state, self.clock())
        if txn is None or txn.stage != stage or txn.browser is None:
            return None
        return txn if hmac.compare_digest(txn.browser, browser) else None

    async def take_upstream_login(self, state: str, browser: str) -> LoginTxn | None:
        """The parked request an upstream provider's callback `state` names, if this browser
        started it (login CSRF: nobody can hand a victim the callback of their own sign-in)."""
        return await self._take(state, UPSTREAM_STAGE, browser)

    def redirect(self, redirect_uri: str, state: str | None, **params: str) -> str:
        """The client's redirect URI with an authorization response, always with `iss`."""
        if state is not None:
            params["state"] = state
        return add_query(redirect_uri, with_issuer(params, self.settings.issuer))

    def _error(self, request: AuthorizationRequest, error: str, description: str) -> Redirect:
        return Redirect(self.redirect(request.redirect_uri, request.state, error=error,
                                      error_description=description))  # fmt: skip

    async def describe(self, request: AuthorizationRequest) -> Described:
        """Who asks for what, in the words the sign-in and consent pages use."""
        client = await self.client(request.client_id)
        name = client.client_name if client and client.client_name else request.client_id
        if is_client_id_url(request.client_id):  # a self-asserted name: show whose it is
            host = urlsplit(request.client_id).netloc
            name, origin = f"{name} (from {host})", f"is described by {host}"
        elif request.client_id in self.clients:
            origin = "was registered by this gateway's administrator"
        else:
            origin = "registered itself with this gateway: its name is its own claim"
        return Described(
            client_name=name,
            client_origin=origin,
            redirect_host=urlsplit(request.redirect_uri).netloc,
            resource_name=self.settings.resource_names.get(request.resource, request.resource),
            route=urlsplit(request.resource).path,
        )

    def fresh_sign_in_needed(
        self, request: AuthorizationRequest, session: SignInSession | None
    ) -> bool:
        """No session, or the client asks for a new sign-in (`prompt=login`, or `max_age`
        seconds passed since the last one; OpenID Connect Core section 3.1.2.1)."""
        if session is None or "login" in request.prompt:
            return True
        return request.max_age is not None and self.clock() - session.auth_time > request.max_age

    async def authorize(
        self, request: AuthorizationRequest, session: SignInSession | None, browser: str
    ) -> Redirect | ConsentNeeded:
        """A checked request: consent first (before any sign-in, so no client reaches the
        provider unapproved: MCP security best practices, confused deputy). With a live
        sign-in session the grant rules and earlier consent are known at once: refused scopes
        end here, approved ones go straight back to the client, new ones need consent only."""
        if self.fresh_sign_in_needed(request, session):
            if "none" in request.prompt:
                return self._error(request, "login_required", "The user must sign in")
            return await self._ask_consent(request, request.scopes, browser, None)
        assert session is not None
        approved = await self.store.consented_scopes(
            session.subject, request.client_id, self.clock()
        )
        granted = self._grantable(request, session.subject, session.claims, approved)
        if isinstance(granted, Redirect):
            return granted
        request = granted
        wanted = request.scopes - {OFFLINE_ACCESS}
        new = request.scopes - approved - {OFFLINE_ACCESS}
        if "consent" in request.prompt and not new:
            new = wanted
        if not new:
            return Redirect(await self.issue_code(request, session.subject, session.claims,
                                                  session.auth_time))  # fmt: skip
        if "none" in request.prompt:
            return self._error(request, "consent_required", "The user must approve the request")
        return await self._ask_consent(request, new, browser, session)

    async def _ask_consent(
        self,
        request: AuthorizationRequest,
        scopes: frozenset[str],
        browser: str,
        session: SignInSession | None,
    ) -> ConsentNeeded:
        state = await self.begin(request, stage=CONSENT_STAGE, browser=browser, session=session)
        shown = sorted(scopes - {OFFLINE_ACCESS}) or sorted(scopes)
        descriptions = self.settings.scope_descriptions
        return ConsentNeeded(
            state=state,
            described=await self.describe(request),
            scopes=tuple((scope, descriptions.get(scope, "")) for scope in shown),
            offline=OFFLINE_ACCESS in request.scopes,
            user=None if session is None else session.subject,
        )

    def _grantable(
        self,
        request: AuthorizationRequest,
        subject: str,
        claims: Mapping[str, Any],
        approved: frozenset[str],
    ) -> AuthorizationRequest | Redirect:
        """The request narrowed to what the grant rules give this user, or `access_denied`.

        RFC 6749 section 3.3: the server may issue less than was asked (the token response
        then names what it issued). A request that asks for scopes the user cannot get is
        narrowed when it still gains the client something beyond what the user approved for
        it before (a client that asks for every scope a route lists at its first sign-in);
        it is refused, naming the scopes, when it gains nothing (a step-up the user can never
        get: a narrowed token would only send the client round again)."""
        wanted = request.scopes - {OFFLINE_ACCESS}
        grantable = self.grants.grant(claims, wanted)
        missing = sorted(wanted - grantable)
        if not missing:
            return request
        narrowed = bool(grantable) and not grantable <= approved
        audit.info("grant_refused", client_id=request.client_id, sub=subject[:128],
                   scopes=missing, narrowed=narrowed)  # fmt: skip
        if not narrowed:
            return self._error(
                request, "access_denied", f"You may not be granted: {' '.join(missing)}"
            )
        return replace(request, scopes=grantable | (request.scopes & {OFFLINE_ACCESS}))

    async def consent(
        self, state: str, approve: bool, browser: str, session: SignInSession | None
    ) -> Redirect | SignInNeeded:
        """The user's decision on the consent form `state`, sent from the browser it was shown
        in: denied goes back to the client; approved goes on to sign-in, or (with the sign-in
        session the form was shown for) straight to a code."""
        txn = await self._take(state, CONSENT_STAGE, browser)
        if txn is None:
            raise ErrorPageError("This approval has expired or belongs to another browser. "
                                 "Start again from your application.")  # fmt: skip
        request = txn.request
        if not approve:
            audit.info("consent_denied", client_id=request.client_id)
            return self._error(request, "access_denied", "The user did not approve the request")
        audit.info("consent_given", client_id=request.client_id, sub=txn.subject,
                   scopes=sorted(request.scopes))  # fmt: skip
        if txn.subject is None or session is None or session.subject != txn.subject:
            return SignInNeeded(request)
        await self._record_consent(request, txn.subject)
        return Redirect(await self.issue_code(request, txn.subject, session.claims,
                                              session.auth_time))  # fmt: skip

    async def _record_consent(self, request: AuthorizationRequest, subject: str) -> None:
        await self.store.record_consent(
            subject,
            request.client_id,
            request.scopes - {OFFLINE_ACCESS},
            self.clock() + CONSENT_LIFETIME,
        )

    async def sign_in_local(
        self, state: str, username: str, password: str, browser: str
    ) -> SignInOutcome:
        """Check a local user's password for the sign-in form `state` (single use: a failed
        attempt gets a fresh state, so a form cannot be replayed)."""
        if self.users is None:  # users sign in at the upstream provider
            raise ErrorPageError("There is no sign-in form here.")
        txn = await self._take(state, SIGN_IN_STAGE, browser)
        if txn is None:
            raise ErrorPageError("This sign-in has expired or belongs to another browser. "
                                 "Start again from your application.")  # fmt: skip
        user = self.users.authenticate(username, password)
        if user is None:
            fresh = await self.begin(txn.request, stage=SIGN_IN_STAGE, browser=browser)
            return SignInFailed(fresh, await self.describe(txn.request))
        return await self.signed_in(txn.request, user.username, dict(user.claims))

    async def signed_in(
        self, request: AuthorizationRequest, subject: str, claims: Mapping[str, Any]
    ) -> Redirect:
        """The user signed in after approving: a sign-in session starts (its cookie goes with
        the answer); scopes no grant rule gives them are refused, else the client gets a code."""
        now = self.clock()
        cookie = None
        if self.settings.session_idle > 0:
            session = SignInSession(
                subject=subject,
                auth_time=now,
                expires_at=now + self.settings.session_lifetime,
                last_used=now,
                claims=claims,
            )
            cookie = await self.store.start_session(session, self.settings.session_idle)
        approved = await self.store.consented_scopes(subject, request.client_id, now)
        granted = self._grantable(request, subject, claims, approved)
        if isinstance(granted, Redirect):
            return Redirect(granted.location, session=cookie)
        request = granted
        await self._record_consent(request, subject)
        return Redirect(await self.issue_code(request, subject, claims, now), session=cookie)

    async def session(self, cookie: str | None) -> SignInSession | None:
        """The live sign-in session a cookie value names (marked used), or None."""
        if not cookie or self.settings.session_idle <= 0:
            return None
        return await self.store.find_session(cookie, self.clock(), self.settings.session_idle)

    async def sign_out(self, cookie: str | None) -> bool:
        """End the session `cookie` names; whether there was a live one."""
        if not cookie:
            return False
        live = await self.session(cookie)
        await self.store.end_session(cookie)
        if live is not None:
            audit.info("signed_out", sub=live.subject[:128])
        return live is not None

    async def issue_code(
        self,
        request: AuthorizationRequest,
        subject: str,
        claims: Mapping[str, Any],
        auth_time: float,
    ) -> str:
        """A code for the signed-in `subject`; the redirect Location that carries it."""
        code = await self.store.issue_code(
            CodeGrant(
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                code_challenge=request.code_challenge,
                resource=request.resource,
                scopes=request.scopes,
                subject=subject,
                auth_time=auth_time,
                expires_at=self.clock() + self.settings.code_lifetime,
                claims=claims,
            )
        )
        return self.redirect(request.redirect_uri, request.state, code=code)

    # -- the token endpoint ---------------------------------------------------------------------

    async def authenticate_client(
        self, form: MultiMapping[str], basic: tuple[str, str] | None
    ) -> ClientRecord:
        """RFC 6749 section 2.3: the client making a token or revocation request."""
        client_id = basic[0] if basic else _single(form, "client_id")
        if not client_id:
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        client = await self.client(client_id)
        if client is None:
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        method = client.token_endpoint_auth_method
        secret = basic[1] if basic else _single(form, "client_secret")
        if method == NO_CLIENT_AUTH:
            if secret is not None:
                raise OAuthError("invalid_client", "Client authentication failed", 401)
            return client
        expected = "client_secret_basic" if basic else "client_secret_post"
        if method != expected or secret is None or not client.secret_matches(secret):
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        return client

    async def token(self, form: MultiMapping[str], basic: tuple[str, str] | None) -> dict[str, Any]:
        for name in form:
            if len(form.getall(name)) > 1:
                raise OAuthError("invalid_request", f"{name} is repeated")
        client = await self.authenticate_client(form, basic)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return await self._redeem_code(client, form)
        if grant_type == "refresh_token" and "refresh_token" in client.grant_types:
            return await self._refresh(client, form)
        raise OAuthError("unsupported_grant_type", "Unsupported grant_type")

    async def _redeem_code(self, client: ClientRecord, form: MultiMapping[str]) -> dict[str, Any]:
        now = self.clock()
        redemption = await self.store.consume_code(form.get("code", ""), now)
        invalid = OAuthError("invalid_grant", "The authorization code is invalid or was used")
        if redemption is None or isinstance(redemption, CodeReplay):
            if redemption is not None:
                audit.warning("token_replay_detected", kind="authorization_code",
                              client_id=client.client_id)  # fmt: skip
                self.on_revoked()
            raise invalid  # a replay has revoked everything the code issued
        grant = redemption.grant
        verifier = form.get("code_verifier", "")
        resource = form.get("resource", grant.resource)
        if (
            grant.client_id != client.client_id
            or form.get("redirect_uri") != grant.redirect_uri
            or resource != grant.resource
            or not verify(verifier, grant.code_challenge)
        ):
            await self.store.revoke_family(redemption.family_id)
            self.on_revoked()
            raise invalid
        family = redemption.family(now + self.settings.refresh_token_lifetime)
        answer = await self._access_token(
            family.family_id,
            client,
            family.subject,
            family.resource,
            grant.scopes,
            now,
            grant.auth_time,
            claims=family.claims,
        )
        if OFFLINE_ACCESS in grant.scopes and "refresh_token" in client.grant_types:
            refresh = await self.store.start_family(family)
            if refresh is not None:  # None: a concurrent replay revoked the family (and the
                answer["refresh_token"] = refresh  # access token above): nothing more to give
        audit.info("token_issued", client_id=client.client_id, sub=grant.subject[:128],
                   scopes=sorted(grant.scopes), refresh="refresh_token" in answer)  # fmt: skip
        return answer

    async def _refresh(self, client: ClientRecord, form: MultiMapping[str]) -> dict[str, Any]:
        now = self.clock()
        requested = form.get("scope")
        scopes = frozenset(requested.split()) if requested is not None else None
        outcome = await self.store.rotate(
            form.get("refresh_token", ""), now, client_id=client.client_id, scopes=scopes
        )
        if isinstance(outcome, ScopeNotGranted):
            raise OAuthError("invalid_scope", "A refresh cannot widen the granted scopes")
        if not isinstance(outcome, Rotated):  # unknown, expired, or Reused (family revoked)
            if isinstance(outcome, Reused):
                audit.warning("token_replay_detected", kind="refresh_token",
                              client_id=client.client_id)  # fmt: skip
            self.on_revoked()
            raise OAuthError("invalid_grant", "The refresh token is invalid or was used")
        grant = outcome.grant
        answer = await self._access_token(
            grant.family_id,
            client,
            grant.subject,
            grant.resource,
            outcome.scopes,
            now,
            grant.auth_time,
            claims=grant.claims,
        )
        answer["refresh_token"] = outcome.refresh_token
        audit.info("token_refreshed", client_id=client.client_id, sub=grant.subject[:128],
                   scopes=sorted(outcome.scopes))  # fmt: skip
        return answer

    async def _access_token(
        self,
        family_id: str,
        client: ClientRecord,
        subject: str,
        resource: str,
        scopes: frozenset[str],
        now: float,
        auth_time: float,
        *,
        claims: Mapping[str, Any],
    ) -> dict[str, Any]:
        lifetime = self.settings.access_token_lifetime
        resource_scopes = scopes - {OFFLINE_ACCESS}
        minted = self.keys.mint_access_token(
            issuer=self.settings.issuer,
            subject=subject,
            client_id=client.client_id,
            audience=resource,
            scopes=resource_scopes,
            lifetime=lifetime,
            now=now,
            auth_time=auth_time,
            extra_claims=self._attainable_claim(resource, claims),
        )
        if not await self.store.record_jti(family_id, minted.jti, minted.expires_at):
            raise OAuthError("invalid_grant", "The grant has been revoked")
        answer: dict[str, Any] = {
            "access_token": minted.token,
            "token_type": "Bearer",
            "expires_in": lifetime,
        }
        if resource_scopes:
            answer["scope"] = " ".join(sorted(scopes))
        return answer

    def _attainable_claim(self, resource: str, claims: Mapping[str, Any]) -> dict[str, str]:
        """The user's ceiling on `resource` from the grant rules now, for the route's lists
        (`ATTAINABLE_SCOPE_CLAIM`); only scopes the route can require, to say no more."""
        ceiling = self.grants.ceiling(claims)
        relevant = self.resource_scopes(resource)
        if relevant is not None:
            ceiling &= relevant
        return {ATTAINABLE_SCOPE_CLAIM: " ".join(sorted(ceiling))}

    async def revoke(self, form: MultiMapping[str], basic: tuple[str, str] | None) -> None:
        """RFC 7009: a refresh token revokes its family; an access token the gateway minted for
        this client revokes its `jti`, which every route checks. Anything else changes nothing
        (the endpoint answers 200 either way)."""
        client = await self.authenticate_client(form, basic)
        token = form.get("token")
        if not token:
            return
        if looks_like_jwt(token):
            minted = self._own_access_token(token)
            if minted is not None and minted.get("client_id") == client.client_id:
                await self.store.revoke_jti(str(minted["jti"]), float(minted["exp"]))
                audit.info("token_revoked", kind="access_token", client_id=client.client_id)
                self.on_revoked()
            return
        if await self.store.revoke(token, client_id=client.client_id):
            audit.info("token_revoked", kind="refresh_token", client_id=client.client_id)
            self.on_revoked()

    def _own_access_token(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token this gateway signed (expired or not), else None."""
        try:
            jwt = parse_jwt(token)
            verify_with_any(jwt, [key.key for key in self.keys.all() if key.kid == jwt.kid])
        except TokenError:
            return None
        claims = jwt.claims
        if claims.get("iss") != self.settings.issuer:
            return None
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("exp"), int):
            return None
        return dict(claims)


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, ())
    return values[0] if len(values) == 1 else None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """RFC 6749 section 2.3.1 client_secret_basic credentials (form-urlencoded, then Basic)."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("invalid_client", "Client authentication failed", 401) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "Client authentication failed", 401)
    return unquote_plus(client_id), unquote_plus(secret)
