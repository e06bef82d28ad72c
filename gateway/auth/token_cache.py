"""Verified tokens, remembered until they expire, so the hot path repeats no crypto or I/O."""

from __future__ import annotations

from gateway.auth.principal import Principal


class TokenCache:
    """A bounded map from (resource, token) to the principal it was verified as.

    Entries go when their token expires (or earlier, at the `until` they were put with) or,
    when full, oldest first. A size of 0 disables it.
    """

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._entries: dict[tuple[str, str], tuple[Principal, float]] = {}

    def get(self, resource: str, token: str, now: float) -> Principal | None:
        key = (resource, token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        principal, until = entry
        if until <= now:
            del self._entries[key]
            return None
        return principal

    def put(
        self, resource: str, token: str, principal: Principal, *, until: float | None = None
    ) -> None:
        """Remember `principal` until its token expires, or until `until` if that is earlier
        (a verdict to trust only briefly, such as an introspection answer without `exp`)."""
        if self._max_size <= 0:
            return
        expiry = principal.expires_at if until is None else min(until, principal.expires_at)
        entries = self._entries
        entries.pop((resource, token), None)
        while len(entries) >= self._max_size:
            del entries[next(iter(entries))]
        entries[(resource, token)] = (principal, expiry)

    def __len__(self) -> int:
        return len(self._entries)
