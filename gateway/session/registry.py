"""This replica's view of live sessions and streams: ownership checks, limits, ending, reaping.

The sealed id is the source of truth for *who* owns a session (any replica can check it); the
registry adds what needs memory: which sessions have ended (so an ended id gets 404 even from an
upstream that would answer 400), when each was last used (idle reaping), and how many sessions
and response streams (GET, or an event stream answering a POST) each principal and the whole
gateway hold (limits).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.model import SessionSettings
from gateway.errors import CapacityError, SessionNotFoundError, TooManyError, TooManyStreamsError
from gateway.session.seal import Owner, SessionClaims, SessionSealer

if TYPE_CHECKING:
    from gateway.session.shared import SharedSessions

MAX_ENDED = 100_000
"""Ended session ids remembered (each until it would have expired anyway)."""


class SessionRejectedError(SessionNotFoundError):
    """A session id that may not be used; `reason` is for the audit log only, never the client:
    unknown (not ours, forged, malformed), foreign (another principal's), expired, ended."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"session {reason}")
        self.reason = reason


@dataclass(eq=False, slots=True)
class Session:
    """A live session as this replica knows it."""

    session_id: str
    route: str
    upstream_id: str
    owner: Owner
    limit_key: object
    """What its per-principal limit counts against (see `limit_key`)."""
    expires_at: float
    """Wall-clock end of its lifetime (`max_lifetime` after it was minted)."""
    last_seen: float
    streams: set[Callable[[], None]] = field(default_factory=set)
    """Closers of the response streams open on it, called when the session ends."""
    ended: bool = False
    adopted: bool = False
    """Minted by another replica (or before a restart) and not yet checked against the
    sessions ended elsewhere (see `gateway.session.shared`)."""


class SessionRegistry:
    def __init__(
        self,
        settings: SessionSettings,
        sealer: SessionSealer,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._sealer = sealer
        self._clock = clock
        self._live: dict[str, Session] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # session id -> its expiry
        self._per_owner: dict[object, int] = {}
        self.streams_open = 0
        self._streams_per_key: dict[object, int] = {}
        self.stalled_stream_timeout = settings.stalled_stream_timeout
        """Seconds a response stream may wait on a client that does not read."""
        self.shared: SharedSessions | None = None
        """With replicas: where ends and activity are shared (set by the app)."""

    def __len__(self) -> int:
        return len(self._live)

    # -- sessions ---------------------------------------------------------------------------

    def check_room(self, limit_key: object) -> None:
        """Before forwarding an `initialize`: refuse a session the limits would not admit."""
        if self._per_owner.get(limit_key, 0) >= self._settings.max_per_principal:
            raise TooManyError("session limit per principal reached")
        if len(self._live) >= self._settings.max_total:
            raise CapacityError("session limit reached")

    def mint(self, route: str, upstream_id: str, owner: Owner, limit_key: object) -> Session:
        """A new session for `owner` around the upstream's id; returns it with its sealed id."""
        now = self._clock()
        session_id = self._sealer.seal(route, SessionClaims(upstream_id, owner, int(now)))
        session = self._admit(
            Session(session_id, route, upstream_id, owner, limit_key, now + self._lifetime, now)
        )
        if self.shared is not None:
            self.shared.used(session)
        return session

    def resolve(self, route: str, session_id: str, owner: Owner, limit_key: object) -> Session:
        """The session a request names, if the request's principal owns it; else raises
        `SessionRejectedError`, whose 404 is the same whatever the reason."""
        now = self._clock()
        session = self._live.get(session_id)
        if session is None:
            if session_id in self._ended:
                raise SessionRejectedError("ended")
            claims = self._sealer.open(route, session_id)
            if claims is None:
                raise SessionRejectedError("unknown")
            expires_at = claims.created + self._lifetime
            if claims.owner != owner:
                raise SessionRejectedError("foreign")
            if expires_at <= now:
                raise SessionRejectedError("expired")
            # Minted by another replica, or by this one before a restart with the same keys.
            session = self._admit(
                Session(session_id, route, claims.upstream_id, owner, limit_key, expires_at, now)
            )
            session.adopted = self.shared is not None
        elif session.route != route or session.owner != owner:
            raise SessionRejectedError("foreign" if session.route == route else "unknown")
        elif session.expires_at <= now:
            self.end(session)
            raise SessionRejectedError("expired")
        session.last_seen = now
        return session

    def end(self, session: Session) -> None:
        """End a session here: its id gets 404 from now on and its GET streams close."""
        if session.ended:
            return
        session.ended = True
        del self._live[session.session_id]
        key = session.limit_key
        remaining = self._per_owner[key] - 1
        if remaining:
            self._per_owner[key] = remaining
        else:
            del self._per_owner[key]
        self._ended[session.session_id] = session.expires_at
        while len(self._ended) > MAX_ENDED:
            self._ended.popitem(last=False)
        for close in list(session.streams):
            close()
        if self.shared is not None:
            self.shared.ended(session)

    def idle(self) -> list[Session]:
        """Sessions past their lifetime, or idle longer than `idle_timeout` with no open
        stream; the caller ends them (and tells their upstreams)."""
        now = self._clock()
        idle_before = now - self._settings.idle_timeout
        self._forget_ended(now)
        return [
            s
            for s in self._live.values()
            if s.expires_at <= now or (not s.streams and s.last_seen <= idle_before)
        ]

    def touch(self, session: Session) -> None:
        """The session was used here (and so, for the other replicas, is in use)."""
        session.last_seen = self._clock()
        if self.shared is not None:
            self.shared.used(session)

    def keep(self, session: Session) -> None:
        """Not idle after all (in use through another replica): restart its idle time here
        without announcing use, so idle replicas cannot keep each other's sessions alive."""
        session.last_seen = self._clock()

    # -- streams ----------------------------------------------------------------------------

    def open_stream(self, key: object, *, enforce: bool = True) -> None:
        """Count a new response stream for `key` (an owner, or a client address when
        anonymous); with `enforce`, refuse one the limits would not admit (429, or 503)."""
        if enforce:
            if self._streams_per_key.get(key, 0) >= self._settings.max_streams_per_principal:
                raise TooManyStreamsError("stream limit per principal reached")
            if self.streams_open >= self._settings.max_streams:
                raise CapacityError("stream limit reached")
        self._streams_per_key[key] = self._streams_per_key.get(key, 0) + 1
        self.streams_open += 1

    def close_stream(self, key: object) -> None:
        remaining = self._streams_per_key[key] - 1
        if remaining:
            self._streams_per_key[key] = remaining
        else:
            del self._streams_per_key[key]
        self.streams_open -= 1

    def stream_slot(self, key: object) -> StreamSlot:
        """A place in the stream limits for one response that may stream, taken on demand."""
        return StreamSlot(self, key)

    # -- internals --------------------------------------------------------------------------

    @property
    def _lifetime(self) -> float:
        return self._settings.max_lifetime

    def _admit(self, session: Session) -> Session:
        self._live[session.session_id] = session
        key = session.limit_key
        self._per_owner[key] = self._per_owner.get(key, 0) + 1
        return session

    def _forget_ended(self, now: float) -> None:
        # Entries are in ending order, close to expiry order: drop expired ones from the front.
        while self._ended:
            session_id, expires_at = next(iter(self._ended.items()))
            if expires_at > now:
                break
            del self._ended[session_id]


class StreamSlot:
    """One response's place in the stream limits: taken at most once, released at most once,
    however the response ends."""

    __slots__ = ("_key", "_registry", "held")

    def __init__(self, registry: SessionRegistry, key: object) -> None:
        self._registry = registry
        self._key = key
        self.held = False

    def take(self, *, enforce: bool = True) -> None:
        """Count the stream (a no-op if it already counts); see `SessionRegistry.open_stream`."""
        if not self.held:
            self._registry.open_stream(self._key, enforce=enforce)
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._registry.close_stream(self._key)


def limit_key(owner: Owner, client_address: str | None) -> object:
    """What per-principal limits count against: the principal (a token fingerprint does not
    make a new one); on a route without authentication, the client's address."""
    if owner.issuer is None:
        return ("address", client_address)
    if owner.token_fingerprint is None:
        return owner
    return Owner(owner.issuer, owner.subject, owner.client_id)
