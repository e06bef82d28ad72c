from __future__ import annotations

import pytest

from gateway.auth.bearer import BearerHeaderError, BearerTokenSyntaxError, bearer_token


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        (["Bearer abc.def-ghi_jkl~+/=="], "abc.def-ghi_jkl~+/=="),
        (["bearer abc"], "abc"),
        (["BEARER   abc  "], "abc"),
        (["Basic YWxhZGRpbjpvcGVuc2VzYW1l"], None),
        (["Bearerabc"], None),
    ],
    ids=["absent", "token68", "scheme-case", "spaces", "other-scheme", "no-space"],
)
def test_bearer_token(headers: list[str], expected: str | None) -> None:
    assert bearer_token(headers, 100) == expected


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer a b", "Bearer a%b", 'Bearer "abc"', "Bearer " + "a" * 101],
    ids=["empty", "blank", "two-words", "percent", "quoted", "too-long"],
)
def test_bearer_token_syntax_errors(header: str) -> None:
    with pytest.raises(BearerTokenSyntaxError):
        bearer_token([header], 100)


def test_several_authorization_headers_are_refused() -> None:
    with pytest.raises(BearerHeaderError):
        bearer_token(["Bearer a", "Bearer b"], 100)
