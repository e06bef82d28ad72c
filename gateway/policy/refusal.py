"""What a refused call's JSON-RPC error says, for a person to act on (pure, no I/O).

A client that steps up reads the 403's `WWW-Authenticate` challenge; a host that shows errors
instead shows this message, so it names the call, the scopes it needs, the scopes the token has
and what to do: "write_file needs files:write; this client's token has files:read. Re-authorize
with files:write." Names come from the client's request: they are shortened, and JSON encoding
keeps them inert.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

MAX_NAME = 80
MAX_LISTED = 5


class Refusal(NamedTuple):
    """One call the token lacks scopes for."""

    name: str
    """The tool or prompt name, resource URI, or the method of an unnamed call."""
    required: frozenset[str]


def _name(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


def _scopes(scopes: Iterable[str]) -> str:
    return " ".join(sorted(scopes)) or "no scope"


def _names(names: Sequence[str | None]) -> str:
    shown = [_name(n) if n is not None else "this request" for n in names[:MAX_LISTED]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def insufficient_scope_message(
    refusals: Sequence[Refusal], granted: frozenset[str], unattainable: frozenset[str]
) -> str:
    """The message of a 403 insufficient_scope: each refused call and what it needs, what the
    token has, and the scopes to re-authorize with (or, for scopes this user cannot be
    granted, that re-authorizing will not help)."""
    needs = "; ".join(f"{_name(r.name)} needs {_scopes(r.required)}" for r in refusals[:MAX_LISTED])
    if len(refusals) > MAX_LISTED:
        needs += f"; and {len(refusals) - MAX_LISTED} more"
    has = (
        f"this client's token has {_scopes(granted)}"
        if granted
        else "this client's token has no scope"
    )
    wanted = frozenset().union(*(r.required for r in refusals)) - granted
    if unattainable:
        advice = (
            f"This user cannot be granted {_scopes(unattainable)}: ask an administrator for access."
        )
    else:
        advice = f"Re-authorize with {_scopes(wanted)}."
    return f"{needs}; {has}. {advice}"


def denied_message(names: Sequence[str | None]) -> str:
    """The message of a 403 forbidden: no scope unlocks these calls."""
    verb = "is" if len(names) == 1 else "are"
    return (
        f"{_names(names)} {verb} not available here: the gateway's policy denies "
        f"{'it' if len(names) == 1 else 'them'} whatever the scopes."
    )
