"""`KeyValueStore` on Redis: the state that replicas share.

Each operation is one Redis command or one Lua script, so it is atomic on the server however
many replicas race: `take` is GETDEL (Redis >= 6.2), `compare_and_set` and `increment` are
scripts. Failing closed is the point of the error handling: any Redis error, timeout or socket
error becomes `StoreUnavailableError` (a 503), never an "absent" answer.

There are no retries: a command whose reply was lost may have run, and running `take`,
`compare_and_set` or `increment` twice is not the same as once. Recovery needs none either: a
failed connection is dropped, and the next call gets a fresh one from the pool, so the same
`RedisKV` works again as soon as Redis is back. The password lives only in the pool's connection
settings: no error detail, log line or repr here carries it, nor any key or value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from gateway.errors import StoreUnavailableError
from gateway.store.kv import Script

__all__ = ["RedisKV"]

# KEYS[1] the key; ARGV[1] "1" if a current value is expected (else: only if absent),
# ARGV[2] that value, ARGV[3] the new value, ARGV[4] the TTL in milliseconds.
_COMPARE_AND_SET: Final = """
if ARGV[1] == '0' then
  if redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4], 'NX') then return 1 end
  return 0
end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
"""

# KEYS[1] the counter; ARGV[1] the window in milliseconds, started by the first increment only.
_INCREMENT: Final = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""

_FAILURES: Final = (RedisError, OSError, TimeoutError)
"""What a Redis call can raise when it could not tell: all of it means "unavailable"."""

_DETAIL_LIMIT: Final = 300


def _milliseconds(ttl: float) -> int:
    """A TTL for PX/PEXPIRE: rounded up, so an entry never lives shorter than asked, and >= 1
    (Redis refuses 0)."""
    return max(1, math.ceil(ttl * 1000))


def _endpoint(url: str) -> str:
    """`host:port/db` of `url`, for error details: never the user or password."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis URL must be redis:// or rediss://, not {parts.scheme!r}://")
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the Redis URL has an invalid port") from None
    return f"{parts.scheme}://{host}:{port}{parts.path or '/0'}"


def _bytes(value: bytes | str | None) -> bytes | None:
    # The pool never decodes replies; a str would only come from a changed client setting.
    return value.encode() if isinstance(value, str) else value


class RedisKV:
    """The Redis backend of `KeyValueStore`.

    Args:
        url: ``redis://[[user]:password@]host:port/db`` or ``rediss://`` (TLS).
        prefix: Prepended to every key, so several gateways (or tests) can share one Redis.
        timeout: Seconds for connecting, for each reply, and for waiting for a free pooled
            connection: past it the call fails closed instead of holding the request.
        max_connections: The pool's size; calls beyond it wait (up to `timeout`) for one.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "mcp-gateway:",
        timeout: float = 2.0,
        max_connections: int = 50,
    ) -> None:
        if timeout <= 0 or max_connections < 1:
            raise ValueError("timeout must be > 0 and max_connections >= 1")
        self._endpoint = _endpoint(url)
        password = urlsplit(url).password
        # Both spellings, to scrub from error texts (redis-py sends the unquoted one).
        self._secrets = tuple({password, unquote(password)}) if password else ()
        self._prefix = prefix
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # never resend: see the module docstring
            decode_responses=False,
            # Off, because "auto" also turns off the pool's check that an idle connection is
            # still open: after a Redis restart each stale connection would fail one call.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._client: Redis = Redis.from_pool(pool)
        self._compare_and_set = self._client.register_script(_COMPARE_AND_SET)
        self._increment = self._client.register_script(_INCREMENT)

    def __repr__(self) -> str:
        return f"<RedisKV {self._endpoint} prefix={self._prefix!r}>"

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _unavailable(self, operation: str, exc: BaseException) -> StoreUnavailableError:
        """The error to raise for a failed call: what failed and why, without the password, the
        key (keys can hold codes or token ids) or any value."""
        reason = str(exc)
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        reason = reason[:_DETAIL_LIMIT]
        return StoreUnavailableError(
            f"redis {operation} at {self._endpoint} failed: {type(exc).__name__}: {reason}"
        )

    async def get(self, key: str) -> bytes | None:
        try:
            return _bytes(await self._client.get(self._key(key)))
        except _FAILURES as exc:
            raise self._unavailable("GET", exc) from None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self._client.set(self._key(key), value, px=_milliseconds(ttl))
        except _FAILURES as exc:
            raise self._unavailable("SET", exc) from None

    async def take(self, key: str) -> bytes | None:
        try:
            return _bytes(await self._client.getdel(self._key(key)))
        except _FAILURES as exc:
            raise self._unavailable("GETDEL", exc) from None

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        args = ("0", b"") if expected is None else ("1", expected)
        try:
            done = await self._compare_and_set(
                keys=[self._key(key)], args=[*args, value, _milliseconds(ttl)]
            )
        except _FAILURES as exc:
            raise self._unavailable("compare-and-set", exc) from None
        return int(done) == 1

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete(self._key(key))
        except _FAILURES as exc:
            raise self._unavailable("DEL", exc) from None

    async def increment(self, key: str, ttl: float) -> int:
        try:
            count = await self._increment(keys=[self._key(key)], args=[_milliseconds(ttl)])
        except _FAILURES as exc:
            raise self._unavailable("increment", exc) from None
        return int(count)

    def script(self, text: str) -> Script:
        """A Lua script, run as one command (EVALSHA, or EVAL when Redis does not hold it yet,
        e.g. after a restart), its keys prefixed like every key, its failures fail closed."""
        registered = self._client.register_script(text)

        async def run(keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
            try:
                return await registered(keys=[self._key(key) for key in keys], args=list(args))
            except _FAILURES as exc:
                raise self._unavailable("script", exc) from None

        return run

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except _FAILURES as exc:
            raise self._unavailable("PING", exc) from None

    async def close(self) -> None:
        """Close the client and disconnect every pooled connection."""
        try:
            await self._client.aclose()
        except _FAILURES as exc:
            raise self._unavailable("close", exc) from None
