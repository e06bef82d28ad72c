"""The authorization server's state store: single use, rotation, revocation, expiry, bounds.

Contract tests take the `store` fixture (typed as `AuthStore`) and run on both backends: a
`MemoryStore`, and a `KvAuthStore` over a real Redis. Tests that look inside `MemoryStore`, or
rely on its storage lifetimes running on the test's clock, take `memory`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from gateway.oauth.kv_store import CODE_REPLAY_MEMORY, REVOCATION_MARGIN, KvAuthStore
from gateway.oauth.memory_store import MemoryLimits, MemoryStore
from gateway.oauth.records import (
    AuthorizationRequest,
    ClientRecord,
    CodeGrant,
    CodeRedemption,
    CodeReplay,
    FamilyGrant,
    LoginTxn,
    Reused,
    Rotated,
    ScopeNotGranted,
    SignInSession,
    digest,
)
from gateway.oauth.store import AuthStore
from gateway.store.redis import RedisKV
from tests.support.redis import RedisServer
from tests.support.secrets import remember

T0 = 1_800_000_000.0
RESOURCE = "https://mcp.example.com/files/mcp"
SCOPES = frozenset({"mcp:tools", "files:read", "files:write"})
DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def memory(clock: Clock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password=remember(f"p@ss/{secrets.token_urlsafe(16)}")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[AuthStore]:
    """The contract on both backends: one process, and replicas sharing a real Redis (whose
    storage lifetimes run on real time; validity is decided by the `now` each call passes)."""
    if request.param == "memory":
        yield request.getfixturevalue("memory")
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = RedisKV(server.url, prefix=f"test-{uuid.uuid4().hex}:", timeout=5.0)
    try:
        yield KvAuthStore(redis, clock=clock)
    finally:
        await redis.close()


def code_grant(expires_in: float = 60.0, **changes: Any) -> CodeGrant:
    grant = CodeGrant(
        client_id="client-1",
        redirect_uri="http://127.0.0.1:3000/callback",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        resource=RESOURCE,
        scopes=SCOPES,
        subject="alice",
        auth_time=T0,
        expires_at=T0 + expires_in,
        claims={"groups": ["eng"]},
    )
    return dataclasses.replace(grant, **changes)


async def redeem(store: AuthStore, grant: CodeGrant | None = None) -> CodeRedemption:
    code = await store.issue_code(grant or code_grant())
    redemption = await store.consume_code(code, T0)
    assert isinstance(redemption, CodeRedemption)
    return redemption


async def family(
    store: AuthStore, *, lifetime: float = DAY, jti: str = "jti-1"
) -> tuple[FamilyGrant, str]:
    """A redeemed code's family with one access token recorded and its first refresh token."""
    grant = (await redeem(store)).family(T0 + lifetime)
    assert await store.record_jti(grant.family_id, jti, T0 + 300)
    refresh_token = await store.start_family(grant)
    assert refresh_token is not None
    return grant, refresh_token


async def rotate(
    store: AuthStore,
    token: str,
    *,
    now: float = T0,
    client_id: str = "client-1",
    scopes: frozenset[str] | None = None,
) -> Rotated | Reused | ScopeNotGranted | None:
    return await store.rotate(token, now, client_id=client_id, scopes=scopes)


async def rotated(store: AuthStore, token: str, **kwargs: Any) -> Rotated:
    result = await rotate(store, token, **kwargs)
    assert isinstance(result, Rotated)
    return result


# -- clients ------------------------------------------------------------------------------------


def client(client_id: str = "client-1", secret: str | None = None) -> ClientRecord:
    return ClientRecord(
        client_id=client_id,
        redirect_uris=("http://127.0.0.1:3000/callback",),
        created_at=T0,
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        secret_hash=digest(secret) if secret else None,
        client_name="Test client",
        scope=SCOPES,
    )


async def test_a_saved_client_is_found_by_its_id(store: AuthStore) -> None:
    record = client()
    await store.save_client(record)
    assert await store.get_client("client-1") == record
    assert await store.get_client("client-2") is None


# -- login transactions -------------------------------------------------------------------------

PENDING = AuthorizationRequest(
    client_id="client-1",
    redirect_uri="http://127.0.0.1:3000/callback",
    code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    resource=RESOURCE,
    scopes=frozenset({"files:read"}),
    state="client-state",
)


def login(expires_in: float = 300.0) -> LoginTxn:
    return LoginTxn(PENDING, T0 + expires_in, code_verifier="upstream-verifier", nonce="n-1")


async def test_a_login_state_is_single_use(store: AuthStore) -> None:
    txn = login()
    state = await store.begin_login(txn)
    assert len(state) >= 43  # 256 bits, base64url
    assert await store.take_login(state, T0) == txn
    assert await store.take_login(state, T0) is None
    assert await store.take_login("not-a-state", T0) is None


async def test_a_login_carries_the_signed_in_user_to_the_consent_step(store: AuthStore) -> None:
    claims: dict[str, Any] = {"groups": ["eng"]}
    txn = dataclasses.replace(login(), subject="alice", claims=claims, auth_time=T0)
    claims["groups"].append("admins")  # the record holds its own copy
    claims["email"] = "mallory@example.com"
    taken = await store.take_login(await store.begin_login(txn), T0)
    assert taken is not None
    assert (taken.subject, taken.auth_time, taken.request) == ("alice", T0, PENDING)
    assert taken.claims == {"groups": ["eng"]}
    with pytest.raises(TypeError):
        taken.claims["groups"] = ["admins"]  # type: ignore[index]


async def test_an_expired_login_state_is_refused_and_spent(store: AuthStore) -> None:
    state = await store.begin_login(login(expires_in=300))
    assert await store.take_login(state, T0 + 300) is None
    assert await store.take_login(state, T0) is None  # the failed take used it up


async def test_each_login_gets_its_own_state(store: AuthStore) -> None:
    first, second = await store.begin_login(login()), await store.begin_login(login())
    assert first != second


# -- authorization codes ------------------------------------------------------------------------


async def test_a_code_redeems_once_for_its_grant(store: AuthStore) -> None:
    grant = code_grant()
    code = await store.issue_code(grant)
    assert len(code) >= 43  # 256 bits, base64url
    redemption = await store.consume_code(code, T0 + 1)
    assert isinstance(redemption, CodeRedemption)
    assert redemption.grant == grant
    assert redemption.grant.claims == {"groups": ["eng"]}
    replay = await store.consume_code(code, T0 + 2)
    assert replay == CodeReplay(redemption.family_id)


async def test_codes_and_families_are_distinct_per_issue(store: AuthStore) -> None:
    first, second = await redeem(store), await redeem(store)
    assert first.family_id != second.family_id


async def test_an_expired_code_is_unknown(store: AuthStore) -> None:
    code = await store.issue_code(code_grant(expires_in=60))
    assert await store.consume_code(code, T0 + 60) is None
    assert await store.consume_code("never-issued", T0) is None


async def test_a_code_replay_revokes_the_family_its_first_use_started(store: AuthStore) -> None:
    code = await store.issue_code(code_grant())
    redemption = await store.consume_code(code, T0)
    assert isinstance(redemption, CodeRedemption)
    grant = redemption.family(T0 + DAY)
    assert await store.record_jti(grant.family_id, "jti-1", T0 + 300)
    refresh_token = await store.start_family(grant)
    assert refresh_token is not None
    assert not await store.is_revoked_jti("jti-1")

    assert await store.consume_code(code, T0 + 5) == CodeReplay(grant.family_id)
    assert await store.is_revoked_jti("jti-1")
    assert await rotate(store, refresh_token) is None
    assert await store.record_jti(grant.family_id, "jti-2", T0 + 300)
    assert await store.is_revoked_jti("jti-2")  # issued after the replay: revoked at once


async def test_a_replay_during_the_first_redemption_revokes_what_it_then_issues(
    store: AuthStore,
) -> None:
    code = await store.issue_code(code_grant())
    redemption = await store.consume_code(code, T0)
    assert isinstance(redemption, CodeRedemption)
    assert isinstance(await store.consume_code(code, T0), CodeReplay)
    # The first request, still minting, answers; but its access token is dead on arrival and
    # it starts no refresh-token chain.
    assert await store.record_jti(redemption.family_id, "jti-1", T0 + 300)
    assert await store.is_revoked_jti("jti-1")
    assert await store.start_family(redemption.family(T0 + DAY)) is None


async def test_an_unknown_family_records_nothing(store: AuthStore) -> None:
    assert not await store.record_jti("never-started", "jti-1", T0 + 300)
    assert not await store.is_revoked_jti("jti-1")


async def test_a_replay_is_recognised_for_a_while_after_the_code_expired(
    store: AuthStore,
) -> None:
    code = await store.issue_code(code_grant(expires_in=60))
    assert isinstance(await store.consume_code(code, T0), CodeRedemption)
    late = T0 + 60 + CODE_REPLAY_MEMORY
    assert isinstance(await store.consume_code(code, late - 1), CodeReplay)
    assert await store.consume_code(code, late) is None


async def test_concurrent_redemptions_of_one_code_succeed_once(store: AuthStore) -> None:
    code = await store.issue_code(code_grant())
    results = await asyncio.gather(*(store.consume_code(code, T0) for _ in range(20)))
    assert sum(isinstance(r, CodeRedemption) for r in results) == 1
    assert sum(isinstance(r, CodeReplay) for r in results) == 19


async def test_a_family_starts_once(store: AuthStore) -> None:
    grant = (await redeem(store)).family(T0 + DAY)
    assert await store.start_family(grant) is not None
    assert await store.start_family(grant) is None
    unknown = dataclasses.replace(grant, family_id="never-redeemed")
    assert await store.start_family(unknown) is None


# -- refresh tokens -----------------------------------------------------------------------------


async def test_every_refresh_rotates_the_token(store: AuthStore) -> None:
    grant, token = await family(store)
    seen = {token}
    for _ in range(3):
        result = await rotated(store, token)
        assert result.grant == grant
        assert result.scopes == SCOPES
        assert result.refresh_token not in seen
        seen.add(result.refresh_token)
        token = result.refresh_token


async def test_reusing_a_rotated_token_revokes_the_whole_family(store: AuthStore) -> None:
    grant, first = await family(store, jti="jti-1")
    second = (await rotated(store, first)).refresh_token
    assert await store.record_jti(grant.family_id, "jti-2", T0 + 300)
    third = (await rotated(store, second)).refresh_token

    assert await rotate(store, first) == Reused(grant.family_id)  # however old the token
    assert await rotate(store, third) is None  # the newest one is dead too
    assert await store.is_revoked_jti("jti-1")
    assert await store.is_revoked_jti("jti-2")


async def test_a_token_with_the_family_handle_but_a_wrong_secret_is_reuse(
    store: AuthStore,
) -> None:
    grant, token = await family(store)
    handle = token.partition(".")[0]
    assert await rotate(store, handle + ".guessed") == Reused(grant.family_id)
    assert await rotate(store, token) is None


async def test_concurrent_refreshes_with_one_token_rotate_once(memory: MemoryStore) -> None:
    """In one process each call runs whole, so the order is exact."""
    grant, token = await family(memory)
    results = await asyncio.gather(*(rotate(memory, token) for _ in range(10)))
    [winner] = [r for r in results if isinstance(r, Rotated)]
    # The next presented a token that had just been rotated: reuse, which revoked the family,
    # so the rest found nothing, and the winner's new token is dead too.
    assert results.count(Reused(grant.family_id)) == 1
    assert results.count(None) == 8
    assert await rotate(memory, winner.refresh_token) is None


async def test_concurrent_refreshes_with_one_token_rotate_once_on_any_backend(
    store: AuthStore,
) -> None:
    """Across replicas the calls interleave: one rotates, every other is reuse (it lost the
    race) or finds the family already revoked, and the family ends revoked."""
    grant, token = await family(store)
    results = await asyncio.gather(*(rotate(store, token) for _ in range(10)))
    [winner] = [r for r in results if isinstance(r, Rotated)]
    losers = [r for r in results if r is not winner]
    assert Reused(grant.family_id) in losers
    assert set(losers) <= {Reused(grant.family_id), None}
    assert await rotate(store, winner.refresh_token) is None
    assert await store.is_revoked_jti("jti-1")


@pytest.mark.parametrize(
    "token", ["", ".", "no-dot-at-all", "unknown-handle.secret", "a.b.c"], ids=repr
)
async def test_malformed_or_unknown_refresh_tokens_are_refused(
    store: AuthStore, token: str
) -> None:
    _, good = await family(store)
    assert await rotate(store, token) is None
    assert isinstance(await rotate(store, good), Rotated)  # nothing was revoked


@pytest.mark.parametrize("lifetime", [100.0, DAY], ids=["shorter-than-its-tokens", "a-day"])
async def test_refresh_ends_at_the_family_expiry(store: AuthStore, lifetime: float) -> None:
    _, token = await family(store, lifetime=lifetime)
    token = (await rotated(store, token, now=T0 + lifetime - 1)).refresh_token
    assert await rotate(store, token, now=T0 + lifetime) is None


async def test_another_client_cannot_refresh_and_does_not_spend_the_token(
    store: AuthStore,
) -> None:
    _, token = await family(store)
    assert await rotate(store, token, client_id="client-2") is None
    assert isinstance(await rotate(store, token), Rotated)


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (None, SCOPES),
        (SCOPES, SCOPES),
        (frozenset({"files:read"}), frozenset({"files:read"})),
        (frozenset(), frozenset()),
    ],
    ids=["omitted", "same", "narrower", "empty"],
)
async def test_refresh_grants_the_requested_scopes_within_the_family(
    store: AuthStore, requested: frozenset[str] | None, granted: frozenset[str]
) -> None:
    _, token = await family(store)
    result = await rotated(store, token, scopes=requested)
    assert result.scopes == granted
    assert result.grant.scopes == SCOPES


async def test_refresh_never_widens_scope(store: AuthStore) -> None:
    _, token = await family(store)
    wider = SCOPES | {"files:admin"}
    assert await rotate(store, token, scopes=wider) == ScopeNotGranted(frozenset({"files:admin"}))
    # Refused without rotating: the client's token still works.
    narrowed = await rotated(store, token, scopes=frozenset({"files:read"}))
    # A narrowing is for that access token only; the family keeps its ceiling, never more.
    assert (await rotated(store, narrowed.refresh_token)).scopes == SCOPES
    # A spent token asking for more is reuse first: it revokes, whatever it asks for.
    again = await rotate(store, narrowed.refresh_token, scopes=frozenset({"files:admin"}))
    assert isinstance(again, Reused)


# -- revocation ---------------------------------------------------------------------------------


async def test_revoking_a_refresh_token_revokes_its_family(store: AuthStore) -> None:
    _, token = await family(store, jti="jti-1")
    assert not await store.revoke(token, client_id="client-2")  # not that client's token
    assert isinstance(await rotate(store, token), Rotated)
    _, token = await family(store, jti="jti-2")
    assert await store.revoke(token, client_id="client-1")
    assert await rotate(store, token) is None
    assert await store.is_revoked_jti("jti-2")
    assert not await store.is_revoked_jti("jti-1")


@pytest.mark.parametrize("token", ["", "unknown", "unknown-handle.secret"], ids=repr)
async def test_revoking_an_unknown_token_changes_nothing(store: AuthStore, token: str) -> None:
    assert not await store.revoke(token, client_id="client-1")


async def test_revoke_family_is_idempotent(store: AuthStore) -> None:
    grant, token = await family(store)
    await store.revoke_family(grant.family_id)
    await store.revoke_family(grant.family_id)
    await store.revoke_family("never-existed")
    assert await rotate(store, token) is None
    assert await store.is_revoked_jti("jti-1")


async def test_a_revoked_jti_is_remembered_until_its_token_is_surely_expired(
    memory: MemoryStore, clock: Clock
) -> None:
    """On the memory backend, whose storage lifetimes run on the test's clock."""
    await memory.revoke_jti("jti-x", T0 + 300)
    assert await memory.is_revoked_jti("jti-x")
    assert not await memory.is_revoked_jti("jti-y")
    clock.now = T0 + 300 + REVOCATION_MARGIN - 1  # within any validator's leeway
    assert await memory.is_revoked_jti("jti-x")
    clock.now = T0 + 300 + REVOCATION_MARGIN
    assert not await memory.is_revoked_jti("jti-x")


async def test_revocation_reaches_tokens_until_their_expiry_even_after_the_family_ends(
    store: AuthStore, clock: Clock
) -> None:
    # Refresh ends after 60 s, but the access token lives an hour: revoking the family later
    # (past the code's replay memory too) must still revoke that token.
    redemption = await redeem(store)
    assert await store.record_jti(redemption.family_id, "jti-1", T0 + 3600)
    assert await store.start_family(redemption.family(T0 + 60)) is not None
    clock.now = T0 + 60 + CODE_REPLAY_MEMORY + 1
    later = await store.issue_code(code_grant(expires_in=DAY))
    assert await store.consume_code(later, clock.now)  # a write, which may purge the expired
    await store.revoke_family(redemption.family_id)
    assert await store.is_revoked_jti("jti-1")


# -- consent ------------------------------------------------------------------------------------


async def test_consent_is_per_user_and_client_and_expires(store: AuthStore) -> None:
    await store.record_consent("alice", "client-1", ["files:read", "mcp:tools"], T0 + 100)
    both = frozenset({"files:read", "mcp:tools"})
    assert await store.consented_scopes("alice", "client-1", T0) == both
    assert await store.consented_scopes("alice", "client-2", T0) == frozenset()
    assert await store.consented_scopes("bob", "client-1", T0) == frozenset()
    assert await store.consented_scopes("alice", "client-1", T0 + 100) == frozenset()


async def test_consent_accumulates_and_each_scope_keeps_its_expiry(store: AuthStore) -> None:
    await store.record_consent("alice", "client-1", ["files:read"], T0 + 100)
    await store.record_consent("alice", "client-1", ["files:write"], T0 + 500)
    got = await store.consented_scopes("alice", "client-1", T0 + 50)
    assert got == frozenset({"files:read", "files:write"})
    assert await store.consented_scopes("alice", "client-1", T0 + 200) == {"files:write"}
    await store.record_consent("alice", "client-1", ["files:read"], T0 + 1000)  # approved again
    got = await store.consented_scopes("alice", "client-1", T0 + 600)
    assert got == frozenset({"files:read"})


# -- memory bounds (MemoryStore) ----------------------------------------------------------------


def test_limits_must_leave_room() -> None:
    with pytest.raises(ValueError, match="codes"):
        MemoryLimits(codes=0)


async def test_clients_are_bounded_least_recently_used_first() -> None:
    memory = MemoryStore(MemoryLimits(clients=3))
    for n in range(3):
        await memory.save_client(client(f"c{n}"))
    assert await memory.get_client("c0") is not None  # used: now the most recent
    await memory.save_client(client("c3"))
    assert await memory.get_client("c1") is None
    assert [await memory.get_client(f"c{n}") is not None for n in (0, 2, 3)] == [True] * 3
    assert memory.evicted["clients"] == 1


async def test_codes_are_bounded_oldest_first(clock: Clock) -> None:
    memory = MemoryStore(MemoryLimits(codes=3), clock=clock)
    codes = [await memory.issue_code(code_grant()) for _ in range(5)]
    assert memory.memory.count("codes") == 3
    assert [await memory.consume_code(c, T0) is not None for c in codes] == [False] * 2 + [True] * 3
    assert memory.evicted["codes"] == 2


async def test_logins_are_bounded_oldest_first(clock: Clock) -> None:
    memory = MemoryStore(MemoryLimits(logins=2), clock=clock)
    states = [await memory.begin_login(login()) for _ in range(3)]
    assert memory.memory.count("logins") == 2
    assert [await memory.take_login(s, T0) is not None for s in states] == [False, True, True]


async def test_families_are_bounded_and_an_evicted_one_fails_closed(clock: Clock) -> None:
    memory = MemoryStore(MemoryLimits(families=2), clock=clock)
    tokens = [(await family(memory, jti=f"jti-{n}"))[1] for n in range(3)]
    assert memory.memory.count("families") == 2
    assert memory.memory.count("handles") == 2  # an evicted family's handle goes with it
    assert await rotate(memory, tokens[0]) is None
    assert isinstance(await rotate(memory, tokens[2]), Rotated)
    assert memory.evicted["families"] == 1


async def test_revoked_jtis_are_bounded_oldest_first(clock: Clock) -> None:
    memory = MemoryStore(MemoryLimits(revoked_jtis=2), clock=clock)
    for n in range(3):
        await memory.revoke_jti(f"jti-{n}", T0 + 300 + n)
    assert [await memory.is_revoked_jti(f"jti-{n}") for n in range(3)] == [False, True, True]
    assert memory.evicted["revoked_jtis"] == 1


async def test_consents_are_bounded_oldest_first(clock: Clock) -> None:
    memory = MemoryStore(MemoryLimits(consents=2), clock=clock)
    for user in ("u0", "u1", "u2"):
        await memory.record_consent(user, "client-1", ["files:read"], T0 + 100)
    found = [await memory.consented_scopes(u, "client-1", T0) for u in ("u0", "u1", "u2")]
    assert found == [frozenset(), {"files:read"}, {"files:read"}]


async def test_live_access_tokens_per_family_are_bounded(clock: Clock) -> None:
    memory = MemoryStore(MemoryLimits(jtis_per_family=3), clock=clock)
    grant = (await redeem(memory)).family(T0 + DAY)
    assert [await memory.record_jti(grant.family_id, f"j{n}", T0 + 300) for n in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    clock.now = T0 + 300 + REVOCATION_MARGIN  # the first three are surely expired now
    assert await memory.record_jti(grant.family_id, "j4", clock.now + 300)


async def test_expired_entries_are_purged_on_later_writes(clock: Clock) -> None:
    memory = MemoryStore(clock=clock)
    for _ in range(5):
        await memory.issue_code(code_grant(expires_in=60))
        await memory.begin_login(login(expires_in=60))
        await memory.revoke_jti("j", T0)
    clock.now = T0 + 60 + REVOCATION_MARGIN
    await memory.issue_code(code_grant(expires_in=CODE_REPLAY_MEMORY))
    await memory.begin_login(login(expires_in=CODE_REPLAY_MEMORY))
    await memory.revoke_jti("k", clock.now)
    assert (
        memory.memory.count("codes"),
        memory.memory.count("logins"),
        memory.memory.count("revoked_jtis"),
    ) == (1, 1, 1)
    assert sum(memory.evicted.values()) == 0  # expired, not evicted


# -- secrets at rest (MemoryStore) --------------------------------------------------------------


def strings_inside(value: object, seen: set[int] | None = None) -> Iterator[str]:
    """Every string reachable from `value`: keys, values, fields of records, recursively."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):  # a stored value (JSON)
        yield value.decode()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings_inside(key, seen)
            yield from strings_inside(item, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from strings_inside(item, seen)
    elif dataclasses.is_dataclass(value):
        for spec in dataclasses.fields(value):
            yield from strings_inside(getattr(value, spec.name), seen)
    elif hasattr(value, "__dict__") and not callable(value):
        yield from strings_inside(vars(value), seen)


async def test_no_secret_is_kept_in_clear(memory: MemoryStore) -> None:
    secrets = ["client-secret-value-0123456789"]
    await memory.save_client(client("client-1", secret=secrets[0]))
    secrets.append(await memory.begin_login(login()))
    unused_code = await memory.issue_code(code_grant())
    secrets.append(unused_code)
    code = await memory.issue_code(code_grant())
    secrets.append(code)
    redemption = await memory.consume_code(code, T0)
    assert isinstance(redemption, CodeRedemption)
    assert await memory.record_jti(redemption.family_id, "jti-1", T0 + 300)
    first = await memory.start_family(redemption.family(T0 + DAY))
    assert first is not None
    second = (await rotated(memory, first)).refresh_token
    secrets += [first, second, *first.split("."), *second.split(".")]
    await memory.record_consent("alice", "client-1", ["files:read"], T0 + 100)

    stored = " ".join(strings_inside(vars(memory)))
    for secret in secrets:
        assert secret not in stored
    # The walk did see the state, by the digests it is kept under.
    for secret in (secrets[1], unused_code, code, second, second.partition(".")[0]):
        assert digest(secret) in stored
    assert "upstream-verifier" in stored  # the one secret a login must keep to use it
    assert "jti-1" in stored


async def test_secrets_are_compared_in_constant_time(
    store: AuthStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert client(secret="s3cret").secret_matches("s3cret")
    assert compared == [(digest("s3cret"), digest("s3cret"))]
    _, token = await family(store)
    compared.clear()
    assert isinstance(await rotate(store, token), Rotated)
    assert compared == [(digest(token), digest(token))]


# -- sign-in sessions ---------------------------------------------------------------------------


def sign_in_session(**changes: Any) -> SignInSession:
    fields: dict[str, Any] = {"subject": "alice", "auth_time": T0, "expires_at": T0 + 1000,
                              "last_used": T0, "claims": {"groups": ["eng"]}}  # fmt: skip
    return SignInSession(**(fields | changes))


async def test_a_session_is_found_by_its_cookie_and_kept_only_as_a_digest(
    memory: MemoryStore,
) -> None:
    cookie = await memory.start_session(sign_in_session(), idle_timeout=100)
    assert len(cookie) >= 43  # 256 random bits
    found = await memory.find_session(cookie, T0 + 1, idle_timeout=100)
    assert found is not None
    assert (found.subject, dict(found.claims)) == ("alice", {"groups": ["eng"]})
    assert await memory.find_session(cookie + "x", T0 + 1, idle_timeout=100) is None
    space = memory.memory._spaces["sessions"]
    assert list(space) == [f"sessions:{digest(cookie)}"]
    assert all(cookie not in value.decode() for value, _ in space.values())


async def test_a_session_use_moves_its_idle_end_but_never_its_absolute_end(
    store: AuthStore, clock: Clock
) -> None:
    cookie = await store.start_session(sign_in_session(), idle_timeout=100)
    for step in (90, 180, 270):
        clock.now = T0 + step
        assert await store.find_session(cookie, clock.now, idle_timeout=100) is not None
    assert await store.find_session(cookie, T0 + 370, idle_timeout=100) is None  # idle
    cookie = await store.start_session(
        sign_in_session(expires_at=T0 + 150, last_used=T0), idle_timeout=100
    )
    clock.now = T0 + 90
    assert await store.find_session(cookie, clock.now, idle_timeout=100) is not None
    assert await store.find_session(cookie, T0 + 150, idle_timeout=100) is None  # absolute


async def test_an_ended_session_stays_ended(store: AuthStore) -> None:
    cookie = await store.start_session(sign_in_session(), idle_timeout=100)
    await store.end_session(cookie)
    await store.end_session(cookie)  # idempotent
    assert await store.find_session(cookie, T0 + 1, idle_timeout=100) is None
