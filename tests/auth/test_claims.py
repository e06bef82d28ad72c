from __future__ import annotations

from typing import Any

import pytest

from gateway.auth.claims import ClaimsError, check_claims
from gateway.auth.principal import Principal

ISS = "https://idp.example.com"
RES = "https://gw.example.com/files/mcp"
NOW = 1_800_000_000.0


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISS, "aud": RES, "sub": "u1", "exp": NOW + 60, "iat": NOW}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def check(c: dict[str, Any], **kwargs: Any) -> Principal:
    return check_claims(c, issuer=ISS, resource=RES, now=NOW, leeway=5, **kwargs)


@pytest.mark.parametrize(
    ("extra", "principal"),
    [
        ({"scope": "a b", "client_id": "c1"}, ("u1", "c1", {"a", "b"})),
        ({"scp": ["a", "b"], "azp": "c2"}, ("u1", "c2", {"a", "b"})),
        ({"aud": ["other", RES], "sub": None}, (None, None, set())),
        ({"exp": NOW - 3}, ("u1", None, set())),  # within leeway
    ],
    ids=["scope-string", "scp-list-and-azp", "aud-list-no-sub", "leeway"],
)
def test_valid_claims(extra: dict[str, Any], principal: tuple[Any, ...]) -> None:
    result = check(claims(**extra))
    assert (result.subject, result.client_id, set(result.scopes)) == principal
    assert result.issuer == ISS


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"iss": ISS + "/"}, "wrong_issuer"),
        ({"aud": None}, "missing_audience"),
        ({"aud": RES + "/"}, "wrong_audience"),
        ({"aud": RES.upper()}, "wrong_audience"),
        ({"aud": [1, 2]}, "missing_audience"),
        ({"exp": None}, "missing_exp"),
        ({"exp": "soon"}, "invalid_exp"),
        ({"exp": True}, "invalid_exp"),
        ({"exp": NOW - 5}, "expired"),
        ({"nbf": NOW + 6}, "not_yet_valid"),
        ({"iat": NOW + 60}, "issued_in_future"),
        ({"sub": 7}, "invalid_sub"),
    ],
    ids=[
        "iss-trailing-slash",
        "no-aud",
        "aud-trailing-slash",
        "aud-case",
        "aud-not-strings",
        "no-exp",
        "exp-string",
        "exp-bool",
        "expired",
        "nbf-future",
        "iat-future",
        "sub-not-string",
    ],
)
def test_invalid_claims(extra: dict[str, Any], reason: str) -> None:
    with pytest.raises(ClaimsError) as caught:
        check(claims(**extra))
    assert caught.value.reason == reason


def test_introspection_results_without_exp_get_the_default_expiry() -> None:
    principal = check(claims(exp=None), default_expiry=NOW + 60)
    assert principal.expires_at == NOW + 60
