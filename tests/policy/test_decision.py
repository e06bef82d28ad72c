"""The decision function, table-tested: (granted scopes, call) -> allow | insufficient | deny."""

from __future__ import annotations

import pytest

from gateway.policy.decision import Allow, Decision, Deny, InsufficientScope, RoutePolicy
from gateway.policy.scopes import ScopeCycleError, ScopeImplications
from gateway.policy.visibility import Attainable, Held

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


NAMES = ("read_file", "write_file", "delete_all", "drop_database", "unlisted")


def shown(route: RoutePolicy, granted: set[str], ceiling: set[str] | None) -> dict[str, object]:
    """Each tool of NAMES -> "held", the scopes it is annotated with, or why it is hidden."""
    seen: dict[str, object] = {}
    for name in NAMES:
        listing = route.listing(
            "tools", name, frozenset(granted), None if ceiling is None else frozenset(ceiling)
        )
        if isinstance(listing, Held):
            seen[name] = "held"
        elif isinstance(listing, Attainable):
            seen[name] = sorted(listing.required)
        else:
            seen[name] = listing.reason
    return seen


@pytest.mark.parametrize(
    ("visibility", "granted", "ceiling", "expected"),
    [
        ("held", {"mcp:tools", "files:write"}, None,
         {"read_file": "held", "write_file": "held", "delete_all": "not_held",
          "drop_database": "denied", "unlisted": "held"}),
        ("attainable", {"mcp:tools", "files:read"}, None,
         {"read_file": "held", "write_file": ["files:write"], "delete_all": ["files:admin"],
          "drop_database": "denied", "unlisted": "held"}),
        ("attainable", {"mcp:tools", "files:read"}, {"files:write"},
         {"read_file": "held", "write_file": ["files:write"], "delete_all": "not_attainable",
          "drop_database": "denied", "unlisted": "held"}),
        ("attainable", {"files:read"}, {"files:admin"},  # implied: admin gives write
         {"read_file": "held", "write_file": ["files:write"], "delete_all": ["files:admin"],
          "drop_database": "denied", "unlisted": "not_attainable"}),
        ("attainable", {"mcp:tools", "files:read"}, set(),
         {"read_file": "held", "write_file": "not_attainable", "delete_all": "not_attainable",
          "drop_database": "denied", "unlisted": "held"}),
        ("all", {"mcp:tools"}, set(),
         {"read_file": ["files:read"], "write_file": ["files:write"],
          "delete_all": ["files:admin"], "drop_database": "denied", "unlisted": "held"}),
    ],
    ids=["held", "attainable-unlimited", "attainable-ceiling", "attainable-implied",
         "attainable-nothing-more", "all-ignores-ceiling"],
)  # fmt: skip
def test_listing_by_visibility(
    visibility: str, granted: set[str], ceiling: set[str] | None, expected: dict[str, object]
) -> None:
    assert shown(policy(list_visibility=visibility), granted, ceiling) == expected


def test_scopes_supported_is_every_requirement_but_deny() -> None:
    route = policy(methods={"x/vendor": ["vendor:use"], "x/off": "deny"}, default=["extra"])
    assert route.scopes_supported == {
        "mcp:tools", "files:read", "files:write", "files:admin", "mcp:prompts", "vendor:use",
        "extra",
    }  # fmt: skip
    assert policy(default="deny").scopes_supported == {
        "mcp:tools", "files:read", "files:write", "files:admin", "mcp:prompts",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("ceiling", "expected"),
    [
        (None, set()),
        ({"files:write"}, set()),
        ({"files:read"}, {"files:write"}),
        (set(), {"files:write"}),
    ],
    ids=["unknown", "within", "below", "none"],
)
def test_unattainable(ceiling: set[str] | None, expected: set[str]) -> None:
    required = frozenset({"files:write"})
    held = frozenset({"files:read"})
    limit = None if ceiling is None else frozenset(ceiling)
    assert policy().unattainable(required, held, limit) == expected


def test_implication_cycles_are_refused() -> None:
    with pytest.raises(ScopeCycleError) as caught:
        ScopeImplications({"a": ["b"], "b": ["c"], "c": ["a"]})
    assert caught.value.cycle == ["a", "b", "c", "a"]


METHOD_CASES = [
    # (id, default, granted, method, expected kind, required, rule)
    ("mcp-method-baseline", "deny", {"mcp:tools"}, "tools/list", "allow", None, "baseline scopes"),
    ("notification-baseline", "deny", {"mcp:tools"}, "notifications/initialized", "allow", None,
     "baseline scopes"),
    ("no-method-baseline", "deny", {"mcp:tools"}, None, "allow", None, "baseline scopes"),
    ("no-method-baseline-missing", "deny", set(), None, "insufficient", {"mcp:tools"},
     "baseline scopes"),
    ("unknown-default-deny", "deny", {"mcp:tools"}, "x/other", "deny", None, "default: deny"),
    ("unknown-default-scopes", ["extra"], {"mcp:tools"}, "x/other", "insufficient", {"extra"},
     "default"),
    ("unknown-default-unset", None, {"mcp:tools"}, "x/other", "allow", None,
     "default (baseline scopes)"),
    ("empty-method", "deny", {"mcp:tools"}, "", "deny", None, "default: deny"),
    ("http-verb-spelled-as-method", "deny", {"mcp:tools"}, "GET", "deny", None, "default: deny"),
    ("response-label-as-method", "deny", {"mcp:tools"}, "(response)", "deny", None,
     "default: deny"),
    ("listed-missing", "deny", {"mcp:tools"}, "x/vendor", "insufficient", {"vendor:use"},
     "methods['x/vendor']"),
    ("listed-present", "deny", {"vendor:use"}, "x/vendor", "allow", None, "methods['x/vendor']"),
    ("listed-deny", None, {"mcp:tools"}, "x/off", "deny", None, "methods['x/off']"),
    ("listed-open", "deny", set(), "x/open", "allow", None, "methods['x/open']"),
    ("mcp-case-variant", None, {"mcp:tools"}, "Tools/Call", "deny", None,
     "look-alike of 'tools/call'"),
    ("mcp-trailing-space", None, {"mcp:tools"}, "tools/list ", "deny", None,
     "look-alike of 'tools/list'"),
    ("mcp-nul", None, {"mcp:tools"}, "tools/call\x00", "deny", None, "look-alike of 'tools/call'"),
    ("mcp-zero-width", None, {"mcp:tools"}, "\u200binitialize", "deny", None,
     "look-alike of 'initialize'"),
    ("listed-case-variant", None, {"vendor:use", "mcp:tools"}, "X/Vendor", "deny", None,
     "look-alike of 'x/vendor'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("default", "granted", "method", "kind", "required", "rule"),
    [case[1:] for case in METHOD_CASES],
    ids=[case[0] for case in METHOD_CASES],
)
def test_methods(
    default: object,
    granted: set[str],
    method: str | None,
    kind: str,
    required: set[str] | None,
    rule: str,
) -> None:
    """MCP methods need the baseline; any other method its `methods` rule or the default."""
    route = policy(
        default=default,
        methods={"x/vendor": ["vendor:use"], "x/off": "deny", "x/open": []},
    )
    decision = route.decide(frozenset(granted), method, None)
    expected_required = frozenset(required) if required is not None else None
    assert outcome(decision) == (kind, expected_required, rule)


def test_named_methods_ignore_the_methods_table() -> None:
    route = policy(default="deny", methods={"x/vendor": []})
    decision = route.decide(frozenset({"files:read"}), "tools/call", "read_file")
    assert outcome(decision) == ("allow", None, "tools['read_file']")
