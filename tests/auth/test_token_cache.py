from __future__ import annotations

from gateway.auth.principal import Principal
from gateway.auth.token_cache import TokenCache


def principal(expires_at: float) -> Principal:
    return Principal("iss", "sub", "client", frozenset(), expires_at)


def test_entries_expire_with_their_token() -> None:
    cache = TokenCache(10)
    cache.put("r", "t", principal(100))
    assert cache.get("r", "t", 99) == principal(100)
    assert cache.get("r", "t", 100) is None
    assert len(cache) == 0


def test_entries_are_per_resource() -> None:
    cache = TokenCache(10)
    cache.put("r1", "t", principal(100))
    assert cache.get("r2", "t", 0) is None


def test_size_is_bounded_oldest_first() -> None:
    cache = TokenCache(2)
    for token in ("a", "b", "c"):
        cache.put("r", token, principal(100))
    assert len(cache) == 2
    assert cache.get("r", "a", 0) is None
    assert cache.get("r", "c", 0) is not None


def test_size_zero_disables_the_cache() -> None:
    cache = TokenCache(0)
    cache.put("r", "t", principal(100))
    assert cache.get("r", "t", 0) is None


def test_a_brief_verdict_is_trusted_only_until_its_own_deadline() -> None:
    cache = TokenCache(10)
    cache.put("r", "t", principal(200), until=105)
    assert cache.get("r", "t", 104.9) == principal(200)
    assert cache.get("r", "t", 105) is None
    assert len(cache) == 0


def test_a_deadline_after_the_tokens_expiry_never_extends_it() -> None:
    cache = TokenCache(10)
    cache.put("r", "t", principal(100), until=500)
    assert cache.get("r", "t", 99) is not None
    assert cache.get("r", "t", 100) is None
