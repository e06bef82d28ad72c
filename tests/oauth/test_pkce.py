"""PKCE, S256 only: the challenge /authorize requires, and the verifier /token checks."""

from __future__ import annotations

import pytest

from gateway.oauth.pkce import PkceError, challenge_of, check_challenge, verify

# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
LONGEST = ("A1-._~" * 22)[:128]


def test_the_rfc_7636_appendix_b_vector() -> None:
    assert challenge_of(RFC_VERIFIER) == RFC_CHALLENGE
    assert verify(RFC_VERIFIER, RFC_CHALLENGE)


@pytest.mark.parametrize(
    "challenge",
    [RFC_CHALLENGE, challenge_of(LONGEST), challenge_of("0" * 43)],
    ids=["rfc-vector", "from-longest-verifier", "from-shortest-verifier"],
)
def test_well_formed_s256_challenges_are_accepted(challenge: str) -> None:
    assert check_challenge("S256", challenge) == challenge


@pytest.mark.parametrize(
    ("method", "challenge", "reason"),
    [
        (None, None, "challenge_missing"),
        ("S256", None, "challenge_missing"),
        ("S256", "", "challenge_missing"),
        (None, RFC_CHALLENGE, "method_missing"),
        ("", RFC_CHALLENGE, "method_missing"),
        ("plain", RFC_CHALLENGE, "method_not_supported"),
        ("plain", RFC_VERIFIER, "method_not_supported"),
        ("s256", RFC_CHALLENGE, "method_not_supported"),
        ("S256 ", RFC_CHALLENGE, "method_not_supported"),
        ("S512", RFC_CHALLENGE, "method_not_supported"),
        ("S256", RFC_CHALLENGE[:-1], "malformed"),
        ("S256", RFC_CHALLENGE + "A", "malformed"),
        ("S256", RFC_CHALLENGE + "=", "malformed"),
        ("S256", RFC_CHALLENGE.replace("-", "+"), "malformed"),
        ("S256", RFC_CHALLENGE[:-1] + "N", "malformed"),
        ("S256", RFC_CHALLENGE[:-1] + " ", "malformed"),
        ("S256", RFC_CHALLENGE + "\n", "malformed"),
    ],
    ids=[
        "no-pkce",
        "method-without-challenge",
        "empty-challenge",
        "no-method-defaults-to-plain",
        "empty-method",
        "plain",
        "plain-with-verifier-as-challenge",
        "method-case",
        "method-trailing-space",
        "unknown-method",
        "42-chars",
        "44-chars",
        "padded",
        "standard-base64-alphabet",
        "last-char-not-a-digest-ending",
        "space",
        "trailing-newline",
    ],
)
def test_challenges_without_usable_s256_are_refused(
    method: str | None, challenge: str | None, reason: str
) -> None:
    with pytest.raises(PkceError) as caught:
        check_challenge(method, challenge)
    assert caught.value.reason == reason
    assert caught.value.error == "invalid_request"


@pytest.mark.parametrize(
    "verifier",
    [RFC_VERIFIER, "0" * 43, LONGEST, "abc~def.ghi_jkl-" * 3],
    ids=["rfc-vector", "shortest", "longest", "every-unreserved-punctuation"],
)
def test_a_verifier_matches_its_own_challenge(verifier: str) -> None:
    assert verify(verifier, challenge_of(verifier))


@pytest.mark.parametrize(
    ("verifier", "challenge"),
    [
        (RFC_VERIFIER[:-1] + "l", RFC_CHALLENGE),
        (RFC_VERIFIER, RFC_CHALLENGE[:-1] + "Q"),
        (RFC_VERIFIER, RFC_CHALLENGE.lower()),
        (RFC_VERIFIER, RFC_CHALLENGE + "="),
        (RFC_VERIFIER, RFC_VERIFIER),
        (RFC_VERIFIER, ""),
        ("", challenge_of("")),
        ("0" * 42, challenge_of("0" * 42)),
        ("0" * 129, challenge_of("0" * 129)),
        ("0" * 42 + "+", challenge_of("0" * 42 + "+")),
        ("0" * 42 + "/", challenge_of("0" * 42 + "/")),
        ("0" * 42 + " ", challenge_of("0" * 42 + " ")),
        ("0" * 42 + "é", RFC_CHALLENGE),
        (RFC_VERIFIER, "é" * 43),
    ],
    ids=[
        "other-verifier",
        "other-challenge",
        "challenge-case",
        "challenge-padded",
        "verifier-as-plain-challenge",
        "empty-challenge",
        "empty-verifier",
        "verifier-too-short",
        "verifier-too-long",
        "verifier-plus",
        "verifier-slash",
        "verifier-space",
        "verifier-non-ascii",
        "challenge-non-ascii",
    ],
)
def test_a_verifier_fails_on_any_mismatch_or_bad_syntax(verifier: str, challenge: str) -> None:
    assert not verify(verifier, challenge)
