"""`KvAuthStore` over both key-value backends (`MemoryKV`, and `RedisKV` on a real Redis): a
stored value that does not read back as its record fails closed. Every method that reads it
raises `StoredRecordError` (answered 500 like any unexpected failure); none reads it as absent
(a code replay would then go unnoticed) or as a valid record, and none overwrites it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from gateway.oauth.kv_store import KvAuthStore, _consent_key
from gateway.oauth.records import (
    AuthorizationRequest,
    ClientRecord,
    CodeGrant,
    CodeRedemption,
    LoginTxn,
    PageSignIn,
    SignInSession,
    StoredRecordError,
    digest,
)
from gateway.store.memory import MemoryKV
from gateway.store.redis import RedisKV
from tests.support.redis import RedisServer
from tests.support.secrets import remember

T0 = 1_800_000_000.0
CORRUPT = b'{"written_by":"something else"}'


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password=remember(f"p@ss/{secrets.token_urlsafe(16)}")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[KvAuthStore]:
    if request.param == "memory":
        kv: MemoryKV | RedisKV = MemoryKV(clock=lambda: T0)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        kv = RedisKV(server.url, prefix=f"test-{uuid.uuid4().hex}:", timeout=5.0)
    try:
        yield KvAuthStore(kv, clock=lambda: T0)
    finally:
        await kv.close()


def code_grant() -> CodeGrant:
    return CodeGrant(
        client_id="client-1",
        redirect_uri="http://127.0.0.1:3000/callback",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        resource="https://mcp.example.com/files/mcp",
        scopes=frozenset({"files:read"}),
        subject="alice",
        auth_time=T0,
        expires_at=T0 + 60,
        claims={"groups": ["eng"]},
    )


async def corrupt(store: KvAuthStore, key: str) -> None:
    assert await store.kv.get(key) is not None  # the item being spoiled is really there
    await store.kv.set(key, CORRUPT, 3600.0)


async def refused(store: KvAuthStore, key: str, *reads: Awaitable[object]) -> None:
    """Each read raises, and the corrupt value is still there afterwards (not replaced)."""
    for read in reads:
        with pytest.raises(StoredRecordError):
            await read
    assert await store.kv.get(key) == CORRUPT


async def test_a_corrupt_client_is_refused(store: KvAuthStore) -> None:
    await store.save_client(ClientRecord("client-1", ("https://app.example/cb",), T0))
    await corrupt(store, "clients:client-1")
    await refused(store, "clients:client-1", store.get_client("client-1"))


async def test_a_corrupt_login_is_refused(store: KvAuthStore) -> None:
    request = AuthorizationRequest(
        "client-1", "https://app.example/cb", "challenge", "https://r", frozenset({"a"})
    )
    state = await store.begin_login(LoginTxn(request, T0 + 300))
    await corrupt(store, f"logins:{digest(state)}")
    with pytest.raises(StoredRecordError):
        await store.take_login(state, T0)
    assert await store.take_login(state, T0) is None  # taken all the same: single use


def page_sign_in() -> PageSignIn:
    return PageSignIn(
        return_to="/oauth/connect/files?ticket=t",
        purpose="connect",
        expires_at=T0 + 300,
        stage="sign_in",
        browser=digest("flow cookie"),
    )


async def test_a_page_sign_in_is_taken_once_and_not_after_it_expires(store: KvAuthStore) -> None:
    state = await store.begin_page_sign_in(page_sign_in())
    assert state.startswith("p.")
    assert await store.kv.get(f"page_sign_ins:{digest(state)}") is not None  # only the digest
    assert await store.take_page_sign_in(state, T0) == page_sign_in()
    assert await store.take_page_sign_in(state, T0) is None
    late = await store.begin_page_sign_in(page_sign_in())
    assert await store.take_page_sign_in(late, T0 + 300) is None


async def test_a_corrupt_page_sign_in_is_refused(store: KvAuthStore) -> None:
    state = await store.begin_page_sign_in(page_sign_in())
    await corrupt(store, f"page_sign_ins:{digest(state)}")
    with pytest.raises(StoredRecordError):
        await store.take_page_sign_in(state, T0)
    assert await store.take_page_sign_in(state, T0) is None  # taken all the same: single use


async def test_a_corrupt_code_is_refused(store: KvAuthStore) -> None:
    code = await store.issue_code(code_grant())
    key = f"codes:{digest(code)}"
    await corrupt(store, key)
    await refused(store, key, store.consume_code(code, T0), store.consume_code(code, T0))


async def test_a_corrupt_token_family_is_refused(store: KvAuthStore) -> None:
    redemption = await store.consume_code(await store.issue_code(code_grant()), T0)
    assert isinstance(redemption, CodeRedemption)
    family = redemption.family(T0 + 3600)
    token = await store.start_family(family)
    assert token is not None
    key = f"families:{family.family_id}"
    await corrupt(store, key)
    await refused(
        store,
        key,
        store.rotate(token, T0, client_id="client-1", scopes=None),
        store.revoke(token, client_id="client-1"),
        store.record_jti(family.family_id, "jti-1", T0 + 300),
        store.start_family(family),
        store.revoke_family(family.family_id),
    )
    assert not await store.is_revoked_jti("jti-1")


async def test_a_corrupt_sign_in_session_is_refused(store: KvAuthStore) -> None:
    cookie = await store.start_session(SignInSession("alice", T0, T0 + 1000, T0), 100.0)
    key = f"sessions:{digest(cookie)}"
    await corrupt(store, key)
    await refused(store, key, store.find_session(cookie, T0 + 1, 100.0))


@pytest.mark.parametrize(
    "spoil",
    [b"[]", b'{"files:read":"later"}', b'{"files:read":null}', b"not json"],
    ids=["a-list", "expiry-a-string", "expiry-null", "not-json"],
)
async def test_a_corrupt_consent_is_refused(store: KvAuthStore, spoil: bytes) -> None:
    await store.record_consent("alice", "client-1", ["files:read"], T0 + 100)
    key = _consent_key("alice", "client-1")
    assert await store.kv.get(key) is not None
    await store.kv.set(key, spoil, 3600.0)
    reads: list[Callable[[], Awaitable[object]]] = [
        lambda: store.consented_scopes("alice", "client-1", T0),
        lambda: store.record_consent("alice", "client-1", ["files:write"], T0 + 100),
    ]
    for read in reads:
        with pytest.raises(StoredRecordError, match="stored consent"):
            await read()
    assert await store.kv.get(key) == spoil
