"""Connect tickets: sealed for one route, with an expiry; anything else is refused with a fixed
reason."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from gateway.auth.principal import Principal
from gateway.upstream_auth.grants import user_key
from gateway.upstream_auth.sealing import GrantSealer
from gateway.upstream_auth.tickets import MAX_TICKET_CHARS, TicketError, Tickets

ALICE = Principal("https://as.example", "alice", "client-1", frozenset(), 0.0)


def _key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


KEY, OTHER_KEY = _key(), _key()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _tickets(keys: list[str], upstream: str = "files", clock: Clock | None = None) -> Tickets:
    return Tickets(GrantSealer.from_keys(keys), upstream, lifetime=600, clock=clock or Clock())


def _sealed(body: object, upstream: str = "files") -> str:
    """`body` sealed as a ticket of `upstream` would be, to test what a ticket may hold."""
    sealer = GrantSealer.from_keys([KEY])
    sealed = sealer.seal(
        json.dumps(body).encode(), b"mcp-gateway connect-ticket v1\x00" + upstream.encode()
    )
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def _altered(text: str) -> str:
    """`text` with one character in the middle changed."""
    middle = len(text) // 2
    return text[:middle] + ("B" if text[middle] != "B" else "C") + text[middle + 1 :]


def test_a_ticket_names_the_route_the_user_and_its_expiry() -> None:
    clock = Clock()
    tickets = _tickets([KEY], clock=clock)
    user = user_key(ALICE)
    assert user is not None
    text = tickets.issue(ALICE, user)
    ticket = tickets.check(text)
    assert (ticket.upstream, ticket.user, ticket.issuer, ticket.subject) == (
        "files",
        user,
        ALICE.issuer,
        "alice",
    )
    assert ticket.expires_at == clock.now + 600
    assert "alice" not in text  # opaque: the subject does not show in a URL
    assert tickets.issue(ALICE, user) != text  # a nonce each


def test_a_ticket_sealed_with_an_older_key_still_opens_after_rotation() -> None:
    text = _tickets([OTHER_KEY]).issue(ALICE, "u1")
    assert _tickets([KEY, OTHER_KEY]).check(text).user == "u1"


def test_an_expired_ticket_is_refused() -> None:
    clock = Clock()
    tickets = _tickets([KEY], clock=clock)
    text = tickets.issue(ALICE, "u1")
    clock.now += 600
    with pytest.raises(TicketError) as raised:
        tickets.check(text)
    assert raised.value.reason == "expired"


@pytest.mark.parametrize(
    ("describe", "text", "reason"),
    [
        ("another route's", _tickets([KEY], upstream="mail").issue(ALICE, "u1"), "forged"),
        ("another key's", _tickets([OTHER_KEY]).issue(ALICE, "u1"), "forged"),
        ("altered", _altered(_tickets([KEY]).issue(ALICE, "u1")), "forged"),
        ("empty", "", "malformed"),
        ("too long", "A" * (MAX_TICKET_CHARS + 1), "malformed"),
        ("not base64url", "AAAA+/==", "malformed"),
        ("not an object", _sealed(["u1"]), "malformed"),
        ("without a user", _sealed({"u": "", "i": "x", "s": "a", "e": 2e6, "n": "n"}), "malformed"),
        (
            "expiry not a number",
            _sealed({"u": "u", "i": "x", "s": "a", "e": True, "n": "n"}),
            "malformed",
        ),
    ],
)
def test_tickets_that_are_not_this_routes_are_refused(
    describe: str, text: str, reason: str
) -> None:
    with pytest.raises(TicketError) as raised:
        _tickets([KEY]).check(text)
    assert raised.value.reason == reason, describe
