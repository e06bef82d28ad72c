"""Rate limits and concurrency caps, compiled: which rules a request's calls fall under, whose
counter each one counts against, and how a refusal reads. Pure: no aiohttp, no I/O; the
counters themselves live in a `Limiter` (`gateway.store.memory_limits`, `.redis_limits`).

A rule matches a call by name (exact or pattern, `gateway.policy.patterns`) in its kind, or every
JSON-RPC request of the route when it names none. Notifications and a client's responses are
never counted (a client must always be able to cancel), nor GET streams and DELETEs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.config.limits import LimitFallback, LimitKey, LimitRule
from gateway.config.problems import YamlPath
from gateway.config.upstreams import Upstream
from gateway.policy.decision import NAMED_METHODS, Kind
from gateway.policy.patterns import Pattern, is_pattern

LimitKind = Literal["rate", "concurrency"]


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: `calls` per `window` seconds, `burst` at most at once."""

    calls: int
    window: float
    burst: int

    @property
    def per_second(self) -> float:
        return self.calls / self.window


class _Names:
    """Names of one kind a rule counts: exact ones, then patterns."""

    def __init__(self, names: Sequence[str]) -> None:
        self.texts = tuple(names)
        self._exact = frozenset(n for n in names if not is_pattern(n))
        self._patterns = tuple(Pattern(n) for n in names if is_pattern(n))

    def matches(self, name: str) -> bool:
        return name in self._exact or any(p.matches(name) for p in self._patterns)


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One compiled limit of a route."""

    route: str
    label: str
    """The rule's `name`, or its index in the list: bounded, for metric labels and logs."""
    by: LimitKey
    names: dict[Kind, _Names]
    """Empty: the rule counts every JSON-RPC request of the route."""
    bucket: Bucket | None
    concurrency: int | None

    def matches(self, method: str, name: str | None) -> bool:
        if not self.names:
            return True
        kind = NAMED_METHODS.get(method)
        names = self.names.get(kind) if kind is not None else None
        return names is not None and name is not None and names.matches(name)

    def scope(self) -> str:
        """What it counts, in words: "tools matching 'write_*'", "all calls"."""
        if not self.names:
            return "all calls"
        parts = []
        for kind, names in self.names.items():
            quoted = ", ".join(repr(text) for text in names.texts)
            verb = "matching" if any(is_pattern(t) for t in names.texts) else "named"
            parts.append(f"{kind} {verb} {quoted}")
        return " and ".join(parts)

    def describe(self, kind: LimitKind) -> str:
        """The refusal message (written from the config, never from the request)."""
        named = f" {self.label!r}" if not self.label.isdigit() else ""
        who = "" if self.by == "principal" else f" per {self.by.replace('_', ' ')}"
        if kind == "concurrency":
            return f"Concurrency limit{named} for {self.scope()}: {self.concurrency} in flight{who}"
        assert self.bucket is not None
        return f"Rate limit{named} for {self.scope()}: {_rate_text(self.bucket)}{who}"

    def summary(self) -> str:
        """For `explain`: the rule's label, what it counts and its limits."""
        limits = [_rate_text(self.bucket)] if self.bucket is not None else []
        if self.bucket is not None and self.bucket.burst != self.bucket.calls:
            limits[0] += f" (burst {self.bucket.burst})"
        if self.concurrency is not None:
            limits.append(f"{self.concurrency} in flight")
        return f"[{self.label}] {self.scope()}: {', '.join(limits)}, by {self.by}"


def _rate_text(bucket: Bucket) -> str:
    units = {1.0: "second", 60.0: "minute", 3600.0: "hour"}
    per = units.get(bucket.window) or f"{bucket.window:g} seconds"
    return f"{bucket.calls} per {per}"


def compile_rule(route: str, index: int, rule: LimitRule) -> Rule:
    names: dict[Kind, _Names] = {}
    for kind in ("tools", "resources", "prompts"):
        listed = getattr(rule, kind)
        if listed is not None:
            names[kind] = _Names(listed)
    bucket = None
    if rule.rate is not None:
        bucket = Bucket(rule.rate, rule.window(), rule.burst or rule.rate)
    label = rule.name if rule.name is not None else str(index)
    return Rule(route, label, rule.by, names, bucket, rule.concurrency)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the keys need it (no token: at most its fingerprint)."""

    issuer: str | None
    subject: str | None
    client_id: str | None
    fingerprint: str | None
    address: str | None


def caller_key(by: LimitKey, caller: Caller) -> str:
    """The caller's counter name for a rule keyed `by`: a digest, so no store key or log line
    holds an identity or token fingerprint. `client_id` without a client id in the token counts
    by principal; `principal` without a subject counts by client id, then by the token."""
    if by == "client_address":
        material = f"address\0{caller.address or ''}"
    elif by == "client_id" and caller.client_id is not None:
        material = f"client\0{caller.issuer}\0{caller.client_id}"
    elif caller.subject is not None:
        material = f"subject\0{caller.issuer}\0{caller.subject}"
    elif caller.client_id is not None:
        material = f"client\0{caller.issuer}\0{caller.client_id}"
    else:
        material = f"token\0{caller.issuer}\0{caller.fingerprint}"
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Check:
    """One rule applied to one request: the counter, and how many calls the request adds."""

    rule: Rule
    key: str
    """`limit:<route>:<label>:<caller digest>`: the counter's name in the store."""
    cost: int


class RouteLimits:
    """A route's compiled limits and what applies when the store is down."""

    def __init__(self, rules: Sequence[Rule], fallback: LimitFallback) -> None:
        self.rules = tuple(rules)
        self.fallback = fallback

    def applying(self, method: str, name: str | None) -> list[Rule]:
        """The rules that count one call (for `explain`)."""
        return [rule for rule in self.rules if rule.matches(method, name)]

    def checks(self, calls: Iterable[tuple[str, str | None]], caller: Caller) -> list[Check]:
        """What the requests among a POST's calls ((method, name) each) count against."""
        costs: dict[Rule, int] = {}
        for method, name in calls:
            for rule in self.rules:
                if rule.matches(method, name):
                    costs[rule] = costs.get(rule, 0) + 1
        return [
            Check(rule, f"limit:{rule.route}:{rule.label}:{caller_key(rule.by, caller)}", cost)
            for rule, cost in costs.items()
        ]


def compile_limits(
    route: str, rules: Sequence[LimitRule], fallback: LimitFallback
) -> RouteLimits | None:
    """None for a route without limits (it gets no limit step at all)."""
    if not rules:
        return None
    return RouteLimits([compile_rule(route, i, rule) for i, rule in enumerate(rules)], fallback)


@dataclass(frozen=True, slots=True)
class Admitted:
    """Within every limit; `release` gives back the concurrency slots taken (None: none)."""

    release: Callable[[], Awaitable[None]] | None = None
    fallback: LimitFallback | None = None
    """`local` when the store was down and this replica's counters decided."""


@dataclass(frozen=True, slots=True)
class Limited:
    """Over `rule`'s limit; `retry_after`: whole seconds until it would admit the call."""

    rule: Rule
    kind: LimitKind
    retry_after: int
    fallback: LimitFallback | None = None


Admission = Admitted | Limited


class Limiter(Protocol):
    async def admit(
        self, checks: Sequence[Check], call_id: str, fallback: LimitFallback = "refuse"
    ) -> Admission:
        """Count the request against every check, all or nothing: either each bucket gives
        `cost` tokens and each cap takes `cost` slots, or nothing changes and the first rule
        over its limit is named. `fallback`: what applies if a shared store is down (a 503,
        `StoreUnavailableError`, for `refuse`)."""


def seconds_until(missing: float, per_second: float) -> int:
    """Whole seconds (at least 1) until `missing` tokens have refilled: `Retry-After`."""
    return max(1, math.ceil(missing / per_second))


def limit_problems(upstream: Upstream) -> list[tuple[YamlPath, str]]:
    """What the models cannot see alone: two rules with one label (metrics and logs could not
    tell them apart), and limits on a route without authentication (no policy step runs)."""
    rules = upstream.policy.limits
    found: list[tuple[YamlPath, str]] = []
    if rules and upstream.allow_anonymous:
        found.append((("policy", "limits"), "limits count authenticated callers: not with "
                      "allow_anonymous"))  # fmt: skip
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        label = rule.name if rule.name is not None else str(index)
        if label in seen:
            found.append((("policy", "limits", index, "name"), f"{label!r} names two limits"))
        seen.add(label)
    return found
