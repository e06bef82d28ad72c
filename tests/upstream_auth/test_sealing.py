"""`GrantSealer`: AES-256-GCM records that open only with a configured key, for where they were
sealed, and keep opening across a key rotation."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import ValidationError

from gateway.config.upstream_auth import UserOAuth
from gateway.upstream_auth.sealing import GrantSealer, SealError, UnknownSealKeyError
from tests.support.secrets import remember

PLAINTEXT = b'{"access_token":"gho_secret"}'
HERE = b"route-a/user-1"


def new_key() -> str:
    return remember(base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())


def test_seal_then_open() -> None:
    sealer = GrantSealer.from_keys([new_key()])
    sealed = sealer.seal(PLAINTEXT, HERE)
    assert PLAINTEXT not in sealed
    assert b"gho_secret" not in sealed
    assert sealer.open(sealed, HERE) == PLAINTEXT


def test_each_seal_uses_a_fresh_nonce() -> None:
    sealer = GrantSealer.from_keys([new_key()])
    assert sealer.seal(PLAINTEXT, HERE) != sealer.seal(PLAINTEXT, HERE)


def test_another_key_cannot_open() -> None:
    sealed = GrantSealer.from_keys([new_key()]).seal(PLAINTEXT, HERE)
    with pytest.raises(UnknownSealKeyError):
        GrantSealer.from_keys([new_key()]).open(sealed, HERE)


def test_associated_data_binds_the_record() -> None:
    sealer = GrantSealer.from_keys([new_key()])
    sealed = sealer.seal(PLAINTEXT, HERE)
    with pytest.raises(SealError) as caught:
        sealer.open(sealed, b"route-a/user-2")
    assert not isinstance(caught.value, UnknownSealKeyError)


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="tag-bit-flipped"),
        pytest.param(lambda b: b[:25] + bytes([b[25] ^ 1]) + b[26:], id="ciphertext-bit-flipped"),
        pytest.param(lambda b: b[:12] + bytes([b[12] ^ 1]) + b[13:], id="nonce-bit-flipped"),
        pytest.param(lambda b: b[:20], id="truncated"),
        pytest.param(lambda b: b"\x02" + b[1:], id="unknown-version"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_altered_records_do_not_open(alter: object) -> None:
    sealer = GrantSealer.from_keys([new_key()])
    sealed = sealer.seal(PLAINTEXT, HERE)
    altered = alter(sealed)  # type: ignore[operator]
    assert altered != sealed
    with pytest.raises(SealError) as caught:
        sealer.open(altered, HERE)
    assert not isinstance(caught.value, UnknownSealKeyError)


def test_rotation_old_records_open_new_ones_use_the_new_key() -> None:
    old, new = new_key(), new_key()
    before = GrantSealer.from_keys([old])
    sealed_old = before.seal(PLAINTEXT, HERE)
    rotated = GrantSealer.from_keys([new, old])
    assert rotated.open(sealed_old, HERE) == PLAINTEXT
    assert not rotated.is_current(sealed_old)
    sealed_new = rotated.seal(PLAINTEXT, HERE)
    assert rotated.is_current(sealed_new)
    with pytest.raises(UnknownSealKeyError):
        before.open(sealed_new, HERE)
    with pytest.raises(UnknownSealKeyError):  # the old key dropped
        GrantSealer.from_keys([new]).open(sealed_old, HERE)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param("c2hvcnQ", "decodes to 5 bytes", id="short"),
        pytest.param("not base64 at all!!", "not a base64url key", id="not-base64"),
        pytest.param("", "not a base64url key", id="empty"),
    ],
)
def test_bad_keys_are_named_by_position_never_quoted(bad: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"encryption key 1: {reason}") as caught:
        GrantSealer.from_keys([new_key(), bad])
    if bad:
        assert bad not in str(caught.value)


def test_config_names_each_bad_key_at_its_position_without_quoting_it() -> None:
    secretish = remember("c2VjcmV0LWJ1dC10b28tc2hvcnQ")
    with pytest.raises(ValidationError) as caught:
        UserOAuth.model_validate(
            {
                "kind": "user_oauth",
                "issuer": "https://provider.example",
                "client_id": "gateway",
                "encryption_keys": [new_key(), secretish, "!!"],
            }
        )
    errors = caught.value.errors(include_url=False)
    assert [error["loc"] for error in errors] == [("encryption_keys", 1), ("encryption_keys", 2)]
    assert all(secretish not in error["msg"] for error in errors)


def test_config_reads_keys_one_per_line() -> None:
    first, second = new_key(), new_key()
    settings = UserOAuth.model_validate(
        {
            "kind": "user_oauth",
            "issuer": "https://provider.example",
            "client_id": "gateway",
            "encryption_keys": f"{first}\n\n{second}\n",
        }
    )
    keys = [key.get_secret_value() for key in settings.encryption_keys]
    assert keys == [first, second]
    assert GrantSealer.from_keys(keys).open(GrantSealer.from_keys([second]).seal(b"x", HERE), HERE)
