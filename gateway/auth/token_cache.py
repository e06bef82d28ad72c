"""Verified tokens, remembered until they expire, so the hot path repeats no crypto or I/O."""

from __future__ import annotations

from gateway.auth.principal import Principal


class TokenCache:
    """A bounded map from (resource, token) to the principal it was verified as.

    Entries go when their token expires or, when full, oldest first. A size of 0 disables it.
    """

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._entries: dict[tuple[str, str], Principal] = {}

    def get(self, resource: str, token: str, now: float) -> Principal | None:
        key = (resource, token)
        principal = self._entries.get(key)
        if principal is None:
            return None
        if principal.expires_at <= now:
            del self._entries[key]
            return None
        return principal

    def put(self, resource: str, token: str, principal: Principal) -> None:
        if self._max_size <= 0:
            return
        entries = self._entries
        while len(entries) >= self._max_size:
            del entries[next(iter(entries))]
        entries[(resource, token)] = principal

    def __len__(self) -> int:
        return len(self._entries)
