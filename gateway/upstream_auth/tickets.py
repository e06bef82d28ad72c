"""Connect tickets: what the URL of a `user_oauth` elicitation carries to the gateway's connect
page, naming the route, the user who got the elicitation and an expiry.

A ticket is sealed with the route's `GrantSealer` (AES-GCM) under associated data of its own
(`connect-ticket` and the route's name), so it is integrity-protected, opaque (the user's
subject does not show in a URL or an access log) and cannot be replayed at another route or
passed off as a stored grant. Tickets are short-lived; one may be opened several times within
its lifetime (a user may reload the page): what makes the flow single-use is the `state` the
page creates. Whoever holds a ticket URL may start the flow for its user, so the page binds
the browser too (`gateway.web.connect`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.auth.principal import Principal
from gateway.upstream_auth.sealing import GrantSealer, SealError

TICKET_LIFETIME = 600
"""Seconds a connect ticket is valid."""
MAX_TICKET_CHARS = 2048
"""A longer `ticket` parameter is refused before it is decoded."""
_PURPOSE = b"mcp-gateway connect-ticket v1\x00"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

TicketProblem = Literal["malformed", "forged", "expired"]


class TicketError(Exception):
    """The ticket cannot be used; `reason` is fixed text for logs, nothing from the ticket."""

    def __init__(self, reason: TicketProblem) -> None:
        super().__init__(reason)
        self.reason: TicketProblem = reason


@dataclass(frozen=True, slots=True)
class ConnectTicket:
    """Who may connect which route's account, until when."""

    upstream: str
    user: str
    """The grant's key (`grants.user_key` of the principal)."""
    issuer: str
    subject: str
    expires_at: float
    nonce: str


class Tickets:
    """Issues and checks the connect tickets of one route."""

    def __init__(
        self,
        sealer: GrantSealer,
        upstream: str,
        *,
        lifetime: float = TICKET_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sealer = sealer
        self._upstream = upstream
        self._associated = _PURPOSE + upstream.encode()
        self._lifetime = lifetime
        self._clock = clock

    def issue(self, principal: Principal, user: str) -> str:
        """A ticket (URL-safe text) for `principal`, whose grant key is `user`."""
        body = {
            "u": user,
            "i": principal.issuer,
            "s": principal.subject or "",
            "e": self._clock() + self._lifetime,
            "n": secrets.token_urlsafe(12),
        }
        plain = json.dumps(body, separators=(",", ":")).encode()
        sealed = self._sealer.seal(plain, self._associated)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def check(self, text: str) -> ConnectTicket:
        """The ticket `text` stands for; `TicketError` if it is malformed, was not sealed for
        this route with one of its keys, or has expired."""
        if len(text) > MAX_TICKET_CHARS or not _BASE64URL.fullmatch(text):
            raise TicketError("malformed")
        try:
            sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise TicketError("malformed") from None
        try:
            body = json.loads(self._sealer.open(sealed, self._associated))
        except SealError:
            raise TicketError("forged") from None
        except ValueError:
            raise TicketError("malformed") from None
        ticket = _parsed(body, self._upstream)
        if ticket.expires_at <= self._clock():
            raise TicketError("expired")
        return ticket


def _parsed(body: object, upstream: str) -> ConnectTicket:
    if not isinstance(body, dict):
        raise TicketError("malformed")
    user, issuer, subject = body.get("u"), body.get("i"), body.get("s")
    expires_at, nonce = body.get("e"), body.get("n")
    if not (
        isinstance(user, str)
        and isinstance(issuer, str)
        and isinstance(subject, str)
        and isinstance(nonce, str)
        and isinstance(expires_at, int | float)
        and not isinstance(expires_at, bool)
        and user
    ):
        raise TicketError("malformed")
    return ConnectTicket(upstream, user, issuer, subject, float(expires_at), nonce)
