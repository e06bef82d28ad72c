"""Local users: salted scrypt hashes, checked in constant time, from a strictly parsed file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.oauth.users import LocalUsers, UsersFileError, hash_password, verify_password

ALICE_HASH = hash_password("correct horse")


def test_a_password_verifies_only_against_its_own_hash() -> None:
    assert verify_password("correct horse", ALICE_HASH)
    assert not verify_password("correct horse ", ALICE_HASH)
    assert not verify_password("Correct horse", ALICE_HASH)
    assert not verify_password("", ALICE_HASH)


def test_hashes_are_salted() -> None:
    again = hash_password("correct horse")
    assert again != ALICE_HASH
    assert verify_password("correct horse", again)
    assert "correct horse" not in again


@pytest.mark.parametrize("password", ["", "x" * 1025])
def test_unreasonable_passwords_cannot_be_hashed(password: str) -> None:
    with pytest.raises(ValueError, match="a password must be"):
        hash_password(password)


def test_an_oversized_attempt_is_refused_without_hashing() -> None:
    assert not verify_password("x" * 5000, ALICE_HASH)


def test_users_authenticate_with_their_claims() -> None:
    users = LocalUsers.parse(
        {"users": {"alice": {"password_hash": ALICE_HASH, "claims": {"groups": ["eng"]}}}}
    )
    user = users.authenticate("alice", "correct horse")
    assert user is not None
    assert (user.username, dict(user.claims)) == ("alice", {"groups": ["eng"]})
    assert users.authenticate("alice", "wrong") is None
    assert users.authenticate("bob", "correct horse") is None
    assert ALICE_HASH not in repr(user)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "one top-level key"),
        ({"users": {}, "extra": 1}, "one top-level key"),
        ({"users": {}}, "must map user names"),
        ({"users": {"al ice": {"password_hash": ALICE_HASH}}}, "user names are"),
        ({"users": {"alice": {"password": "plain"}}}, "expected password_hash"),
        ({"users": {"alice": {}}}, "password_hash is required"),
        ({"users": {"alice": {"password_hash": "md5$abc"}}}, "not a password hash"),
        (
            {"users": {"alice": {"password_hash": ALICE_HASH.replace("$16384$", "$16$")}}},
            "out of range",
        ),
        ({"users": {"alice": {"password_hash": ALICE_HASH, "claims": []}}}, "claims must be"),
    ],
    ids=[
        "not-a-mapping",
        "extra-key",
        "no-users",
        "bad-name",
        "clear-password",
        "no-hash",
        "foreign-hash",
        "weak-parameters",
        "claims-not-mapping",
    ],
)
def test_malformed_users_files_are_refused(document: Any, problem: str) -> None:
    with pytest.raises(UsersFileError, match=problem) as caught:
        LocalUsers.parse(document)
    assert ALICE_HASH not in str(caught.value)


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(f'users:\n  alice: {{password_hash: "{ALICE_HASH}"}}\n')
    assert len(LocalUsers.load(path)) == 1
    with pytest.raises(UsersFileError, match="cannot read users file"):
        LocalUsers.load(tmp_path / "missing.yaml")
