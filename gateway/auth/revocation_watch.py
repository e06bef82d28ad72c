"""Open response streams of revocable tokens, closed when their token is revoked.

A token is checked for revocation when a request arrives; a stream it opened then lives on, so
the streams of tokens the gateway minted itself are watched: checked again at once when this
replica revokes something (`check_now`), and, with a store shared between replicas, every
`interval` seconds while any such stream is open (a revocation made through another replica
reaches this one's streams within that time). Nothing runs while no stream is watched.

A check the store cannot answer closes the stream too (fail closed): the client reconnects, and
its new request gets 503 until the store is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.auth.principal import Principal
from gateway.observability.logging import get_logger

log = get_logger("gateway.auth")

StreamCloser = Callable[[str], None]
"""Ends one stream, given the reason: `token_revoked` or `revocation_unavailable`."""


class RevocationWatch:
    """The open streams of one issuer's tokens, by `jti`."""

    def __init__(
        self, issuer: str, is_revoked: Callable[[str], Awaitable[bool]], *, interval: float
    ) -> None:
        """`interval`: seconds between checks while streams are open; 0 for a store only this
        process writes (every revocation then goes through `check_now`)."""
        self.issuer = issuer
        self._is_revoked = is_revoked
        self._interval = interval
        self._streams: dict[str, set[StreamCloser]] = {}
        self._periodic: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

    def watch(self, principal: Principal, close: StreamCloser) -> Callable[[], None] | None:
        """Call `close(reason)` if the token behind a stream is revoked while it is open.
        Returns what stops watching (call it when the stream ends), or None for a token this
        issuer did not mint."""
        jti = principal.token_id
        if principal.issuer != self.issuer or jti is None:
            return None
        self._streams.setdefault(jti, set()).add(close)
        if self._interval > 0:
            if self._periodic is None:
                self._periodic = asyncio.get_running_loop().create_task(self._every_interval())
        else:
            # Revoked between the request's check and now? (A store in this process: cheap.)
            self._spawn([jti])

        def unwatch() -> None:
            closers = self._streams.get(jti)
            if closers is not None:
                closers.discard(close)
                if not closers:
                    del self._streams[jti]
            if not self._streams and self._periodic is not None:
                self._periodic.cancel()
                self._periodic = None

        return unwatch

    def check_now(self) -> None:
        """Something may have been revoked: check every watched token now (in the background)."""
        if self._streams:
            self._spawn(list(self._streams))

    def __len__(self) -> int:
        return len(self._streams)

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._check(list(self._streams))

    def _spawn(self, jtis: list[str]) -> None:
        task = asyncio.get_running_loop().create_task(self._check(jtis))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check(self, jtis: list[str]) -> None:
        answers = await asyncio.gather(*map(self._is_revoked, jtis), return_exceptions=True)
        failed = 0
        for jti, answer in zip(jtis, answers, strict=True):
            if answer is False:
                continue
            if isinstance(answer, asyncio.CancelledError):
                raise answer
            if isinstance(answer, BaseException):
                failed += 1
            reason = "token_revoked" if answer is True else "revocation_unavailable"
            for close in list(self._streams.get(jti, ())):
                close(reason)
        if failed:
            log.warning("revocation_check_failed", issuer=self.issuer, tokens=failed)
