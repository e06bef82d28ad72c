"""The authorization server's records and their stored form: JSON through one pydantic
`TypeAdapter` per record type, read back strictly. A record comes back equal and as immutable
as it went in; what the previous (hand-written) serializer stored still reads, so replicas of
two releases can share one Redis; a stored value that does not validate raises
`StoredRecordError` and its message never quotes the value.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from gateway.oauth.records import (
    CLIENT_RECORDS,
    LOGIN_TXNS,
    SIGN_IN_SESSIONS,
    UPSTREAM_STAGE,
    AuthorizationRequest,
    ClientRecord,
    LoginTxn,
    RecordCodec,
    SignInSession,
    StoredRecordError,
    digest,
)
from tests.support.secrets import remember

T0 = 1_800_000_000.0
VERIFIER = remember("upstream-verifier-8d1c7f0e2b6a4935")
CLAIMS = {"groups": ["eng", "ops"], "address": {"country": "NL"}, "email_verified": True}


def client(secret: str | None = None) -> ClientRecord:
    return ClientRecord(
        client_id="client-1",
        redirect_uris=("http://127.0.0.1:3000/callback", "https://app.example/cb"),
        created_at=T0,
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        secret_hash=digest(secret) if secret else None,
        client_name="Test client",
        scope=frozenset({"files:read"}),
    )


def login() -> LoginTxn:
    request = AuthorizationRequest(
        client_id="client-1",
        redirect_uri="http://127.0.0.1:3000/callback",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        resource="https://mcp.example.com/files/mcp",
        scopes=frozenset({"files:read"}),
        state="client-state",
        prompt=frozenset({"consent"}),
        max_age=600,
    )
    return LoginTxn(
        request,
        T0 + 300,
        stage=UPSTREAM_STAGE,
        browser=digest("flow-cookie"),
        code_verifier=VERIFIER,
        nonce="n-1",
        subject="alice",
        claims=CLAIMS,
        auth_time=T0,
    )


def session() -> SignInSession:
    return SignInSession("alice", T0, T0 + 1000, T0 + 10, claims=CLAIMS)


RECORDS: list[tuple[RecordCodec[Any], Any]] = [
    (CLIENT_RECORDS, client()),
    (CLIENT_RECORDS, client(secret="s3cret-of-client-1")),
    (LOGIN_TXNS, login()),
    (LOGIN_TXNS, LoginTxn(login().request, T0 + 300)),  # the defaults
    (SIGN_IN_SESSIONS, session()),
]
RECORD_IDS = ["public-client", "confidential-client", "login", "fresh-login", "session"]


# -- records ------------------------------------------------------------------------------------


def test_a_confidential_client_secret_is_checked_against_its_digest() -> None:
    record = client(secret="s3cret-of-client-1")
    assert record.secret_matches("s3cret-of-client-1")
    assert not record.secret_matches("s3cret-of-client-2")
    assert not record.secret_matches("")
    assert not client().secret_matches("")  # a public client has no secret to match


@pytest.mark.parametrize(
    ("method", "secret_hash"),
    [
        ("client_secret_basic", None),
        ("none", digest("x")),
        ("client_secret_post", "the-secret-itself"),
    ],
    ids=["secret-method-without-hash", "public-with-hash", "clear-secret-as-hash"],
)
def test_client_records_refuse_inconsistent_secrets(method: str, secret_hash: str | None) -> None:
    with pytest.raises(ValueError, match="secret"):
        ClientRecord(
            client_id="c",
            redirect_uris=("https://a.example/cb",),
            created_at=T0,
            token_endpoint_auth_method=method,
            secret_hash=secret_hash,
        )


# -- the stored form ----------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "record"), RECORDS, ids=RECORD_IDS)
def test_a_record_reads_back_equal_and_immutable(codec: RecordCodec[Any], record: Any) -> None:
    raw = codec.dump(record)
    assert isinstance(raw, bytes)
    back = codec.load(raw)
    assert back == record
    assert type(back) is type(record)
    name = dataclasses.fields(back)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(back, name, None)
    claims = getattr(back, "claims", None)
    if claims is not None:
        assert isinstance(claims, MappingProxyType)
        with pytest.raises(TypeError):
            claims["groups"] = ["root"]  # type: ignore[index]
    assert codec.load(raw) == back  # reading does not consume or change anything


def test_stored_claims_are_detached_from_the_callers_objects() -> None:
    claims: dict[str, Any] = {"groups": ["eng"]}
    record = SignInSession("alice", T0, T0 + 1000, T0, claims=claims)
    claims["groups"].append("root")
    assert record.claims == {"groups": ["eng"]}


PREVIOUS_FORM: list[tuple[RecordCodec[Any], bytes, Callable[[], Any]]] = [
    (
        CLIENT_RECORDS,
        b'{"client_id":"client-1","client_name":"Test client","created_at":1800000000.0,'
        b'"grant_types":["authorization_code","refresh_token"],"redirect_uris":'
        b'["http://127.0.0.1:3000/callback","https://app.example/cb"],"scope":["files:read"],'
        b'"secret_hash":null,"token_endpoint_auth_method":"none"}',
        client,
    ),
    (
        LOGIN_TXNS,
        b'{"auth_time":1800000000.0,"browser":"'
        + digest("flow-cookie").encode()
        + b'","claims":{"address":{"country":"NL"},"email_verified":true,"groups":["eng","ops"]},'
        b'"code_verifier":"' + VERIFIER.encode() + b'","expires_at":1800000300.0,"nonce":"n-1",'
        b'"request":{"client_id":"client-1","code_challenge":'
        b'"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM","max_age":600,"prompt":["consent"],'
        b'"redirect_uri":"http://127.0.0.1:3000/callback","resource":'
        b'"https://mcp.example.com/files/mcp","scopes":["files:read"],"state":"client-state"},'
        b'"stage":"upstream","subject":"alice"}',
        login,
    ),
    (
        SIGN_IN_SESSIONS,
        b'{"auth_time":1800000000.0,"claims":{"address":{"country":"NL"},"email_verified":true,'
        b'"groups":["eng","ops"]},"expires_at":1800001000.0,"last_used":1800000010.0,'
        b'"subject":"alice"}',
        session,
    ),
]


@pytest.mark.parametrize(
    ("codec", "previous", "expected"), PREVIOUS_FORM, ids=["client", "login", "session"]
)
def test_the_stored_form_is_the_one_the_previous_release_reads_and_writes(
    codec: RecordCodec[Any], previous: bytes, expected: Callable[[], Any]
) -> None:
    """Replicas of two releases share one Redis during a rolling upgrade: each reads the
    other's records (the same JSON, up to key order)."""
    assert codec.load(previous) == expected()
    assert json.loads(codec.dump(expected())) == json.loads(previous)


def test_fields_a_newer_release_adds_are_ignored() -> None:
    document = json.loads(SIGN_IN_SESSIONS.dump(session()))
    document["added_later"] = {"any": "thing"}
    assert SIGN_IN_SESSIONS.load(json.dumps(document).encode()) == session()


def _login_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(LOGIN_TXNS.dump(login()))
    return document


def _changed(change: Callable[[dict[str, Any]], object]) -> bytes:
    document = _login_document()
    change(document)
    return json.dumps(document).encode()


CORRUPT: list[tuple[bytes, str]] = [
    (b"", "(value): json_invalid"),
    (b'{"request": ', "(value): json_invalid"),
    (b"\xff\xfe{}", "(value): json_invalid"),
    (b"[]", "(value): dataclass_type"),
    (b'"' + VERIFIER.encode() + b'"', "(value): dataclass_type"),
    (_changed(lambda d: d.pop("expires_at")), "expires_at: missing"),
    (_changed(lambda d: d.update(expires_at=None)), "expires_at: float_type"),
    (_changed(lambda d: d.update(expires_at="1800000300")), "expires_at: float_type"),
    (_changed(lambda d: d["request"].update(scopes="files:read")), "request.scopes: frozen_set"),
    (_changed(lambda d: d["request"].pop("client_id")), "request.client_id: missing"),
    (_changed(lambda d: d.update(claims=["groups"])), "claims: dict_type"),
    (_changed(lambda d: d.update(subject=7)), "subject: string_type"),
]
CORRUPT_IDS = [
    "empty",
    "cut-short",
    "not-utf8",
    "a-list",
    "a-bare-string",
    "field-missing",
    "null-required-field",
    "number-as-string",
    "set-as-string",
    "nested-field-missing",
    "claims-not-an-object",
    "wrong-type",
]


@pytest.mark.parametrize(("raw", "problem"), CORRUPT, ids=CORRUPT_IDS)
def test_a_stored_value_that_does_not_validate_raises_without_quoting_it(
    raw: bytes, problem: str
) -> None:
    with pytest.raises(StoredRecordError) as caught:
        LOGIN_TXNS.load(raw)
    message = str(caught.value)
    assert message.startswith("a stored LoginTxn does not validate")
    assert problem in message
    assert VERIFIER not in message
    # pydantic's own error quotes the value: it must not be chained into a logged traceback.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_a_stored_client_its_own_check_refuses_raises() -> None:
    """A secret-based client whose `secret_hash` is not a digest (e.g. the secret in clear)."""
    in_clear = remember("client-secret-in-clear-5b0e1f")
    document = json.loads(CLIENT_RECORDS.dump(client(secret="s")))
    document["secret_hash"] = in_clear
    with pytest.raises(StoredRecordError, match="stored ClientRecord") as caught:
        CLIENT_RECORDS.load(json.dumps(document).encode())
    assert in_clear not in str(caught.value)
