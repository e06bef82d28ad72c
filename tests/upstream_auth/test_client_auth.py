"""Client authentication at a token endpoint: what each method puts on the request."""

from __future__ import annotations

import base64

import pytest
from joserfc import jwt

from gateway.oauth.signing import SigningKey, SigningKeyError
from gateway.upstream_auth.client_auth import (
    JWT_BEARER_ASSERTION,
    ClientSecretBasic,
    ClientSecretPost,
    client_authentication,
)
from tests.upstream_auth.conftest import damaged_private_key


@pytest.mark.parametrize(
    ("client_id", "secret", "pair"),
    [
        ("gw", "s3cret", "gw:s3cret"),
        ("gw:1", "a b+c/%", "gw%3A1:a+b%2Bc%2F%25"),
        ("gw", "ünï", "gw:%C3%BCn%C3%AF"),
    ],
)
def test_client_secret_basic_form_urlencodes_before_base64(
    client_id: str, secret: str, pair: str
) -> None:
    sent = ClientSecretBasic(client_id, secret).credentials("https://as/token")
    assert sent.form == {}
    assert sent.authorization == "Basic " + base64.b64encode(pair.encode()).decode()


def test_private_key_jwt_assertion_claims() -> None:
    key = SigningKey.generate("ES256")
    client = client_authentication(
        "private_key_jwt", "gw", private_key=key.to_pem(), clock=lambda: 1_000_000
    )
    first = client.credentials("https://as.example/token")
    second = client.credentials("https://as.example/token")
    assert first.authorization is None
    assert first.form["client_assertion_type"] == JWT_BEARER_ASSERTION
    decoded = jwt.decode(first.form["client_assertion"], key.key, algorithms=["ES256"])
    claims = decoded.claims
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("gw", "gw", "https://as.example/token")
    assert (claims["iat"], claims["exp"]) == (1_000_000, 1_000_060)
    assert decoded.header["kid"] == key.kid
    other = jwt.decode(second.form["client_assertion"], key.key, algorithms=["ES256"]).claims
    assert other["jti"] != claims["jti"]


def test_a_private_key_that_does_not_load_says_so_without_the_key() -> None:
    text = damaged_private_key()
    with pytest.raises(SigningKeyError) as raised:
        client_authentication("private_key_jwt", "gw", private_key=text)
    assert text.splitlines()[1] not in str(raised.value)


def test_client_secret_post_puts_both_in_the_body() -> None:
    sent = ClientSecretPost("gw", "s3cret").credentials("https://as/token")
    assert (sent.form, sent.authorization) == ({"client_id": "gw", "client_secret": "s3cret"}, None)


def test_secrets_are_not_in_reprs() -> None:
    assert "s3cret" not in repr(ClientSecretBasic("gw", "s3cret"))
    assert "s3cret" not in repr(ClientSecretBasic("gw", "s3cret").credentials("https://as/t"))
