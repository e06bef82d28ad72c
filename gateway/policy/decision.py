"""The authorization decision: (caller's scopes, MCP call) -> allow | insufficient scope | deny.

Pure: no aiohttp, no I/O. `tools/call`, `prompts/get` and `resources/read|subscribe|unsubscribe`
are decided by the called name against the route's rules (exact name, then the most specific
pattern, then the default); every other MCP method, a client's response (no method) and a GET or
DELETE on the session need the route's baseline scopes. A method MCP does not define is decided
by its `methods` entry if it has one, else by the default: an upstream may give it any meaning.
A look-alike of a listed or MCP method (another case, spaces, control characters) is denied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gateway.mcp_methods import MCP_METHODS, MethodSet
from gateway.policy.patterns import Pattern, is_pattern
from gateway.policy.redaction import NO_RULES, Redaction
from gateway.policy.scopes import ScopeImplications
from gateway.policy.visibility import (
    Attainable,
    Ceilings,
    Held,
    Hidden,
    Listing,
    ListVisibility,
)

if TYPE_CHECKING:  # compiled into a policy by `gateway.policy.compiled`; it imports this module
    from gateway.policy.limits import RouteLimits

Kind = Literal["tools", "resources", "prompts"]
NAMED_METHODS: Mapping[str, Kind] = {
    "tools/call": "tools",
    "prompts/get": "prompts",
    "resources/read": "resources",
    "resources/subscribe": "resources",
    "resources/unsubscribe": "resources",
}
LIST_KINDS: Mapping[str, Kind] = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resources",
    "prompts/list": "prompts",
}
DENY = "deny"
Requirement = Sequence[str] | Literal["deny"]


@dataclass(frozen=True, slots=True)
class Allow:
    rule: str
    required: frozenset[str] = frozenset()
    """The scopes the rule asks for (all present, possibly through implication)."""


@dataclass(frozen=True, slots=True)
class InsufficientScope:
    required: frozenset[str]
    """Every scope the operation needs (all of them, for one step-up challenge)."""
    rule: str


@dataclass(frozen=True, slots=True)
class Deny:
    rule: str


Decision = Allow | InsufficientScope | Deny


@dataclass(frozen=True, slots=True)
class Rule:
    scopes: frozenset[str] | None  # None: denied whatever the scopes
    source: str


def _rule(requirement: Requirement, source: str) -> Rule:
    return Rule(None if requirement == DENY else frozenset(requirement), source)


class _RuleTable:
    def __init__(self, kind: Kind, rules: Mapping[str, Requirement], default: Rule) -> None:
        self._exact: dict[str, Rule] = {}
        patterns: list[tuple[Pattern, Rule]] = []
        self.entries: list[tuple[str, Rule]] = []
        """Every configured name or pattern with its rule, in configuration order."""
        for name, requirement in rules.items():
            rule = _rule(requirement, f"{kind}[{name!r}]")
            self.entries.append((name, rule))
            if is_pattern(name):
                patterns.append((Pattern(name), rule))
            else:
                self._exact[name] = rule
        self._patterns = sorted(patterns, key=lambda item: -item[0].specificity)
        self._default = default

    def lookup(self, name: str) -> Rule:
        rule = self._exact.get(name)
        if rule is not None:
            return rule
        for pattern, rule in self._patterns:
            if pattern.matches(name):
                return rule
        return self._default


class RoutePolicy:
    """One route's compiled rules."""

    def __init__(
        self,
        *,
        baseline: Sequence[str],
        default: Requirement | None,
        tools: Mapping[str, Requirement],
        resources: Mapping[str, Requirement],
        prompts: Mapping[str, Requirement],
        implications: ScopeImplications,
        list_visibility: ListVisibility = "attainable",
        ceilings: Ceilings | None = None,
        methods: Mapping[str, Requirement] | None = None,
        redaction: Redaction = NO_RULES,
    ) -> None:
        """`methods`: rules for JSON-RPC methods MCP does not define (MCP methods there are a
        configuration error, reported by `gateway.compiler`). `ceilings`: what callers could
        be granted (default: no limit)."""
        self.list_visibility = list_visibility
        self.redaction = redaction
        """What audit records keep of each call's arguments (`policy.audit`)."""
        self.ceilings = ceilings or Ceilings(None, None, implications)
        requirements = [baseline, *tools.values(), *resources.values(), *prompts.values()]
        requirements += [*(methods or {}).values(), default or ()]
        self.scopes_supported = frozenset(
            scope for scopes in requirements if scopes != DENY for scope in scopes
        )
        """Every scope this route's policy can require (what `deny` covers aside)."""
        self._baseline = Rule(frozenset(baseline), "baseline scopes")
        if default is None:
            default_rule = Rule(frozenset(baseline), "default (baseline scopes)")
        elif default == DENY:
            default_rule = Rule(None, "default: deny")
        else:
            default_rule = Rule(frozenset(default), "default")
        self._tables: dict[Kind, _RuleTable] = {
            "tools": _RuleTable("tools", tools, default_rule),
            "resources": _RuleTable("resources", resources, default_rule),
            "prompts": _RuleTable("prompts", prompts, default_rule),
        }
        self._default = default_rule
        self._methods = {
            method: _rule(requirement, f"methods[{method!r}]")
            for method, requirement in (methods or {}).items()
        }
        self._listed = MethodSet(self._methods)
        self._implications = implications
        self.limits: RouteLimits | None = None
        """The route's rate limits and concurrency caps (`policy.limits`), if any."""

    def rule_for(self, method: str | None, name: str | None) -> Rule:
        """The rule deciding `method` (None: no method, i.e. a client's response or an HTTP GET
        or DELETE on the session) on `name` (None for unnamed methods)."""
        if method is None:
            return self._baseline
        kind = NAMED_METHODS.get(method)
        if kind is not None and name is not None:
            return self._tables[kind].lookup(name)
        rule = self._methods.get(method)
        if rule is not None:
            return rule
        if method in MCP_METHODS:
            return self._baseline
        like = self._listed.variant_of(method) or MCP_METHODS.variant_of(method)
        if like is not None:
            return Rule(None, f"look-alike of {like!r}")
        return self._default

    def decide(self, granted: frozenset[str], method: str | None, name: str | None) -> Decision:
        """Decide one call (see `rule_for`). `granted` is the token's scopes, before
        implication."""
        rule = self.rule_for(method, name)
        if rule.scopes is None:
            return Deny(rule.source)
        if not rule.scopes:
            return Allow(rule.source)
        effective = self._implications.expand(granted)
        if rule.scopes <= effective:
            return Allow(rule.source, rule.scopes)
        return InsufficientScope(rule.scopes, rule.source)

    def unattainable(
        self, required: frozenset[str], granted: frozenset[str], ceiling: frozenset[str] | None
    ) -> frozenset[str]:
        """The `required` scopes a caller holding `granted` could not be granted (none when its
        `ceiling` is unknown)."""
        if ceiling is None:
            return frozenset()
        return required - self._implications.expand(ceiling | granted)

    def listing(
        self,
        kind: Kind,
        name: str,
        granted: frozenset[str],
        ceiling: frozenset[str] | None = None,
    ) -> Listing:
        """How a list shows this entry to a caller holding `granted` (before implication) who
        could be granted `ceiling` (None: anything), under `list_visibility`."""
        return self._listing_of(self._tables[kind].lookup(name), granted, ceiling)

    def named(
        self, kind: Kind, granted: frozenset[str], ceiling: frozenset[str] | None = None
    ) -> list[tuple[str, Listing]]:
        """`listing` for every name and pattern the policy lists under `kind` (for `explain`)."""
        return [
            (name, self._listing_of(rule, granted, ceiling))
            for name, rule in self._tables[kind].entries
        ]

    def _listing_of(
        self, rule: Rule, granted: frozenset[str], ceiling: frozenset[str] | None
    ) -> Listing:
        if rule.scopes is None:
            return Hidden(rule.source, "denied")
        if rule.scopes <= self._implications.expand(granted):
            return Held(rule.source)
        if self.list_visibility == "held":
            return Hidden(rule.source, "not_held")
        attainable = ceiling is None or rule.scopes <= self._implications.expand(ceiling | granted)
        if self.list_visibility == "attainable" and not attainable:
            return Hidden(rule.source, "not_attainable")
        return Attainable(rule.scopes, rule.source)
