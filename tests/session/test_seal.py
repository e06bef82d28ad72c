"""Sealed session ids: only this gateway can mint them, and each opens only where it was minted."""

from __future__ import annotations

import base64

import pytest

from gateway.session.seal import (
    ANONYMOUS,
    Owner,
    SessionClaims,
    SessionSealer,
    new_key,
)


def raw(key: str) -> bytes:
    return base64.urlsafe_b64decode(key + "=")


OLD, NEW = raw(new_key()), raw(new_key())
CLAIMS = SessionClaims("upstream-1", Owner("https://idp", "alice", "client-1"), 1_800_000_000)


def flip(session_id: str, index: int) -> str:
    """The id with one character changed to another valid base64url character."""
    replacement = "B" if session_id[index] != "B" else "C"
    return session_id[:index] + replacement + session_id[index + 1 :]


def test_a_sealed_id_opens_to_its_claims() -> None:
    sealer = SessionSealer([OLD])
    assert sealer.open("/files/mcp", sealer.seal("/files/mcp", CLAIMS)) == CLAIMS
    anonymous = SessionClaims("u", ANONYMOUS, 1)
    assert sealer.open("/files/mcp", sealer.seal("/files/mcp", anonymous)) == anonymous


def test_the_upstream_id_and_owner_cannot_be_read_from_the_id() -> None:
    session_id = SessionSealer([OLD]).seal("/files/mcp", CLAIMS)
    decoded = base64.urlsafe_b64decode(session_id + "==")
    for secret in (b"upstream-1", b"alice", b"client-1", b"https://idp"):
        assert secret not in decoded


@pytest.mark.parametrize("index", [0, 5, 20, -1], ids=["key-id", "nonce", "ciphertext", "tag"])
def test_any_changed_character_makes_an_unknown_id(index: int) -> None:
    sealer = SessionSealer([OLD])
    session_id = sealer.seal("/files/mcp", CLAIMS)
    assert sealer.open("/files/mcp", flip(session_id, index)) is None


def test_an_id_opens_only_on_the_route_it_was_minted_for() -> None:
    sealer = SessionSealer([OLD])
    assert sealer.open("/other/mcp", sealer.seal("/files/mcp", CLAIMS)) is None


def test_keys_rotate_newest_first() -> None:
    old_id = SessionSealer([OLD]).seal("/r", CLAIMS)
    rotated = SessionSealer([NEW, OLD])
    assert rotated.open("/r", old_id) == CLAIMS
    new_id = rotated.seal("/r", CLAIMS)
    assert SessionSealer([NEW]).open("/r", new_id) == CLAIMS
    assert SessionSealer([OLD]).open("/r", new_id) is None  # sealed with the first key
    assert SessionSealer([NEW]).open("/r", old_id) is None  # the old key retired


@pytest.mark.parametrize(
    "value",
    [
        "",
        "A",
        "AAAA",
        "not base64!",
        "a" * 3000,
        "\u00e9t\u00e9",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    ],
    ids=["empty", "one-char", "short", "not-base64", "huge", "non-ascii", "padded"],
)
def test_malformed_ids_are_unknown(value: str) -> None:
    assert SessionSealer([OLD]).open("/r", value) is None


def test_a_non_canonical_spelling_of_an_id_is_unknown() -> None:
    sealer = SessionSealer([OLD])
    # An id whose length leaves spare bits in its last character (the upstream id sets it).
    for upstream_id in ("u", "uu", "uuu"):
        session_id = sealer.seal("/r", SessionClaims(upstream_id, CLAIMS.owner, CLAIMS.created))
        data = base64.urlsafe_b64decode(session_id + "==")
        if len(data) % 3:
            break
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(session_id[-1])
    spare = 0b1111 if len(data) % 3 == 1 else 0b11
    variant = session_id[:-1] + alphabet[last | spare]
    assert variant != session_id
    assert base64.urlsafe_b64decode(variant + "==") == data
    assert sealer.open("/r", variant) is None


@pytest.mark.parametrize("keys", [[], [b"short"], [OLD, OLD]], ids=["none", "short", "repeated"])
def test_bad_key_sets_are_refused(keys: list[bytes]) -> None:
    with pytest.raises(ValueError, match="session keys"):
        SessionSealer(keys)
