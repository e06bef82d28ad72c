"""Connecting a user's account at a route's third-party provider: the authorization-code flow
the gateway runs as that provider's OAuth client (RFC 6749 section 4.1, PKCE S256 per RFC 7636,
`iss` checked per RFC 9207 section 2.4), free of any web framework (`gateway.web.connect` is
its adapter).

`begin` turns a checked connect ticket into the provider's authorization URL and keeps a
single-use `state` (sealed in the store with the PKCE verifier, the ticket's user and the
digest of the browser's binding cookie). `finish` takes the provider's answer: the `iss` check
comes first, before the state is read or anything is sent to the provider; then the state
(only in the browser that began, and taken, so it works once); then the code is redeemed and
the grant stored for the ticket's user.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Literal

from multidict import MultiMapping

from gateway.oauth.issuer_check import IssuerMismatchError
from gateway.oauth.records import digest
from gateway.oauth.upstream import pkce_pair
from gateway.observability.logging import get_logger
from gateway.store.kv import KeyValueStore
from gateway.upstream_auth.keeper import GrantKeeper
from gateway.upstream_auth.provider import GrantRevokedError, ThirdPartyProvider
from gateway.upstream_auth.sealing import GrantSealer, SealError
from gateway.upstream_auth.tickets import ConnectTicket

audit = get_logger("gateway.audit")

CONNECT_PREFIX = "/oauth/connect"
"""Where the connect pages live (under the reserved `/oauth`)."""
STATE_LIFETIME = 600
"""Seconds a user has at the provider between the start page and the callback."""
MAX_QUERY_VALUE = 4096
"""A `state` or `code` longer than this is refused unread."""
STATE_NAMESPACE = "upstream_connect"
STARTS_NAMESPACE = "upstream_connect_starts"
STARTS_PER_MINUTE = 10
"""Connect flows one user may begin per route and minute: each parks a state for
`STATE_LIFETIME`, so a ticket's holder looping on the page cannot fill the store."""
"""Store keys `upstream_connect:<route>:<sha256 of state>` hold the flows under way."""
_STATE_PURPOSE = b"mcp-gateway connect-state v1\x00"

ConnectProblem = Literal[
    "iss_missing",
    "iss_mismatch",
    "iss_repeated",
    "state_unknown",
    "provider_error",
    "code_missing",
    "code_refused",
]


class TooManyStartsError(Exception):
    """The user began `STARTS_PER_MINUTE` connect flows at this route in the last minute."""


class ConnectRefusedError(Exception):
    """The callback cannot complete; `reason` is fixed text (nothing from the provider)."""

    def __init__(self, reason: ConnectProblem) -> None:
        super().__init__(reason)
        self.reason: ConnectProblem = reason


@dataclass(frozen=True, slots=True)
class Connected:
    """A completed connection: whose, at which route."""

    upstream: str
    user: str
    subject: str


def start_path(upstream: str) -> str:
    return f"{CONNECT_PREFIX}/{upstream}"


def callback_path(upstream: str) -> str:
    return f"{CONNECT_PREFIX}/{upstream}/callback"


def disconnect_path(upstream: str) -> str:
    return f"{CONNECT_PREFIX}/{upstream}/disconnect"


class ConnectFlow:
    """The connect flow of one `user_oauth` route."""

    def __init__(
        self,
        upstream: str,
        provider: ThirdPartyProvider,
        keeper: GrantKeeper,
        sealer: GrantSealer,
        store: KeyValueStore,
    ) -> None:
        self.upstream = upstream
        self.provider = provider
        self.keeper = keeper
        self._sealer = sealer
        self._store = store
        self._associated = _STATE_PURPOSE + upstream.encode()

    async def begin(self, ticket: ConnectTicket, browser: str) -> str:
        """The provider's authorization URL for `ticket`'s user, in the browser whose binding
        cookie is `browser` (raises `ProviderUnavailableError` when discovery fails, and
        `TooManyStartsError` past `STARTS_PER_MINUTE`)."""
        starts = f"{STARTS_NAMESPACE}:{self.upstream}:{ticket.user}"
        if await self._store.increment(starts, 60.0) > STARTS_PER_MINUTE:
            raise TooManyStartsError
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(32)
        location = await self.provider.authorization_url(state=state, code_challenge=challenge)
        record = {"v": verifier, "u": ticket.user, "s": ticket.subject, "b": digest(browser)}
        sealed = self._sealer.seal(json.dumps(record).encode(), self._associated)
        await self._store.set(self._state_key(state), sealed, STATE_LIFETIME)
        audit.info("upstream_connect_started", upstream=self.upstream, sub=ticket.subject[:128])
        return location

    async def finish(self, query: MultiMapping[str], browser: str) -> Connected:
        """Complete the flow from the provider's callback `query`, in the browser whose
        binding cookie is `browser`; `ConnectRefusedError`, or `ProviderUnavailableError`."""
        await self.provider.metadata()  # the issuer to check against (read once)
        try:
            self.provider.check_issuer(query)  # RFC 9207 section 2.4: before anything else
        except IssuerMismatchError as error:
            raise ConnectRefusedError(error.reason) from None
        states = query.getall("state", [])
        if len(states) != 1 or not states[0] or len(states[0]) > MAX_QUERY_VALUE:
            raise ConnectRefusedError("state_unknown")
        record = await self._take_state(states[0], browser)
        codes = query.getall("code", [])
        if "error" in query:
            raise ConnectRefusedError("provider_error")
        if len(codes) != 1 or not codes[0] or len(codes[0]) > MAX_QUERY_VALUE:
            raise ConnectRefusedError("code_missing")
        try:
            grant = await self.provider.redeem(codes[0], record["v"])
        except GrantRevokedError:
            raise ConnectRefusedError("code_refused") from None
        await self.keeper.connect(record["u"], grant)
        return Connected(self.upstream, record["u"], record["s"])

    async def _take_state(self, state: str, browser: str) -> dict[str, str]:
        """The state's record, removed (`take`: of concurrent callbacks one wins); only for
        the browser that began, and read before it is taken, so a callback URL replayed in
        another browser does not use up the flow of the one that began it."""
        key = self._state_key(state)
        sealed = await self._store.get(key)
        if sealed is None:
            raise ConnectRefusedError("state_unknown")
        try:
            record = json.loads(self._sealer.open(sealed, self._associated))
        except (SealError, ValueError):
            raise ConnectRefusedError("state_unknown") from None
        if not isinstance(record, dict) or not all(
            isinstance(record.get(name), str) for name in ("v", "u", "s", "b")
        ):
            raise ConnectRefusedError("state_unknown")
        if not browser or not hmac.compare_digest(record["b"], digest(browser)):
            raise ConnectRefusedError("state_unknown")  # begun in another browser
        if await self._store.take(key) != sealed:
            raise ConnectRefusedError("state_unknown")  # a concurrent callback took it
        return {name: record[name] for name in ("v", "u", "s")}

    def _state_key(self, state: str) -> str:
        return f"{STATE_NAMESPACE}:{self.upstream}:{digest(state)}"
