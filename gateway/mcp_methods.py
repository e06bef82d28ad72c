"""The JSON-RPC methods MCP defines, and the spellings that only look like them.

Pure data and functions, no I/O. The set covers every request and notification, in either
direction, of the revisions the gateway carries: 2025-03-26, 2025-06-18, 2025-11-25 (schema and
"basic/utilities/tasks") and 2026-07-28 ("basic/patterns/subscriptions", `server/discover`, the
tasks extension's `tasks/update`). Methods a revision removed stay known: an older client may
still send them, and an upstream may still serve them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Final

KNOWN_METHODS: Final = frozenset(
    {
        # Lifecycle and utilities
        "initialize",
        "ping",
        "server/discover",
        "logging/setLevel",
        "completion/complete",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        # Server features
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "subscriptions/listen",
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
        "notifications/prompts/list_changed",
        "notifications/subscriptions/acknowledged",
        # Client features (requests a server sends; their responses come back by POST)
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "notifications/roots/list_changed",
        "notifications/elicitation/complete",
        # Tasks (2025-11-25 core, 2026-07-28 extension)
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
        "tasks/update",
        "notifications/tasks/status",
    }
)


def folded(method: str) -> str:
    """`method` with what a lenient server might ignore taken out: compatibility forms (NFKC),
    case, whitespace, control and format characters (zero-width spaces, BOM)."""
    text = unicodedata.normalize("NFKC", method)
    return "".join(
        ch for ch in text if not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf")
    ).casefold()


class MethodSet:
    """A set of method names that also recognises look-alikes of its members."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self._folded = {folded(name): name for name in self.names}

    def __contains__(self, method: object) -> bool:
        return method in self.names

    def variant_of(self, method: str) -> str | None:
        """The member `method` is a look-alike of (same `folded` form, another spelling), or
        None: a member itself, or unlike all of them."""
        if method in self.names:
            return None
        return self._folded.get(folded(method))


MCP_METHODS: Final = MethodSet(KNOWN_METHODS)
