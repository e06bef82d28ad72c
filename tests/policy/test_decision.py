"""The decision function, table-tested: (granted scopes, call) -> allow | insufficient | deny."""

from __future__ import annotations

import pytest

from gateway.policy.decision import Allow, Decision, Deny, InsufficientScope, RoutePolicy
from gateway.policy.scopes import ScopeCycleError, ScopeImplications

IMPLIES = ScopeImplications({"files:admin": ["files:write"], "files:write": ["files:read"]})


def policy(**overrides: object) -> RoutePolicy:
    settings: dict[str, object] = {
        "baseline": ["mcp:tools"],
        "default": None,
        "tools": {
            "read_file": ["files:read"],
            "write_file": ["files:write"],
            "delete_*": ["files:admin"],
            "delete_draft": ["files:write"],
            "delete_t*": "deny",
            "drop_database": "deny",
            "ping_*": [],
        },
        "resources": {"file:///public/*": [], "file:///secret/*": "deny"},
        "prompts": {"summarise": ["mcp:prompts", "files:read"]},
        "implications": IMPLIES,
    }
    settings.update(overrides)
    return RoutePolicy(**settings)  # type: ignore[arg-type]


def outcome(decision: Decision) -> tuple[str, frozenset[str] | None, str]:
    if isinstance(decision, InsufficientScope):
        return ("insufficient", decision.required, decision.rule)
    return ("allow" if isinstance(decision, Allow) else "deny", None, decision.rule)


CASES = [
    # (id, granted, method, name, expected kind, required, rule)
    (
        "exact-allowed",
        {"files:read"},
        "tools/call",
        "read_file",
        "allow",
        None,
        "tools['read_file']",
    ),
    (
        "exact-missing",
        {"mcp:tools"},
        "tools/call",
        "write_file",
        "insufficient",
        {"files:write"},
        "tools['write_file']",
    ),
    (
        "implied-one-step",
        {"files:write"},
        "tools/call",
        "read_file",
        "allow",
        None,
        "tools['read_file']",
    ),
    (
        "implied-chain",
        {"files:admin"},
        "tools/call",
        "read_file",
        "allow",
        None,
        "tools['read_file']",
    ),
    (
        "narrower-does-not-imply-broader",
        {"files:read"},
        "tools/call",
        "write_file",
        "insufficient",
        {"files:write"},
        "tools['write_file']",
    ),
    ("pattern", {"files:admin"}, "tools/call", "delete_all", "allow", None, "tools['delete_*']"),
    (
        "pattern-missing",
        {"files:write"},
        "tools/call",
        "delete_all",
        "insufficient",
        {"files:admin"},
        "tools['delete_*']",
    ),
    (
        "exact-beats-pattern",
        {"files:write"},
        "tools/call",
        "delete_draft",
        "allow",
        None,
        "tools['delete_draft']",
    ),
    (
        "more-specific-pattern-first",
        {"files:admin"},
        "tools/call",
        "delete_tmp",
        "deny",
        None,
        "tools['delete_t*']",
    ),
    (
        "deny-entry-whatever-the-scopes",
        {"files:admin", "mcp:tools"},
        "tools/call",
        "drop_database",
        "deny",
        None,
        "tools['drop_database']",
    ),
    ("empty-requirement", set(), "tools/call", "ping_me", "allow", None, "tools['ping_*']"),
    (
        "default-is-baseline",
        {"mcp:tools"},
        "tools/call",
        "unlisted",
        "allow",
        None,
        "default (baseline scopes)",
    ),
    (
        "default-is-baseline-missing",
        set(),
        "tools/call",
        "unlisted",
        "insufficient",
        {"mcp:tools"},
        "default (baseline scopes)",
    ),
    (
        "resource-pattern-public",
        set(),
        "resources/read",
        "file:///public/a.txt",
        "allow",
        None,
        "resources['file:///public/*']",
    ),
    (
        "resource-denied",
        {"files:admin"},
        "resources/subscribe",
        "file:///secret/k",
        "deny",
        None,
        "resources['file:///secret/*']",
    ),
    (
        "prompt-needs-all",
        {"mcp:prompts"},
        "prompts/get",
        "summarise",
        "insufficient",
        {"mcp:prompts", "files:read"},
        "prompts['summarise']",
    ),
    (
        "prompt-all-present",
        {"mcp:prompts", "files:write"},
        "prompts/get",
        "summarise",
        "allow",
        None,
        "prompts['summarise']",
    ),
    ("other-method-baseline", {"mcp:tools"}, "tools/list", None, "allow", None, "baseline scopes"),
    (
        "other-method-baseline-missing",
        {"files:admin"},
        "initialize",
        None,
        "insufficient",
        {"mcp:tools"},
        "baseline scopes",
    ),
    (
        "names-are-case-sensitive",
        {"files:read"},
        "tools/call",
        "READ_FILE",
        "insufficient",
        {"mcp:tools"},
        "default (baseline scopes)",
    ),
]


@pytest.mark.parametrize(
    ("granted", "method", "name", "kind", "required", "rule"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    granted: set[str],
    method: str,
    name: str | None,
    kind: str,
    required: set[str] | None,
    rule: str,
) -> None:
    decision = policy().decide(frozenset(granted), method, name)
    expected_required = frozenset(required) if required is not None else None
    assert outcome(decision) == (kind, expected_required, rule)


@pytest.mark.parametrize(
    ("default", "granted", "kind"),
    [
        ("deny", {"mcp:tools"}, Deny),
        (["extra"], {"mcp:tools"}, InsufficientScope),
        (["extra"], {"extra"}, Allow),
    ],
    ids=["default-deny", "default-scopes-missing", "default-scopes-present"],
)
def test_default_rule(default: object, granted: set[str], kind: type) -> None:
    decision = policy(default=default).decide(frozenset(granted), "tools/call", "unlisted")
    assert isinstance(decision, kind)


def test_visibility_follows_decisions() -> None:
    route = policy()
    granted = frozenset({"files:write"})
    visible = [
        name
        for name in ("read_file", "write_file", "delete_all", "drop_database", "unlisted")
        if route.visible("tools", name, granted)
    ]
    assert visible == ["read_file", "write_file"]


def test_implication_cycles_are_refused() -> None:
    with pytest.raises(ScopeCycleError) as caught:
        ScopeImplications({"a": ["b"], "b": ["c"], "c": ["a"]})
    assert caught.value.cycle == ["a", "b", "c", "a"]
