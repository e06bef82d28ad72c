"""`kind: exchange`: the upstream's token from an RFC 8693 token exchange, per caller.

The gateway, an OAuth client of the configured authorization server, POSTs the caller's
validated token as the `subject_token` to the token endpoint (section 2.1) and asks for an
access token for the upstream (`audience` and/or `resource`, the requested `scope`). The
answer is parsed strictly (section 2.2.1); a refusal (section 2.2.2) is a 403 the gateway words
itself, anything else that yields no token is a 503: nothing is forwarded without a credential.

One exchanged token serves the same caller (issuer, subject, client, requested scopes) until
shortly before it expires, and never past the expiry of the caller's own token, which it was
exchanged from. Concurrent first requests for the same caller share one exchange
(single-flight); a failure is not kept, so the next request tries again.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.auth.authenticator import HttpSessionHolder
from gateway.auth.fetch import read_bounded
from gateway.config.upstream_auth import ExchangeAuth
from gateway.errors import AuthUnavailableError, CredentialRefusedError, CredentialUnavailableError
from gateway.observability.logging import get_logger
from gateway.upstream_auth.base import Caller, header_value
from gateway.upstream_auth.client_auth import ClientAuthentication

log = get_logger("gateway.upstream_auth")

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
CACHE_SIZE = 10_000
"""Callers whose exchanged token is kept (least recently used beyond it are dropped)."""
DEFAULT_LIFETIME = 60
"""Seconds an exchanged token that came without `expires_in` is reused (RFC 8693 leaves its
lifetime unsaid then): short, so a token the server meant to live briefly is soon replaced."""
RENEW_MARGIN = 30
"""At most this many seconds (and a fifth of its lifetime) before an exchanged token expires,
the next request exchanges again, so a token never expires on its way upstream."""
MAX_ANSWER_BYTES = 64 * 1024
MAX_TOKEN_CHARS = 16 * 1024
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 section 2.1
_TOKEN_TYPES = frozenset({"bearer", "n_a"})
"""`token_type` values taken, compared lowercased: Bearer (RFC 6750), or `N_A` (RFC 8693
section 2.2.1: the issued token is not an access token)."""
_REFUSALS: dict[str, str] = {
    "invalid_grant": "The upstream's authorization server did not accept the caller's token "
    "for an exchange",
    "access_denied": "The upstream's authorization server denied this caller a token for "
    "the upstream",
    "invalid_target": "The upstream's authorization server will not issue this caller a "
    "token for the upstream",
    "invalid_scope": "The upstream's authorization server would not grant the scopes "
    "requested for this caller",
    "unauthorized_client": "The gateway may not exchange this caller's token at the "
    "upstream's authorization server",
    "invalid_request": "The upstream's authorization server refused the exchange request "
    "for this caller",
}
"""The OAuth errors (RFC 6749 section 5.2, RFC 8693 section 2.2.2) that refuse this caller,
with the message the gateway answers them with (never the server's `error_description`)."""
_REPORTED_ERRORS = frozenset(_REFUSALS) | {
    "invalid_client",
    "unsupported_grant_type",
    "server_error",
    "temporarily_unavailable",
}
"""Error codes logged as such; any other value from the server is logged as `other`."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A token exchange answered with a usable token (RFC 8693 section 2.2.1)."""

    token: str
    issued_token_type: str
    expires_in: int | None


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused this caller (a 400 with one of the refusing OAuth errors)."""

    error: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No token, through no fault of the caller: down, slow, broken, or the gateway's own
    client configuration rejected (`client_rejected`: `invalid_client`)."""

    reason: str
    status: int | None = None
    client_rejected: bool = False


Answer = Issued | Refused | Unavailable


def exchange_form(
    subject_token: str, *, audience: str | None, resource: str | None, scopes: frozenset[str]
) -> dict[str, str]:
    """The token exchange request's parameters (RFC 8693 section 2.1), before client
    authentication; `scope` (sorted, space-separated) is left out when no scope is asked."""
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
    }
    if audience is not None:
        form["audience"] = audience
    if resource is not None:
        form["resource"] = resource
    if scopes:
        form["scope"] = " ".join(sorted(scopes))
    return form


def parse_answer(status: int, body: bytes | None) -> Answer:
    """What a token endpoint's answer means, strictly: a success (200) needs `access_token`
    (RFC 6750 token characters), `issued_token_type`, `token_type` Bearer (any case) or `N_A`,
    and `expires_in`, when present, a positive integer (RFC 8693 section 2.2.1). A 401, or a 400
    with `invalid_client`, rejects the gateway's own client authentication (RFC 6749 section
    5.2); any other 400 needs an `error` string, and refuses the caller only with one of the
    refusing errors."""
    if body is None:
        return Unavailable("answer too large", status)
    document = _json_object(body)
    if status == 200:
        if document is None:
            return Unavailable("answer not a JSON object", status)
        return _issued(document) or Unavailable("malformed answer", status)
    error = document.get("error") if document is not None else None
    if status == 401 or (status == 400 and error == "invalid_client"):
        return Unavailable("invalid_client", status, client_rejected=True)
    if status != 400 or not isinstance(error, str):
        return Unavailable("unexpected status", status)
    if error in _REFUSALS:
        return Refused(error)
    return Unavailable(error if error in _REPORTED_ERRORS else "other", status)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _issued(document: dict[str, Any]) -> Issued | None:
    token = document.get("access_token")
    issued_type = document.get("issued_token_type")
    token_type = document.get("token_type")
    expires_in = document.get("expires_in")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    if not _B64TOKEN.fullmatch(token):
        return None
    if not isinstance(issued_type, str) or not issued_type:
        return None
    if not isinstance(token_type, str) or token_type.lower() not in _TOKEN_TYPES:
        return None
    if expires_in is not None and (
        isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0
    ):
        return None
    return Issued(token, issued_type, expires_in)


def reuse_until(issued: Issued, *, now: float, caller_expires_at: float) -> float:
    """Until when an exchanged token is reused: shortly before it expires (or
    `DEFAULT_LIFETIME` after `now` without `expires_in`), never past the caller's token."""
    if issued.expires_in is None:
        own = now + DEFAULT_LIFETIME
    else:
        own = now + issued.expires_in - min(RENEW_MARGIN, issued.expires_in / 5)
    return min(own, caller_expires_at)


_Key = tuple[str, str, str, frozenset[str]]


class ExchangedCredential:
    """Exchanges, caches and shares the tokens of one route."""

    kind = "exchange"

    def __init__(
        self,
        settings: ExchangeAuth,
        *,
        upstream: str,
        http: HttpSessionHolder,
        client: ClientAuthentication,
        route_scopes: Callable[[], frozenset[str]],
        count: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.header = settings.header
        self._settings = settings
        self._upstream = upstream
        self._http = http
        self._client = client
        self._route_scopes = route_scopes
        self._count = count
        self._clock = clock
        self._cache: OrderedDict[_Key, tuple[str, float]] = OrderedDict()
        self._flights: dict[_Key, asyncio.Task[Answer]] = {}

    async def value(self, caller: Caller) -> str:
        principal = caller.principal
        if principal.subject is None or principal.client_id is None or not caller.token:
            self._count("refused")
            raise CredentialRefusedError(
                "caller's token has no sub or client_id",
                message="The caller's token names no subject or client: it cannot be "
                "exchanged for an upstream token",
            )
        if self._settings.scopes is not None:
            scopes = frozenset(self._settings.scopes)
        else:
            scopes = principal.scopes & self._route_scopes()
        key = (principal.issuer, principal.subject, principal.client_id, scopes)
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached[1]:
            self._cache.move_to_end(key)
            self._count("cached")
            return cached[0]
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = asyncio.create_task(self._exchange(key, caller.token, principal.expires_at))
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        else:
            log.debug("upstream_credential_exchange_joined", upstream=self._upstream)
        # Shielded: a caller that goes away does not cancel the exchange the others await.
        return self._settle(await asyncio.shield(flight), joined=joined)

    async def close(self) -> None:
        for flight in list(self._flights.values()):
            flight.cancel()
        self._flights.clear()
        self._cache.clear()

    def _settle(self, answer: Answer, *, joined: bool) -> str:
        """The header value of an exchange's answer for one request, or its error (a fresh
        one per request: requests that shared an exchange do not share an exception)."""
        match answer:
            case Issued():
                self._count("cached" if joined else "issued")
                return header_value(self.header, answer.token)
            case Refused():
                self._count("refused")
                raise CredentialRefusedError(
                    f"token exchange refused: {answer.error}", message=_REFUSALS[answer.error]
                )
            case Unavailable():
                self._count("unavailable")
                raise CredentialUnavailableError(f"token exchange failed: {answer.reason}")

    def _landed(self, key: _Key, flight: asyncio.Task[Answer]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: the waiters, if any, have it already

    async def _exchange(self, key: _Key, subject_token: str, caller_expires_at: float) -> Answer:
        """One exchange, its outcome logged once and, when it gave a token, kept for reuse."""
        answer = await self._request(subject_token, key[3])
        match answer:
            case Issued():
                now = self._clock()
                until = reuse_until(answer, now=now, caller_expires_at=caller_expires_at)
                if until > now:
                    self._cache[key] = (header_value(self.header, answer.token), until)
                    self._cache.move_to_end(key)
                    if len(self._cache) > CACHE_SIZE:
                        self._cache.popitem(last=False)
                log.info(
                    "upstream_credential_exchanged",
                    upstream=self._upstream,
                    issued_token_type=answer.issued_token_type,
                    expires_in=answer.expires_in,
                    reused_for=max(0, int(until - now)),
                )
            case Refused():
                log.info(
                    "upstream_credential_exchange_refused",
                    upstream=self._upstream,
                    error=answer.error,
                )
            case Unavailable(client_rejected=True):
                log.warning(
                    "upstream_credential_client_rejected",
                    upstream=self._upstream,
                    token_endpoint=self._settings.token_endpoint,
                    client_id=self._client.client_id,
                    client_auth=self._client.method,
                    status=answer.status,
                )
            case Unavailable():
                log.warning(
                    "upstream_credential_exchange_failed",
                    upstream=self._upstream,
                    token_endpoint=self._settings.token_endpoint,
                    reason=answer.reason,
                    status=answer.status,
                )
        return answer

    async def _request(self, subject_token: str, scopes: frozenset[str]) -> Answer:
        """POST the exchange to the token endpoint: bounded, no redirects, within the timeout."""
        settings = self._settings
        endpoint = settings.token_endpoint
        form = exchange_form(
            subject_token, audience=settings.audience, resource=settings.resource, scopes=scopes
        )
        client = self._client.credentials(endpoint)
        headers = {"Accept": "application/json"}
        if client.authorization is not None:
            headers["Authorization"] = client.authorization
        try:
            session = self._http.get()
            async with (
                asyncio.timeout(settings.timeout),
                session.post(
                    endpoint, data=form | client.form, headers=headers, allow_redirects=False
                ) as response,
            ):
                body = await read_bounded(
                    response.content, MAX_ANSWER_BYTES, declared=response.content_length
                )
                status = response.status
        except AuthUnavailableError:
            return Unavailable("outbound HTTP not running")
        except TimeoutError:
            return Unavailable("timeout")
        except aiohttp.ClientError as exc:
            return Unavailable(type(exc).__name__)
        return parse_answer(status, body)
