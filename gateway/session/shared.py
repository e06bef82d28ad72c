"""What replicas must agree on about sessions, kept in the shared store (Redis).

A sealed session id already tells any replica who owns it; what it cannot tell is whether the
session has ended elsewhere (a DELETE through another replica) or is still in use elsewhere
(so this replica must not reap it as idle and DELETE it at the upstream). Both live in the
store, and both are throttled so a session costs the store about one write per quarter of
`idle_timeout` and one read per replica that first sees it, never a round trip per request:

- `sessions-ended:<digest>`: set when a session ends (client DELETE, upstream 404, reaping),
  until the session would have expired; a replica checks it when it first sees an id minted
  elsewhere, and refuses the id (404) if it is there, or answers 503 if the store is down.
- `sessions-active:<digest>`: refreshed while a replica forwards requests in the session,
  expiring after `idle_timeout`; a replica about to reap a session it thinks idle keeps it if
  the marker is there (in use through another replica), and keeps it too if the store cannot
  say (reaping is housekeeping: it never outweighs a client's live session).

Keys hold digests of session ids, never the ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

from gateway.config.model import SessionSettings
from gateway.observability.logging import get_logger
from gateway.session.registry import Session
from gateway.store.kv import KeyValueStore, StoreUnavailableError

log = get_logger("gateway.session")


class SharedSessions:
    def __init__(
        self,
        kv: KeyValueStore,
        settings: SessionSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self._idle = settings.idle_timeout
        self._clock = clock
        self._written: dict[str, float] = {}  # session id -> when its activity was last written
        self._tasks: set[asyncio.Task[None]] = set()

    async def ended_elsewhere(self, session: Session) -> bool:
        """Whether another replica ended `session` (raises `StoreUnavailableError`)."""
        return await self._kv.get(_ended(session)) is not None

    def ended(self, session: Session) -> None:
        """Tell the other replicas, in the background (the caller has answered already)."""
        self._written.pop(session.session_id, None)
        ttl = max(session.expires_at - self._clock(), 1.0)
        self._spawn(self._kv.set(_ended(session), b"1", ttl), "ended")

    def used(self, session: Session) -> None:
        """Note that `session` is in use here, at most every quarter of `idle_timeout`."""
        now = self._clock()
        if now - self._written.get(session.session_id, float("-inf")) < self._idle / 4:
            return
        self._written[session.session_id] = now
        self._spawn(self._kv.set(_active(session), b"1", self._idle), "active")

    async def used_elsewhere(self, session: Session) -> bool:
        """Whether the session is in use through any replica; True when the store cannot say."""
        try:
            return await self._kv.get(_active(session)) is not None
        except StoreUnavailableError:
            return True

    def _spawn(self, write: Awaitable[None], what: str) -> None:
        async def run() -> None:
            try:
                await write
            except StoreUnavailableError:  # counted and logged by the store; the upstream
                log.warning("session_state_not_shared", what=what)  # still guards the session

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Let pending writes finish (they are bounded by the store's timeout)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _digest(session: Session) -> str:
    return hashlib.sha256(session.session_id.encode()).hexdigest()


def _ended(session: Session) -> str:
    return f"sessions-ended:{_digest(session)}"


def _active(session: Session) -> str:
    return f"sessions-active:{_digest(session)}"
