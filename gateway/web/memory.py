"""Giving memory back to the system once a burst of connections has ended.

What a process frees, the C library keeps for reuse: after a thousand streams close, the
gateway's resident memory stays at its peak, though most of it is free (glibc returns only the
top of its heap on its own). `malloc_trim(0)` hands every whole free page back. The listener
counts the connections that end (`OpenConnections`); once RELEASE_AFTER have ended since the
last release, one is made RELEASE_DELAY seconds later, when the rest of a burst has usually
closed too. So at most one a second, each a walk of the heap's free lists (about 2 ms when it
gives back 50 MB, microseconds when there is nothing to give). Where the C library has no
`malloc_trim` (musl, macOS), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gateway.observability.logging import get_logger

log = get_logger("gateway.memory")

RELEASE_AFTER = 256
"""Connections ended since the last release that make the next one due."""
RELEASE_DELAY = 1.0
"""Seconds from a release falling due to its being made."""

T = TypeVar("T")


def malloc_trim() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)` (1 if it gave memory back), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the process runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


def memory_release(loop: asyncio.AbstractEventLoop) -> MemoryRelease | None:
    """The release a listener on `loop` makes, where the C library can give memory back."""
    trim = malloc_trim()
    return MemoryRelease(loop, trim) if trim is not None else None


class MemoryRelease:
    """Makes a release (`trim`) RELEASE_DELAY seconds after `after` connections have ended."""

    __slots__ = ("_after", "_delay", "_ended", "_loop", "_timer", "_trim")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        trim: Callable[[], int],
        *,
        after: int = RELEASE_AFTER,
        delay: float = RELEASE_DELAY,
    ) -> None:
        self._loop = loop
        self._trim = trim
        self._after = after
        self._delay = delay
        self._ended = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        """A release is due and waits for its delay."""
        return self._timer is not None

    def ended(self) -> None:
        """One connection has ended."""
        self._ended += 1
        if self._ended >= self._after and self._timer is None:
            self._timer = self._loop.call_later(self._delay, self._release)

    def cancel(self) -> None:
        """No release is made now, even if one is due."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        self._timer = None
        ended, self._ended = self._ended, 0
        started = self._loop.time()
        released = self._trim()
        log.debug(
            "memory_released",
            connections_ended=ended,
            released=bool(released),
            ms=round(1e3 * (self._loop.time() - started), 2),
        )


class OpenConnections(Generic[T]):
    """A listener's open connections; each one that ends is told to `release`, if any."""

    __slots__ = ("_open", "_release")

    def __init__(self, release: MemoryRelease | None = None) -> None:
        self._open: set[T] = set()
        self._release = release

    def add(self, conn: T) -> None:
        self._open.add(conn)

    def discard(self, conn: T) -> None:
        if conn in self._open:
            self._open.discard(conn)
            if self._release is not None:
                self._release.ended()

    def __iter__(self) -> Iterator[T]:
        """A snapshot: connections may end while it is walked."""
        return iter(list(self._open))

    def close(self) -> None:
        """The listener has stopped: no release is made after it."""
        if self._release is not None:
            self._release.cancel()
            self._release = None
