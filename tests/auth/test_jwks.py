"""The JWKS cache's timing rules, with an injected clock and key source.

The key source here is a plain async function returning a JWKS document (or failing as the
HTTP fetcher does); the whole path over real sockets is tested in tests/auth/test_token_validation
and tests/security/test_auth_findings.
"""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.jwk import ECKey, KeySet

from gateway.auth.fetch import FetchError
from gateway.auth.jwks import JwksCache, KeysUnavailableError, retry_delay

KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"})


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (5, 2.0), (1000, 2.0)],
    ids=["first", "second", "third", "capped", "stays-capped", "many"],
)
def test_retry_delay_doubles_up_to_two_seconds(failures: int, delay: float) -> None:
    assert retry_delay(failures) == delay


class Source:
    """A key source that is up or down, counting fetches, on a clock the test moves."""

    def __init__(self) -> None:
        self.up = True
        self.fetches = 0
        self.now = 1000.0

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        if not self.up:
            raise FetchError("ClientConnectorError")
        return dict(KeySet([KEY]).as_dict(private=False))

    def clock(self) -> float:
        return self.now


def cache(source: Source, cooldown: float = 30.0) -> JwksCache:
    return JwksCache(source.fetch, cache_ttl=600.0, cooldown=cooldown, clock=source.clock)


async def test_while_the_source_fails_it_is_retried_after_a_short_backoff() -> None:
    source = Source()
    source.up = False
    keys = cache(source)
    with pytest.raises(KeysUnavailableError):
        await keys.keys_for("k1")
    source.now += 0.2  # before the first retry: refused without a fetch
    with pytest.raises(KeysUnavailableError):
        await keys.keys_for("k1")
    assert source.fetches == 1
    source.now += 0.1  # 0.3 s after the failure: tried again (and fails again)
    with pytest.raises(KeysUnavailableError):
        await keys.keys_for("k1")
    assert source.fetches == 2
    source.up = True
    source.now += 0.5  # the second wait is 0.5 s, far below the 30 s cooldown
    assert [key.kid for key in await keys.keys_for("k1")] == ["k1"]
    assert source.fetches == 3


async def test_while_healthy_an_unknown_kid_refetches_once_per_cooldown() -> None:
    source = Source()
    keys = cache(source, cooldown=30.0)
    assert await keys.keys_for("k1")
    source.now += 10
    assert await keys.keys_for("k-unknown") == []  # within the cooldown: no fetch
    assert source.fetches == 1
    source.now += 25
    assert await keys.keys_for("k-unknown") == []  # after it: one refetch
    assert source.fetches == 2


async def test_a_failed_refetch_for_a_new_kid_keeps_the_cached_keys_serving() -> None:
    source = Source()
    keys = cache(source, cooldown=1.0)
    assert await keys.keys_for("k1")
    source.up = False
    source.now += 2
    with pytest.raises(KeysUnavailableError):
        await keys.keys_for("k2")  # a rotation while the source is down: fail closed
    assert await keys.keys_for("k1")  # the known key still verifies, without a fetch
    assert source.fetches == 2
