from __future__ import annotations

import pytest

from gateway.auth.challenge import bearer_challenge, quote


def test_challenge_parameters_in_order() -> None:
    header = bearer_challenge(
        {"resource_metadata": "https://gw/.well-known/oauth-protected-resource/x", "scope": "a b"}
    )
    assert header == (
        'Bearer resource_metadata="https://gw/.well-known/oauth-protected-resource/x", scope="a b"'
    )


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("plain", '"plain"'), ('say "hi"', '"say \\"hi\\""'), ("back\\slash", '"back\\\\slash"')],
    ids=["plain", "quotes", "backslash"],
)
def test_quote_escapes(value: str, quoted: str) -> None:
    assert quote(value) == quoted


@pytest.mark.parametrize(
    "value", ["line\r\nX-Injected: 1", "tab\there", "é"], ids=["crlf", "tab", "non-ascii"]
)
def test_quote_refuses_values_that_could_break_the_header(value: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        quote(value)
