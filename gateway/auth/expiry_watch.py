"""Open response streams, ended when the token that opened them expires.

One loop timer per expiry time, however many streams wait for it: a client's concurrent
streams usually hold one token, and a JWT's `exp` is a whole second, so the streams of tokens
that expire in the same second share one timer too. A stream costs an entry in a set rather
than a timer of its own (about half a kilobyte under uvloop, for every open stream).
"""

from __future__ import annotations

import asyncio
import time

from gateway.auth.revocation_watch import StreamCloser


class ExpiryWatch:
    """The open streams of one route's tokens, by the time their token expires."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: dict[float, tuple[asyncio.TimerHandle, set[StreamCloser]]] = {}

    @property
    def timers(self) -> int:
        """Expiry times being waited for (one loop timer each)."""
        return len(self._due)

    def watch(self, expires_at: float, close: StreamCloser) -> None:
        """Call `close("token_expired")` at `expires_at` (seconds since the epoch; at once if
        it has passed), unless `unwatch` comes first."""
        entry = self._due.get(expires_at)
        if entry is None:
            delay = max(expires_at - time.time(), 0.0)
            timer = asyncio.get_running_loop().call_later(delay, self._expire, expires_at)
            entry = self._due[expires_at] = (timer, set())
        entry[1].add(close)

    def unwatch(self, expires_at: float, close: StreamCloser) -> None:
        """The stream has ended: its timer goes with the last stream waiting on it."""
        entry = self._due.get(expires_at)
        if entry is None:
            return
        timer, closers = entry
        closers.discard(close)
        if not closers:
            timer.cancel()
            del self._due[expires_at]

    def _expire(self, expires_at: float) -> None:
        _, closers = self._due.pop(expires_at)
        for close in closers:
            close("token_expired")
