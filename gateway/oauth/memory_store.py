"""The authorization server's state in one process (the embedded default): a `KvAuthStore` over
a bounded `MemoryKV`, each kind of item with its own limit."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields

from gateway.oauth.kv_store import JTIS_PER_FAMILY, KvAuthStore
from gateway.store.memory import MemoryKV


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """How many of each kind a `MemoryStore` keeps; past that, the least recently used goes
    first."""

    clients: int = 10_000
    logins: int = 10_000
    codes: int = 10_000
    families: int = 100_000
    revoked_jtis: int = 100_000
    """Size it above revocations per access-token lifetime: forgetting a revocation early
    makes that token valid again until its `exp` (counted in `MemoryStore.evicted`)."""
    consents: int = 100_000
    sessions: int = 100_000
    page_sign_ins: int = 10_000
    jtis_per_family: int = JTIS_PER_FAMILY
    """Live access tokens one family may hold (also the limit of a `KvAuthStore`)."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            if getattr(self, spec.name) < 1:
                raise ValueError(f"{spec.name} must be at least 1")

    def namespaces(self) -> dict[str, int]:
        """The `MemoryKV` limits: one namespace per kind (a family's handle goes with it)."""
        return {
            "clients": self.clients,
            "logins": self.logins,
            "codes": self.codes,
            "families": self.families,
            "handles": self.families,
            "revoked_jtis": self.revoked_jtis,
            "consents": self.consents,
            "sessions": self.sessions,
            "page_sign_ins": self.page_sign_ins,
        }


class MemoryStore(KvAuthStore):
    """`AuthStore` for one process (the embedded default): a `KvAuthStore` over a bounded
    `MemoryKV`. Nothing in it awaits, so each method also runs whole on the event loop."""

    def __init__(
        self, limits: MemoryLimits | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits = limits or MemoryLimits()
        self.memory = MemoryKV(limits.namespaces(), clock=clock)
        super().__init__(self.memory, clock=clock, jtis_per_family=limits.jtis_per_family)

    @property
    def evicted(self) -> Counter[str]:
        """Entries dropped for room, by kind (expired ones are not counted)."""
        return self.memory.evicted
